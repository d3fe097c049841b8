"""The sweep's features: one stored entry per model, every layer, extracted one model at
a time (``features.store.Entry``: checksummed, chunk-resumable, atomic).

What is stored, as the release's ``extract_features.py`` computes it (our Flax encoders,
docs/encoders.md):

    feats       [N, L, D] float32   vision: the class token after each block (L = depth);
                                    language: the masked mean of every hidden state
                                    (L = layers + 1, the embedding first)
    num_params  [1] int64           the checkpoint's parameter count
    bpb, loss   [N] float32         language models: bits per UTF-8 byte and next-token
                                    loss (nats per predicted token) of each caption

Models are loaded, run over the pairs in chunks of ``chunk_size`` rows (each chunk saved
as it finishes) and freed before the next model loads, so the devices hold one model at
a time. ``model_parallel`` = 0 shards a model over the fewest devices whose memory holds
its weights (``choose_model_parallel``); on CPUs (no memory limit reported) it is 1.

A model that cannot be loaded (a hub miss, an unsupported architecture, a wrong
directory) is skipped and reported at the end with the fix, after every other model's
features are saved: one bad model never costs the others' work.
"""

from __future__ import annotations

import gc
import logging
import math
from typing import Callable

import numpy as np

from platonic_jax import errors
from platonic_jax.features.store import Entry
from platonic_jax.prh import models as models_lib
from platonic_jax.prh import plan as plan_lib
from platonic_jax.prh.preempt import Stop

MEMORY_FRACTION = 0.5  # of a device's memory the weights may take (the rest: activations)


def choose_model_parallel(weight_bytes: int, device_bytes: int | None, num_devices: int) -> int:
  """The fewest devices (a divisor of ``num_devices``) whose memory holds the weights at
  ``MEMORY_FRACTION``; 1 when the devices report no limit (CPU); all of them when even
  that is not enough (the load then fails with the device's out-of-memory error)."""
  if not device_bytes:
    return 1
  for d in range(1, num_devices + 1):
    if num_devices % d == 0 and weight_bytes / d <= MEMORY_FRACTION * device_bytes:
      return d
  return num_devices


def _device_bytes() -> int | None:
  import jax  # noqa: PLC0415
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def checkpoint_numel(path: str) -> int | None:
  """Parameters of a checkpoint directory, from its safetensors headers (no tensor read);
  None for pickled ``pytorch_model.bin`` checkpoints."""
  from platonic_jax.encoders import lazy  # noqa: PLC0415
  files = lazy.safetensors_files(path)
  if files is None:
    return None
  return sum(int(np.prod(t.shape)) for t in lazy.open_safetensors(files).values())


def _load(model: plan_lib.Model, p: plan_lib.ExtractParams, model_parallel: int):
  """(encoder, parameter count) of one model on this host's devices."""
  import jax  # noqa: PLC0415
  from platonic_jax import encoders  # noqa: PLC0415 - jax / flax only when extracting
  name = models_lib.load_id(p.model, model.modality)
  path = encoders.resolve(name)
  numel = checkpoint_numel(path)
  mp = model_parallel
  if mp == 0:
    itemsize = 2 if p.dtype == "bfloat16" else 4
    mp = choose_model_parallel((numel or 0) * itemsize, _device_bytes(), jax.local_device_count())
  enc = encoders.load(path, dtype=p.dtype, max_length=p.max_length or 77, model_parallel=mp)
  want = "image" if model.modality == models_lib.VISION else "text"
  if enc.modality != want:
    raise ValueError(f"it is a{'n' if enc.modality == 'image' else ''} {enc.modality} encoder, "
                     f"listed among the {model.modality} models")
  if numel is None:
    numel = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(enc.params))
  logging.info("loaded %s (%s parameters, %d feature layers, model_parallel=%d)", model.name,
               f"{numel:,}", enc.num_layers, mp)
  return enc, numel


def _free(enc) -> None:
  """Drops the encoder's device buffers now, not whenever the collector runs."""
  import jax  # noqa: PLC0415
  for x in jax.tree.leaves(enc.params):
    if isinstance(x, jax.Array) and not x.is_deleted():
      x.delete()
  del enc
  gc.collect()


def _token_counts(enc, texts) -> np.ndarray:
  from platonic_jax.encoders import tokenize  # noqa: PLC0415
  _, mask, _ = tokenize.tokenize(enc.tokenizer, texts, enc.max_length)
  return mask.sum(1)


def _chunk_arrays(enc, model: plan_lib.Model, rows, batch_size: int) -> dict[str, np.ndarray]:
  if model.modality == models_lib.VISION:
    feats = enc.encode(rows, batch_size=batch_size, layers="all")  # [L, n, D]
    return {"feats": np.ascontiguousarray(np.moveaxis(np.asarray(feats), 0, 1))}
  feats, bpb = enc.encode(rows, batch_size=batch_size, layers="all", bits_per_byte=True)
  # The release's loss: nats summed over the predicted tokens / their count (T - 1).
  from platonic_jax.encoders import lm_scores  # noqa: PLC0415
  nats = bpb.astype(np.float64) * lm_scores.utf8_bytes(rows) / lm_scores.LOG2_E
  loss = nats / np.maximum(_token_counts(enc, rows) - 1, 1)
  return {"feats": np.ascontiguousarray(np.moveaxis(np.asarray(feats), 0, 1)),
          "bpb": bpb.astype(np.float32), "loss": loss.astype(np.float32)}


def check_chunk(model: plan_lib.Model, p: plan_lib.ExtractParams, arrays: dict, first_row: int
                ) -> None:
  """A chunk's features [n, L, D] (and bits per byte) finite before it is saved, else a
  ValueError naming the model, the layer and the fix (a half-precision overflow is the
  usual cause): a NaN never reaches the store, so the fixed re-run extracts it again."""
  feats = arrays["feats"]
  bad = ~np.isfinite(feats)
  if bad.any():
    row, layer, _ = (int(v) for v in np.argwhere(bad)[0])
    fix = (f"set --config.features.{model.modality}_dtype=float32 (it ran in {p.dtype})"
           if p.dtype != "float32" else "check the checkpoint (its weights may hold NaN)")
    raise ValueError(f"layer {layer} of its features has {int(bad[:, layer].sum())} NaN/Inf "
                     f"value(s) (first in row {first_row + row}); {fix}")
  for key in ("bpb", "loss"):
    if key in arrays and not np.isfinite(arrays[key]).all():
      raise ValueError(f"its {key} is NaN/Inf on some captions; set "
                       f"--config.features.{model.modality}_dtype=float32 or check the checkpoint")


def _extract_one(model, p, entry: Entry, items, knobs: plan_lib.Knobs, stop: Stop, log):
  n = len(items)
  cs = knobs.chunk_size
  num = max(1, math.ceil(n / cs))
  start = entry.finished_chunks(cs, num)
  if start:
    log(f"features {model.name}: resuming at chunk {start + 1}/{num}")
  enc, numel = _load(model, p, knobs.model_parallel)
  try:
    for i in range(start, num):
      arrays = _chunk_arrays(enc, model, items[i * cs:(i + 1) * cs], knobs.batch_size)
      check_chunk(model, p, arrays, i * cs)
      entry.save_chunk(cs, i, arrays)
      log(f"features {model.name}: chunk {i + 1}/{num}")
      stop.check(f"after chunk {i + 1}/{num} of {model.name}")
    entry.finalise(cs, num, extra={"num_params": np.array([numel], np.int64)})
  finally:
    _free(enc)


def extract_missing(plan: plan_lib.Plan, workdir: str, pending: list[plan_lib.Model], *,
                    stop: Stop, load_pairs: Callable, log: Callable[[str], None] = logging.info
                    ) -> None:
  """Extracts the feature entries of ``pending`` models (ExtractParams stages), one model
  at a time. ``load_pairs()`` returns the ``prh.data.Pairs`` (called once, when the first
  model needs them). Raises one InputError naming every model that failed to load, after
  the others are done."""
  failed = []
  pairs = None
  for model in pending:
    stage = plan.stages[model.features]
    p = stage.params
    entry = Entry(workdir, plan.keys[model.features], plan.docs[model.features])
    if entry.done():
      continue
    if pairs is None:
      pairs = load_pairs()
    items = (pairs.images if model.modality == models_lib.VISION
             else pairs.texts(p.caption_idx))
    log(f"features {model.name}: extracting {len(items)} {model.modality} rows")
    try:
      _extract_one(model, p, entry, items, plan.knobs, stop, log)
    except (ValueError, OSError) as e:  # this model's: load, conversion, NaN features
      failed.append((model, e))
      log(f"features {model.name}: FAILED ({e}); continuing with the other models")
  if failed:
    lines = "\n".join(f"  {m.modality} model {m.name!r}: {str(e).splitlines()[0]}"
                      for m, e in failed)
    raise errors.InputError(
        f"{len(failed)} model(s) could not be extracted (the others' features are saved):\n"
        f"{lines}\nFix: give each a checkpoint the registry supports (hub id or directory "
        "with config.json + model.safetensors; docs/encoders.md lists the architectures), "
        "make the hub reachable, or drop it from models.language / models.vision; then "
        "re-run the same command (finished models are not recomputed).")
