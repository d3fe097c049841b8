"""Stage 1: the features of every source and split, from their entries or extracted.

``extract_all(requests, workdir, ...)`` takes one ``Request`` per (split, source) — the
stage's params, key and recorded inputs from ``platonic_jax.plan`` — and returns a
``Split`` per split. Entries already finished cost nothing: their encoders are never
loaded.

- Synthetic sources are drawn from the world (``data.synthetic.make_world``), once for
  every missing entry, and saved whole.
- Encoder sources make one pass per split over the TFDS data: grain decodes each image
  once (worker processes) and the batch goes through every pending image encoder; the
  chosen caption (and, on the test split or with ``positives="all_captions"``, every
  caption) through every pending text encoder. The pass is saved in chunks of ``chunk_size`` rows, so a killed run resumes at
  the first unfinished chunk.

Multi-host: every process extracts (each needs the arrays it evaluates on) and only
process 0 writes (``write=False`` elsewhere).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Callable, Mapping

import numpy as np

from platonic_jax import errors, prefetch
from platonic_jax.features import params as params_lib
from platonic_jax.features.params import FeatureParams, Split, WorldExtrasParams
from platonic_jax.features.store import Entry

FEATURES = "features"      # an entry's array of the source's rows
CAPTIONS = "captions"      # text entries, test split: every caption's features
CAPTION_IMAGE = "caption_image"


@dataclasses.dataclass(frozen=True)
class Request:
  """One entry to produce: ``name`` is its name in the Split ("image", "ref", ...);
  ``field`` the config field that chose its encoder (named in errors)."""
  name: str
  key: str
  inputs: dict
  params: FeatureParams | WorldExtrasParams
  field: str = ""


def extract_all(requests: Mapping[str, Mapping[str, Request]], workdir: str, *,
                chunk_size: int = 4096, batch_size: int = 64, num_workers: int = 0,
                data_dir: str = "", write: bool = True,
                log: Callable[[str], None] | None = None) -> dict[str, Split]:
  """``{split: Split}`` for ``requests`` = {split: {name: Request}}."""
  log = log or logging.info
  out = {}
  encoders: dict = {}  # shared by the splits: each checkpoint loads once, on first use
  for split, reqs in requests.items():
    entries = {name: Entry(workdir, r.key, r.inputs, write=write) for name, r in reqs.items()}
    arrays = {name: e.load() for name, e in entries.items() if e.done()}
    for name in arrays:
      log(f"features {split}/{name}: done ({entries[name].root})")
    pending = {n: r for n, r in reqs.items() if n not in arrays}
    synth = {n: r for n, r in pending.items() if _is_synthetic(r.params)}
    if synth:
      arrays.update(_synthetic(synth, {n: entries[n] for n in synth}, split, log))
    enc = {n: r for n, r in pending.items() if n not in synth}
    if enc:
      arrays.update(_encoded(enc, {n: entries[n] for n in enc}, split, encoders, log,
                             chunk_size=chunk_size, batch_size=batch_size,
                             num_workers=num_workers, data_dir=data_dir or
                             os.path.join(workdir, "tfds")))
    out[split] = _as_split(reqs, arrays)
  return out


def split_sizes(requests: Mapping[str, Mapping[str, Request]], data_dir: str, *,
                workdir: str | None = None) -> dict[str, int]:
  """Rows of each split, known before any encoder runs: from the world's parameters, a
  finished entry's manifest, or the TFDS source (prepared here if it is not yet)."""
  out = {}
  for split, reqs in requests.items():
    p = next(iter(reqs.values())).params
    data = p.world if isinstance(p, WorldExtrasParams) else p.data
    if not isinstance(data, params_lib.TfdsSource):
      out[split] = data.size(split)
      continue
    done = [Entry(workdir, r.key, r.inputs) for r in reqs.values()] if workdir else []
    m = next((e.manifest() for e in done if e.done()), None)
    out[split] = (m["arrays"][FEATURES]["shape"][0] if m else
                  len(open_source(data, split, data_dir)))
  return out


def _is_synthetic(p) -> bool:
  return isinstance(p, WorldExtrasParams) or p.encoder is None


def _as_split(reqs: Mapping[str, Request], arrays: Mapping[str, dict]) -> Split:
  s = Split(views={})
  for name, r in reqs.items():
    a = arrays[name]
    if isinstance(r.params, WorldExtrasParams):
      s.labels, s.z = a["labels"], a["z"]
      continue
    s.views[name] = a[FEATURES]
    if CAPTIONS in a:
      s.captions[name] = a[CAPTIONS]
      s.caption_image = a[CAPTION_IMAGE]
  return s


def _synthetic(reqs, entries, split, log) -> dict[str, dict]:
  from platonic_jax.data import synthetic  # noqa: PLC0415
  worlds: dict = {}
  out = {}
  for name, r in reqs.items():
    p = r.params
    world = p.world if isinstance(p, WorldExtrasParams) else p.data
    if world not in worlds:
      worlds[world] = synthetic.make_world(world)[split]
    arrays = worlds[world]
    out[name] = ({"labels": arrays["labels"], "z": arrays["z"]}
                 if isinstance(p, WorldExtrasParams) else {FEATURES: arrays[p.view]})
    entries[name].save(out[name])
    log(f"features {split}/{name}: drawn from the synthetic world ({entries[name].root})")
  return out


# ---------------------------------------------------------------------------------------
# Encoders over TFDS data.


def load_encoders(reqs: Mapping[str, Request], cache: dict) -> dict:
  """``{encoder params: Encoder}`` for the requests; every one that fails is listed in
  one error, each with the config field to set."""
  from platonic_jax import encoders  # noqa: PLC0415 - jax / flax only when encoding
  failed = []
  for r in reqs.values():
    e = r.params.encoder
    spec = (e.encoder, e.dtype, e.max_length)
    if spec in cache:
      continue
    try:
      enc = encoders.load(e.encoder, dtype=e.dtype, max_length=e.max_length or 77)
    except (ValueError, OSError) as err:  # hub, files, conversion: all user-fixable
      failed.append(f"  --config.{r.field}={e.encoder!r}: {err}")
      continue
    if enc.modality != e.input:
      failed.append(f"  --config.{r.field}={e.encoder!r} is a {enc.modality} encoder but is "
                    f"configured for {e.input!r} inputs")
      continue
    cache[spec] = enc
  if failed:
    raise errors.InputError(
        f"{len(failed)} encoder(s) could not be loaded:\n" + "\n".join(failed) +
        "\nFix: set each field above to a local checkpoint directory (config.json + "
        "model.safetensors + processor / tokenizer files), or make the hub reachable.")
  return {r.params.encoder: cache[(r.params.encoder.encoder, r.params.encoder.dtype,
                                   r.params.encoder.max_length)] for r in reqs.values()}


class _Rows:
  """Records ``start, start + 1, ...`` of a random-access source (picklable for grain)."""

  def __init__(self, source, start: int):
    self.source, self.start = source, int(start)

  def __len__(self):
    return len(self.source) - self.start

  def __getitem__(self, i):
    return self.source[self.start + int(i)]


def open_source(data: params_lib.TfdsSource, split: str, data_dir: str):
  """The TFDS data source of ``split`` (prepared on first use)."""
  from platonic_jax import data as data_lib  # noqa: PLC0415 - TFDS only for real data
  return data_lib.open_source(data, split, data_dir=data_dir)


def _encoded(reqs, entries, split, cache, log, *, chunk_size, batch_size, num_workers,
             data_dir) -> dict[str, dict]:
  from platonic_jax.data import loader as loader_lib  # noqa: PLC0415
  first = next(iter(reqs.values())).params
  source = open_source(first.data, split, data_dir)
  n = len(source)
  num = max(1, -(-n // chunk_size))
  start = min(e.finished_chunks(chunk_size, num) for e in entries.values())
  if start:
    log(f"features {split}: resuming at chunk {start}/{num}")
  encs = load_encoders(reqs, cache)

  def encode(r, items):
    e = r.params.encoder
    return encs[e].encode(items, batch_size=batch_size, layers=e.layer, pool=e.pool)

  def encode_batch(batch, offset):
    keep = batch["mask"]
    images = list(batch["image"][keep])
    out = {}
    for name, r in reqs.items():
      if r.params.encoder.input == "image":
        out[name] = {FEATURES: encode(r, images)}
        continue
      arrays = {FEATURES: encode(r, [str(c) for c in batch["caption"][keep]])}
      every = split == "test" or r.params.positives == "all_captions"
      if every and "captions" in batch:
        caps = [list(c) for c in batch["captions"][keep]]
        arrays[CAPTIONS] = encode(r, [c for cs in caps for c in cs])
        rows = np.asarray(batch["index"][keep]) + offset
        arrays[CAPTION_IMAGE] = np.repeat(rows, [len(c) for c in caps])
      out[name] = arrays
    return out

  # Loader batches tile every chunk exactly (a divisor of the chunk size), so a chunk is
  # a whole number of batches and decoded images never pile up beyond one batch.
  lb = math.gcd(chunk_size, batch_size)
  it = iter(loader_lib.make_loader(_Rows(source, start * chunk_size), batch_size=lb,
                                   preprocess=None, worker_count=num_workers,
                                   shard_index=0, shard_count=1))
  # Decoding in this process (num_workers=0): the next loader batches are decoded in a
  # thread while the encoders compute this one (with workers, they decode in parallel).
  batches = prefetch.ahead(it, 2) if num_workers == 0 else it
  try:
    for i in range(start, num):
      rows = min(chunk_size, n - i * chunk_size)
      parts = [encode_batch(next(batches), start * chunk_size)
               for _ in range(-(-rows // lb))]
      for name, e in entries.items():
        if not e.has_chunk(chunk_size, i):
          e.save_chunk(chunk_size, i, {k: np.concatenate([p[name][k] for p in parts], axis=0)
                                       for k in parts[0][name]})
      log(f"features {split}: chunk {i + 1}/{num}")
  finally:
    if batches is not it:
      batches.close()   # stops the decoding thread first
    close = getattr(it, "close", None)
    if close is not None:
      close()
  return {name: e.finalise(chunk_size, num) for name, e in entries.items()}
