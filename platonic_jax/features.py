"""The cache of frozen features: extracted once per encoder, layer and split, then reused.

Layout under ``<workdir>/features/<key>/`` (``key`` = a hash of the config fields that
determine the features, see ``feature_spec``)::

    manifest.json            {"version", "key", "config": spec, "arrays": {"test/image":
                              {"file", "shape", "dtype", "sha256"}, ...}}
    <split>/<name>.npy       one finished array per split and name ([N, D], [L, N, D] or [N])
    <split>/.chunks/<i>.npz  the finished chunks of an extraction still in progress

Guarantees:
- **Atomic writes**: every file is written to a temporary name in the same directory and
  ``os.replace``d into place, so a reader (or a re-run after a kill) sees either the old
  file or the complete new one, never a torn one.
- **A different config is never reused**: a different spec gives a different ``key``
  directory, and ``load`` also compares the manifest's stored spec with the requested one
  (a stale or hand-edited directory raises instead of being read).
- **Resume**: an extraction is a sequence of chunks (a chunk = all names of one batch of
  rows); each finished chunk is saved at once. A killed run restarts at the first
  unfinished chunk: the producer is asked for chunks from that index on.
- **Integrity**: the manifest stores each array's SHA-256; ``load`` verifies it, so a
  truncated or altered file is an error that names the file and the fix.

The cache is generic over a *chunk producer* ``producer(start) -> iterable of {name:
array}``, yielding chunks ``start, start+1, ...``. ``extract_all`` builds producers for the
synthetic world (rows of ``data.synthetic.make_world``) and for real encoders
(``encoders.load(...).encode`` over the data source's batches).

Multi-host: features are extracted by every process (each the whole split, so every host
has the arrays it evaluates on) but only process 0 writes (``write=False`` elsewhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from typing import Callable, Iterable, Mapping

import numpy as np

VERSION = 1
FEATURES_DIR = "features"
ChunkProducer = Callable[[int], Iterable[Mapping[str, np.ndarray]]]


class CacheError(RuntimeError):
  """A cache directory that cannot be used as it is (wrong config, corrupt file)."""


# ---------------------------------------------------------------------------------------
# Atomic files.


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` so a reader sees the old file or the new one, never a torn
  one (temporary file in the same directory, then ``os.replace``). Used by every stage."""
  d = os.path.dirname(path)
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path) + "-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
  return buf.getvalue()


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
  return buf.getvalue()


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------
# Keys.


def jsonable(x, *, nonfinite_to_none: bool = False, sort_keys: bool = True):
  """ConfigDict / tuples / numpy arrays and scalars -> plain JSON values.

  sort_keys: dict keys sorted (canonical, for hashing) or kept in insertion order
  (results whose order a reader sees). nonfinite_to_none: NaN / Inf become None (strict
  JSON has no NaN).
  """
  rec = lambda v: jsonable(v, nonfinite_to_none=nonfinite_to_none, sort_keys=sort_keys)
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, Mapping):
    items = sorted(x.items(), key=lambda kv: str(kv[0])) if sort_keys else x.items()
    return {str(k): rec(v) for k, v in items}
  if isinstance(x, (list, tuple)):
    return [rec(v) for v in x]
  if isinstance(x, np.ndarray):
    return rec(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if nonfinite_to_none and isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def spec_key(spec: Mapping) -> str:
  """16 hex digits of the SHA-256 of the canonical JSON of ``spec``."""
  blob = json.dumps(jsonable(spec), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def feature_spec(config) -> dict:
  """The config fields that determine the features (and nothing else).

  Training, adapter, loss and eval fields (except the chunk size, which fixes the chunk
  boundaries of a resumable extraction) are left out, so changing the learning rate
  reuses the features, while changing the data, an encoder, its layer or pooling, the
  dtype or the text length gives a new cache.
  """
  data = jsonable(config.data)
  # Loader parallelism and where TFDS keeps its files do not change the values.
  for k in ("num_workers", "data_dir"):
    data.pop(k, None)
  enc = jsonable(config.encoders)
  enc.pop("batch_size", None)  # batching does not change a frozen encoder's outputs
  return {"version": VERSION, "seed": int(config.seed), "data": data,
          "modalities": jsonable(config.modalities), "reference": jsonable(config.reference),
          "encoders": enc, "chunk_size": int(config.eval.feature_chunk_size)}


# ---------------------------------------------------------------------------------------
# The cache.


class FeatureCache:
  """Features of one spec under ``<workdir>/features/<key>/``.

  ``extract(split, producer, num_chunks)`` computes (or resumes, or skips) one split;
  ``load(split)`` returns ``{name: array}`` after checking the manifest.
  """

  def __init__(self, workdir: str, spec: Mapping, *, write: bool = True):
    self.spec = jsonable(spec)
    self.key = spec_key(self.spec)
    self.root = os.path.join(workdir, FEATURES_DIR, self.key)
    self.write = write
    self._manifest_path = os.path.join(self.root, "manifest.json")

  # -- manifest ---------------------------------------------------------------------------

  def manifest(self) -> dict:
    """The manifest on disk (a fresh one when there is none); checks it is ours."""
    if not os.path.exists(self._manifest_path):
      return {"version": VERSION, "key": self.key, "config": self.spec, "arrays": {},
              "splits": {}}
    with open(self._manifest_path) as f:
      m = json.load(f)
    if m.get("config") != self.spec or m.get("key") != self.key:
      raise CacheError(
          f"{self._manifest_path} was made by a different config than the one requested "
          "(the key matches but the stored config does not). Delete that directory to "
          "re-extract.")
    return m

  def _save_manifest(self, m: dict) -> None:
    if self.write:
      atomic_write_bytes(self._manifest_path,
                          json.dumps(m, indent=1, sort_keys=True).encode())

  def done(self, split: str) -> bool:
    """True when ``split`` was fully extracted (all its arrays are in the manifest)."""
    return split in self.manifest()["splits"]

  # -- extraction -------------------------------------------------------------------------

  def _chunk_path(self, split: str, i: int) -> str:
    return os.path.join(self.root, split, ".chunks", f"{i:06d}.npz")

  def finished_chunks(self, split: str, num_chunks: int) -> int:
    """How many leading chunks of ``split`` are already on disk (the resume point)."""
    i = 0
    while i < num_chunks and os.path.exists(self._chunk_path(split, i)):
      i += 1
    return i

  def extract(self, split: str, producer: ChunkProducer, num_chunks: int,
              *, log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Runs ``producer`` for the chunks of ``split`` not yet on disk, then finalises.

    Args:
      split: e.g. "train", "test".
      producer: ``producer(start)`` yields ``{name: array}`` for chunks ``start,
        start + 1, ..., num_chunks - 1`` in order; every chunk has the same names and
        concatenates along axis 0 (axis 1 for [L, N, D] layer stacks, marked by the name
        ending in "@layers").
      num_chunks: total number of chunks of this split (>= 1).

    Returns the finished ``{name: array}`` (loaded from the cache when already done).
    """
    log = log or logging.info
    if self.done(split):
      return self.load(split)
    if num_chunks < 1:
      raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    start = self.finished_chunks(split, num_chunks)
    if start:
      log(f"features {split}: resuming at chunk {start}/{num_chunks} ({self.root})")
    names, fresh, i = None, {}, start - 1
    for i, chunk in enumerate(producer(start), start):
      if i >= num_chunks:
        raise ValueError(f"producer yielded more than num_chunks={num_chunks} chunks")
      chunk = {k: np.asarray(v) for k, v in chunk.items()}
      if names is None:
        names = sorted(chunk)
      elif sorted(chunk) != names:
        raise ValueError(f"chunk {i} has names {sorted(chunk)}, earlier chunks {names}")
      for k, v in chunk.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
          raise ValueError(f"features {split}/{k}, chunk {i}: NaN or Inf from the encoder; "
                           "check its dtype (config.encoders.dtype) and inputs.")
      if self.write:
        atomic_write_bytes(self._chunk_path(split, i), _npz_bytes(chunk))
      else:
        fresh[i] = chunk
      log(f"features {split}: chunk {i + 1}/{num_chunks}")
    if i != num_chunks - 1:
      raise ValueError(f"producer for split {split!r} stopped after chunk {i + 1} of "
                       f"{num_chunks}")
    return self._finalise(split, num_chunks, fresh)

  def _read_chunk(self, split: str, i: int) -> dict[str, np.ndarray]:
    with np.load(self._chunk_path(split, i), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}

  def _finalise(self, split: str, num_chunks: int,
                fresh: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    chunks = [fresh[i] if i in fresh else self._read_chunk(split, i) for i in range(num_chunks)]
    out = {}
    for name in chunks[0]:
      axis = 1 if name.endswith("@layers") else 0
      out[name] = np.concatenate([c[name] for c in chunks], axis=axis)
    m = self.manifest()
    for name, arr in out.items():
      rel = os.path.join(split, f"{name}.npy")
      data = _npy_bytes(arr)
      if self.write:
        atomic_write_bytes(os.path.join(self.root, rel), data)
      m["arrays"][f"{split}/{name}"] = {"file": rel, "shape": list(arr.shape),
                                        "dtype": str(arr.dtype), "sha256": _sha256(data)}
    m["splits"][split] = sorted(out)
    self._save_manifest(m)  # the commit point: only now is the split "done"
    if self.write:
      for i in range(num_chunks):
        with contextlib.suppress(OSError):
          os.unlink(self._chunk_path(split, i))
      with contextlib.suppress(OSError):
        os.rmdir(os.path.join(self.root, split, ".chunks"))
    return out

  # -- reading ----------------------------------------------------------------------------

  def load(self, split: str, *, verify: bool = True) -> dict[str, np.ndarray]:
    """``{name: array}`` of a finished split; checks shape, dtype and SHA-256."""
    m = self.manifest()
    if split not in m["splits"]:
      raise CacheError(f"split {split!r} is not in the feature cache {self.root}; "
                       "run the extraction first.")
    out = {}
    for name in m["splits"][split]:
      entry = m["arrays"][f"{split}/{name}"]
      path = os.path.join(self.root, entry["file"])
      try:
        with open(path, "rb") as f:
          data = f.read()
      except FileNotFoundError:
        raise CacheError(f"{path} is listed in the manifest but missing; delete "
                         f"{self.root} to re-extract.") from None
      if verify and _sha256(data) != entry["sha256"]:
        raise CacheError(f"{path} does not match its checksum in the manifest (corrupt or "
                         f"modified); delete {self.root} to re-extract.")
      arr = np.load(io.BytesIO(data), allow_pickle=False)
      if list(arr.shape) != entry["shape"] or str(arr.dtype) != entry["dtype"]:
        raise CacheError(f"{path}: shape/dtype {arr.shape}/{arr.dtype} differ from the "
                         f"manifest's {entry['shape']}/{entry['dtype']}")
      out[name] = arr
    return out


# ---------------------------------------------------------------------------------------
# Producers.


def row_chunks(arrays: Mapping[str, np.ndarray], chunk_size: int) -> tuple[ChunkProducer, int]:
  """A producer over in-memory arrays (same leading N), ``chunk_size`` rows per chunk."""
  n = {k: v.shape[0] for k, v in arrays.items()}
  if len(set(n.values())) != 1:
    raise ValueError(f"arrays must share their number of rows, got {n}")
  total = next(iter(n.values()))
  num = max(1, -(-total // chunk_size))

  def producer(start):
    for i in range(start, num):
      yield {k: v[i * chunk_size:(i + 1) * chunk_size] for k, v in arrays.items()}

  return producer, num


def _synthetic_split_arrays(config) -> dict[str, dict[str, np.ndarray]]:
  """The synthetic world mapped to the cache's names: modalities, reference, labels, z."""
  from platonic_jax.data import synthetic
  world = synthetic.make_world(config.data.synthetic, int(config.seed))
  out = {}
  for split, arrays in world.items():
    names = {}
    for m in config.modalities:
      if m not in arrays:
        raise ValueError(f"config.modalities.{m}: the synthetic world has no modality {m!r} "
                         f"(it has {sorted(k for k in arrays if k not in ('labels', 'z'))})")
      names[m] = arrays[m]
    names[config.reference.name] = arrays["reference"]
    for extra in ("labels", "z"):
      if extra in arrays:
        names[extra] = arrays[extra]
    out[split] = names
  return out


def _check_synthetic_encoders(config) -> None:
  for m in config.modalities:
    if config.modalities[m].encoder:
      raise ValueError(f"config.modalities.{m}.encoder={config.modalities[m].encoder!r}: "
                       "the synthetic world has no raw inputs to encode; leave it \"\".")


def extract_all(config, workdir: str, *, log: Callable[[str], None] | None = None,
                producers: Mapping[str, tuple[ChunkProducer, int]] | None = None
                ) -> dict[str, dict[str, np.ndarray]]:
  """Stage 1: the features of every split, from the cache or extracted into it.

  Returns ``{"train": {name: array}, "test": {...}}`` with names = the modalities of
  ``config.modalities`` (e.g. "image", "text": [N, D] float32 of the configured layer),
  ``config.reference.name`` ([N, D_ref]), "labels" ([N] int32) when the data has classes,
  "z" ([N, d_z]) for the synthetic world (its true latents), and, on the test split of
  caption data, "<text modality>@captions" ([M, D]: every caption of every image) with
  "caption_image" ([M] int64: the row of the image each caption belongs to) for the
  five-captions retrieval protocol.

  ``producers`` overrides the per-split chunk producers (tests; custom data). Splits
  already in the cache cost nothing: their producers are never called.
  """
  import jax  # only for the process index (multi-host: process 0 writes)
  cache = FeatureCache(workdir, feature_spec(config), write=jax.process_index() == 0)
  if producers is None:
    producers = make_producers(config, workdir, cache)
  out = {}
  for split, (producer, num_chunks) in producers.items():
    out[split] = cache.extract(split, producer, num_chunks, log=log)
  return out


SPLITS = ("train", "test")


def make_producers(config, workdir: str, cache: FeatureCache | None = None
                   ) -> dict[str, tuple[ChunkProducer, int]]:
  """The chunk producers of ``config``'s data: synthetic rows, or encoders over batches."""
  chunk = int(config.eval.feature_chunk_size)
  if chunk < 1:
    raise ValueError(f"config.eval.feature_chunk_size={chunk} must be >= 1")
  if cache is not None and all(cache.done(s) for s in SPLITS):
    return {s: (lambda start: iter(()), 1) for s in SPLITS}
  if config.data.name == "synthetic":
    _check_synthetic_encoders(config)
    world = _synthetic_split_arrays(config)
    return {s: row_chunks(world[s], chunk) for s in SPLITS}
  encs: dict = {}  # shared by the splits: each checkpoint loads once, on first use
  return {s: _encoder_producer(config, workdir, s, chunk, encs) for s in SPLITS}


class _Rows:
  """Records ``start, start + 1, ...`` of a random-access source (picklable for grain)."""

  def __init__(self, source, start: int):
    self.source, self.start = source, int(start)

  def __len__(self):
    return len(self.source) - self.start

  def __getitem__(self, i):
    return self.source[self.start + int(i)]


def _encoders(config) -> dict[str, tuple[object, object]]:
  """name -> (Encoder, its config block) for every modality and the reference."""
  from platonic_jax import encoders
  blocks = {m: config.modalities[m] for m in config.modalities}
  blocks[config.reference.name] = config.reference
  out = {}
  for name, blk in blocks.items():
    if not blk.encoder:
      raise ValueError(f"{name}: no encoder configured (config.modalities.{name}.encoder or "
                       "config.reference.encoder); only the synthetic world has built-in "
                       "features.")
    enc = encoders.load(blk.encoder, dtype=config.encoders.dtype,
                        max_length=int(config.encoders.text_max_length))
    expected = blk.get("modality", name)
    if expected in ("image", "text") and enc.modality != expected:
      raise ValueError(f"{name}: {blk.encoder!r} is a {enc.modality} encoder but is "
                       f"configured for {expected!r}")
    out[name] = (enc, blk)
  return out


def _encoder_producer(config, workdir: str, split: str, chunk: int, encs: dict
                      ) -> tuple[ChunkProducer, int]:
  """Encoders over the data source's records: image encoders on the decoded images (one
  decode, shared by the modality and the reference), text encoders on the chosen caption
  and, for the test split, on every caption."""
  from platonic_jax import data
  data_dir = config.data.get("data_dir", "") or os.path.join(workdir, "tfds")
  source = data.open_source(config.data, split, data_dir=data_dir)
  n = len(source)
  num = max(1, -(-n // chunk))
  bs = int(config.encoders.batch_size)

  def encode(name, items):
    enc, blk = encs[name]
    layer = blk.get("layer", -1)
    return enc.encode(items, batch_size=bs, layers=int(layer), pool=blk.get("pool", ""))

  def encode_batch(batch, offset):
    keep = batch["mask"]
    images = list(batch["image"][keep])
    out = {}
    for name, (enc, _) in encs.items():
      if enc.modality == "image":
        out[name] = encode(name, images)
        continue
      out[name] = encode(name, [str(c) for c in batch["caption"][keep]])
      if split == "test" and "captions" in batch:
        caps = [list(c) for c in batch["captions"][keep]]
        out[f"{name}@captions"] = encode(name, [c for cs in caps for c in cs])
        rows = np.asarray(batch["index"][keep]) + offset
        out["caption_image"] = np.repeat(rows, [len(c) for c in caps])
    return out

  def producer(start):
    from platonic_jax.data import loader as loader_lib
    if not encs:  # loaded on first use: a finished split never loads a checkpoint
      encs.update(_encoders(config))
    # Loader batches tile every chunk exactly (a divisor of the chunk size), so a chunk
    # is a whole number of batches and decoded images never pile up beyond one batch.
    lb = math.gcd(chunk, bs)
    it = iter(loader_lib.make_loader(
        _Rows(source, start * chunk), batch_size=lb, preprocess=None,
        worker_count=int(config.data.get("num_workers", 0)), shard_index=0, shard_count=1))
    try:
      for i in range(start, num):
        rows = min(chunk, n - i * chunk)
        parts = [encode_batch(next(it), start * chunk) for _ in range(-(-rows // lb))]
        yield {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
    finally:
      close = getattr(it, "close", None)
      if close is not None:
        close()

  return producer, num
