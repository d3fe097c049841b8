"""Checkpoint tensors that are read only when (and only as far as) they are indexed.

A converter describes each Flax parameter as a view of checkpoint tensors -- transposed,
stacked, rows picked -- without reading any of them; ``partition.place`` then asks each
device for just its slice, ``view[index]``, which reads just those bytes from the
safetensors file (``safe_open(...).get_slice``). So a model larger than host memory
goes from the shards of ``model.safetensors.index.json`` straight into device shards.

Every view here has the duck type of a read-only array: ``.shape``, ``.dtype``,
``view[index] -> np.ndarray`` for a tuple of ``slice`` (one per dim, steps of 1), and
``np.asarray(view)`` (reads it whole). ``np.ndarray`` itself has that type, so eager
checkpoints (``pytorch_model.bin``, tests' dicts) go through the same code.

The file is opened for each read and closed right after: safetensors reads through a
memory map, and pages of a map left open stay in the process's resident set, which
would make the peak RSS of a load the whole file however little each device keeps.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

Index = tuple[slice, ...]


def full_index(shape: Sequence[int]) -> Index:
  return tuple(slice(0, n) for n in shape)


def normalize(index: Any, shape: Sequence[int]) -> Index:
  """``index`` (slices, ``...`` or a partial tuple) as one ``slice(start, stop)`` per dim."""
  if not isinstance(index, tuple):
    index = (index,)
  if any(i is Ellipsis for i in index):
    k = index.index(Ellipsis)
    index = index[:k] + (slice(None),) * (len(shape) - len(index) + 1) + index[k + 1:]
  index = index + (slice(None),) * (len(shape) - len(index))
  out = []
  for s, n in zip(index, shape):
    if not isinstance(s, slice):
      raise TypeError(f"lazy tensors take slices only, got {s!r}")
    start, stop, step = s.indices(n)
    if step != 1:
      raise TypeError("lazy tensors take slices with step 1 only")
    out.append(slice(start, max(start, stop)))
  return tuple(out)


class LazyArray:
  """Base of the views: ``np.asarray`` reads the whole tensor."""
  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def read(self, index: Index) -> np.ndarray:
    raise NotImplementedError

  def __getitem__(self, index) -> np.ndarray:
    return self.read(normalize(index, self.shape))

  def __array__(self, dtype=None, copy=None):
    x = self.read(full_index(self.shape))
    return x if dtype is None else x.astype(dtype)

  def __repr__(self):
    return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class SafetensorsTensor(LazyArray):
  """One tensor of a ``.safetensors`` file, read by slices (bf16 as ``ml_dtypes.bfloat16``)."""

  def __init__(self, path: str, name: str, shape: Sequence[int], dtype: np.dtype):
    self.path, self.name = path, name
    self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)

  def read(self, index: Index) -> np.ndarray:
    from safetensors import safe_open  # local: only loading needs it
    with safe_open(self.path, framework="numpy") as f:   # closed at once: see module doc
      if not self.shape:
        return np.asarray(f.get_tensor(self.name))
      return np.asarray(f.get_slice(self.name)[index])


class Permuted(LazyArray):
  """``np.transpose(base, axes)``: e.g. a torch Linear ``weight [out, in]`` as a Flax
  ``kernel [in, out]`` (axes (1, 0)) without reading it."""

  def __init__(self, base: Any, axes: Sequence[int] = (1, 0)):
    self.base, self.axes = base, tuple(axes)
    self.shape = tuple(base.shape[a] for a in self.axes)
    self.dtype = np.dtype(base.dtype)

  def read(self, index: Index) -> np.ndarray:
    inverse = [0] * len(self.axes)
    for i, a in enumerate(self.axes):
      inverse[a] = index[i]
    return np.transpose(np.asarray(self.base[tuple(inverse)]), self.axes)


class Stacked(LazyArray):
  """``np.stack(parts)`` along a new axis 0: e.g. Mixtral's per-expert matrices as one
  ``[E, ...]`` parameter; a slice over experts reads only those experts."""

  def __init__(self, parts: Sequence[Any]):
    if not parts:
      raise ValueError("Stacked needs at least one part")
    shapes = {tuple(p.shape) for p in parts}
    if len(shapes) != 1:
      raise ValueError(f"Stacked parts differ in shape: {sorted(shapes)}")
    self.parts = list(parts)
    self.shape = (len(parts),) + tuple(parts[0].shape)
    self.dtype = np.dtype(parts[0].dtype)

  def read(self, index: Index) -> np.ndarray:
    rows = range(len(self.parts))[index[0]]
    return np.stack([np.asarray(self.parts[i][index[1:]]) for i in rows]) if len(rows) else \
        np.zeros((0,) + tuple(s.stop - s.start for s in index[1:]), self.dtype)


class Gathered(LazyArray):
  """``np.take(base, indices, axis)``: rows picked out of a fused tensor, e.g. the q rows
  of BLOOM's ``query_key_value`` (heads interleaved as [H, 3, hd]). Consecutive indices
  are read as one slice."""

  def __init__(self, base: Any, indices: Sequence[int], axis: int = 0):
    self.base, self.axis = base, int(axis)
    self.indices = np.asarray(indices, np.int64)
    shape = list(base.shape)
    shape[self.axis] = len(self.indices)
    self.shape, self.dtype = tuple(shape), np.dtype(base.dtype)

  def read(self, index: Index) -> np.ndarray:
    picked = self.indices[index[self.axis]]
    parts, start = [], 0
    for end in range(1, len(picked) + 1):   # runs of consecutive source indices
      if end == len(picked) or picked[end] != picked[end - 1] + 1:
        sub = list(index)
        sub[self.axis] = slice(int(picked[start]), int(picked[end - 1]) + 1)
        parts.append(np.asarray(self.base[tuple(sub)]))
        start = end
    if not parts:
      shape = [s.stop - s.start for s in index]
      return np.zeros(shape, self.dtype)
    return np.concatenate(parts, axis=self.axis)


def _safetensors_header(path: str) -> dict:
  """The JSON header of a safetensors file (names -> dtype, shape), read without a map."""
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    if n <= 0 or n > 100_000_000:
      raise ValueError(f"{path} is not a safetensors file (header length {n})")
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return header


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _np_dtype(code: str) -> np.dtype:
  if code == "BF16":
    import ml_dtypes  # a jax dependency: numpy's bfloat16
    return np.dtype(ml_dtypes.bfloat16)
  if code not in _ST_DTYPES:
    raise ValueError(f"unsupported safetensors dtype {code}")
  return np.dtype(_ST_DTYPES[code])


def safetensors_files(directory: str) -> list[str] | None:
  """The safetensors files of a HF checkpoint directory: ``model.safetensors``, or the
  shards named by ``model.safetensors.index.json``; None when it has neither."""
  single = os.path.join(directory, "model.safetensors")
  if os.path.exists(single):
    return [single]
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      names = sorted(set(json.load(f)["weight_map"].values()))
    missing = [n for n in names if not os.path.exists(os.path.join(directory, n))]
    if missing:
      raise ValueError(f"{index} names shards that are not in {directory}: {missing[:5]}; "
                       "download every shard of the checkpoint")
    return [os.path.join(directory, n) for n in names]
  return None


def open_safetensors(files: Sequence[str]) -> dict[str, SafetensorsTensor]:
  """``{name: SafetensorsTensor}`` over every tensor of ``files``; reads headers only."""
  out: dict[str, SafetensorsTensor] = {}
  for path in files:
    for name, info in _safetensors_header(path).items():
      if name in out:
        raise ValueError(f"tensor {name!r} is in two shards ({out[name].path}, {path})")
      out[name] = SafetensorsTensor(path, name, info["shape"], _np_dtype(info["dtype"]))
  return out


def nbytes(tensors: Mapping[str, Any]) -> int:
  """Bytes of a ``{name: array-like}`` as stored."""
  return sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in tensors.values())
