"""grain loader over a TFDS data source: decode + model preprocessing in worker processes.

    make_loader(source, *, batch_size, preprocess=None, seed=0, shuffle=False,
                num_epochs=1, worker_count=0, shard_index=None, shard_count=None,
                threads_per_worker=1) -> Loader

``source``: a random-access data source of records with ``image`` (encoded bytes) and
``caption`` (bytes or str) — what ``platonic_jax.data.open_source`` returns
(``tfds.data_source(..., decoders={"image": tfds.decode.SkipDecoding()})``); any object
with ``__len__`` / ``__getitem__`` returning such dicts works (records with
``image/filename`` and ``captions`` pass those through too).

Iterating a ``Loader`` yields dicts of NumPy arrays, every batch exactly ``batch_size``::

    "image"     [B, ...]  preprocess(PIL RGB image) stacked (float32 [B, 224, 224, 3] for
                          the ResNet preprocessing); with ``preprocess=None`` an object
                          array [B] of uint8 [H, W, 3] arrays (sizes differ)
    "caption"   [B]       object array of str
    "captions"  [B]       object array of lists of str (all captions of the image), if
                          the source has them
    "index"     [B] int64 the record's index in ``source``; -1 for padding
    "mask"      [B] bool  False for padding (the tail of the last batch)

Semantics (what the tests check):
- The global stream is epoch 0, epoch 1, ...; each epoch is ``range(len(source))``,
  permuted by grain's index shuffle from ``seed`` (reseeded per epoch) if ``shuffle``.
- Host ``shard_index`` of ``shard_count`` (default ``jax.process_index()`` /
  ``jax.process_count()``) takes every ``shard_count``-th element of the global stream,
  so the hosts together see every example of every epoch exactly once. With a finite
  ``num_epochs`` the stream is padded so every host yields the same number of batches
  (``len(loader)``) — required by a jitted multi-host step. Padding slots repeat record
  0's image (so shapes match) with ``mask=False``, ``index=-1``, ``caption=""``.
- The order depends only on (``seed``, ``shuffle``, ``num_epochs``, shard), not on
  ``worker_count``: grain hands whole batches to workers round robin and reads them back
  in order.
- ``iter(loader)`` returns a grain ``DatasetIterator``: ``it.get_state()`` /
  ``it.set_state(state)`` (a small JSON-able dict) resume exactly, and it can be saved
  with the train state by Orbax (``grain.checkpoint.CheckpointSave(it)`` /
  ``CheckpointRestore(it)``). Close it (``it.close()``) to stop worker processes early.

``preprocess`` runs in the worker processes, so it must be picklable by cloudpickle
(functions, ``functools.partial``, lambdas are fine) and should be NumPy/PIL code (no
JAX: the workers are fresh spawned processes).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable

import grain
import numpy as np
from absl import flags
from PIL import Image

from platonic_jax import errors
# numpy + PIL only: the encoders package imports its jax modules lazily.
from platonic_jax.encoders import preprocess

PAD_INDEX = -1


def decode_image(data: bytes) -> Image.Image:
  """Encoded JPEG / PNG bytes -> PIL RGB image.

  The colour rule of transformers' ``convert_to_rgb`` (what its image processors do):
  images with alpha (RGBA, LA, palette with transparency) are composited on white;
  grayscale, CMYK and the rest go through ``Image.convert("RGB")``. EXIF orientation is
  not applied (transformers does not either). Raises ValueError if undecodable.
  """
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:  # noqa: BLE001 -- re-raised with a plain message
    raise errors.InputError(f"cannot decode image ({len(data)} bytes): {type(e).__name__}: {e}"
                            ) from e
  return preprocess.convert_rgb(image)


def _text(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _object_array(items: list) -> np.ndarray:
  """A [len(items)] object vector (np.array would make lists / equal-shape images 2-D+)."""
  out = np.empty(len(items), dtype=object)
  for i, v in enumerate(items):
    out[i] = v
  return out


class _LoadBatch:
  """[B] record indices (-1 = padding) -> one batch dict. Runs in the workers."""

  def __init__(self, source, preprocess: Callable[[Image.Image], np.ndarray] | None):
    self.source = source
    self.preprocess = preprocess

  def _records(self, keys: list[int]) -> list[dict]:
    getitems = getattr(self.source, "__getitems__", None)
    # ArrayRecord reads a batch of keys in one call (fewer file seeks).
    return list(getitems(keys)) if getitems is not None else [self.source[k] for k in keys]

  def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    idx = np.asarray(idx, dtype=np.int64)
    mask = idx != PAD_INDEX
    keys = [int(i) if m else 0 for i, m in zip(idx, mask)]  # padding reads record 0
    records = self._records(keys)
    images = []
    for key, rec in zip(keys, records):
      try:
        image = decode_image(rec["image"])
      except ValueError as e:
        raise errors.InputError(f"record {key}: {e}") from None
      images.append(np.asarray(image, dtype=np.uint8) if self.preprocess is None
                    else np.asarray(self.preprocess(image)))
    out = {
        "image": _object_array(images) if self.preprocess is None else np.stack(images),
        "caption": _object_array([_text(r["caption"]) if m else ""
                                  for r, m in zip(records, mask)]),
        "index": np.where(mask, idx, PAD_INDEX),
        "mask": mask,
    }
    if "captions" in records[0]:
      out["captions"] = _object_array([[_text(c) for c in r["captions"]] if m else []
                                       for r, m in zip(records, mask)])
    if "image/filename" in records[0]:
      out["filename"] = _object_array([_text(r["image/filename"]) if m else ""
                                       for r, m in zip(records, mask)])
    return out


class Loader:
  """An iterable of fixed-size batches; ``len(loader)`` = batches per host (finite epochs).

  Attributes: ``dataset`` (the grain ``IterDataset``), ``num_examples`` (real examples
  this host yields), ``num_batches``.
  """

  def __init__(self, dataset: grain.IterDataset, num_examples: int | None,
               num_batches: int | None):
    self.dataset = dataset
    self.num_examples = num_examples
    self.num_batches = num_batches

  def __iter__(self) -> grain.DatasetIterator:
    return iter(self.dataset)

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError("an infinite loader (num_epochs=None) has no length")
    return self.num_batches


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # only when the caller relies on the JAX process layout
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  return int(shard_index), int(shard_count)


def make_loader(source, *, batch_size: int,
                preprocess: Callable[[Image.Image], np.ndarray] | None = None,
                seed: int = 0, shuffle: bool = False, num_epochs: int | None = 1,
                worker_count: int = 0, shard_index: int | None = None,
                shard_count: int | None = None, threads_per_worker: int = 1) -> Loader:
  """Batches of decoded (and preprocessed) image-caption pairs; see the module docstring.

  Args:
    source: random-access records (``open_source``'s TFDS data source).
    batch_size: examples per batch on this host (every batch has exactly this many).
    preprocess: PIL RGB image -> np.ndarray, run in the workers (e.g. the encoder's
      224 x 224 preprocessing); None yields the decoded uint8 [H, W, 3] images.
    seed: shuffle seed in [0, 2**32).
    shuffle: permute each epoch (else the source order).
    num_epochs: passes over the data; None = forever (no padding, no length).
    worker_count: grain worker processes (0 = decode in this process).
    shard_index, shard_count: this host's shard (default: JAX process index / count).
    threads_per_worker: decode threads in each worker (or in this process when
      ``worker_count=0``); 1 makes one worker = one core.
  """
  n = len(source)
  if n == 0:
    raise ValueError("the data source is empty")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs={num_epochs} must be >= 1 or None (forever)")
  if worker_count < 0:
    raise ValueError(f"worker_count={worker_count} must be >= 0")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed={seed} must be in [0, 2**32) (grain's shuffle seed)")
  shard_index, shard_count = _shard(shard_index, shard_count)

  ds = grain.MapDataset.range(n)
  if shuffle:
    ds = ds.shuffle(seed=seed)  # a bijection on indices, recomputed per index (no buffer)
  ds = ds.repeat(num_epochs)    # reseeds the shuffle every epoch
  ds = ds[shard_index::shard_count]
  num_examples = num_batches = None
  if num_epochs is not None:
    num_examples = len(ds)
    # Every host pads to the same count: ceil(total / shard_count), rounded up to batches.
    per_host = math.ceil(n * num_epochs / shard_count)
    num_batches = math.ceil(per_host / batch_size)
    pad = num_batches * batch_size - num_examples
    if pad:
      ds = grain.MapDataset.concatenate([ds, grain.MapDataset.source([PAD_INDEX] * pad)])
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(_LoadBatch(source, preprocess))
  # prefetch_buffer_size bounds how many decoded batches wait in memory per process.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads_per_worker,
                                            prefetch_buffer_size=max(2, threads_per_worker)))
  if worker_count > 0:
    # grain's multiprocessing reads absl flags (its own --grain_* options); outside an
    # absl app (pytest, notebooks) they are unparsed and reading them raises, so use the
    # defaults. A later explicit FLAGS(argv) still parses the command line normally.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=2))
  return Loader(ds, num_examples, num_batches)
