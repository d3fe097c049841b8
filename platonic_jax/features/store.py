"""One stored feature entry: ``<workdir>/features/<key>/``, keyed by its inputs.

    manifest.json            {"version", "key", "inputs", "arrays": {name: {"file",
                              "shape", "dtype", "sha256"}}}
    <name>.npy               each finished array ([N, D], [M, D] or [N])
    .chunks-<size>/<i>.npz   the finished chunks of an extraction still in progress

Guarantees:
- **Atomic writes** (``workdir.atomic_write_bytes``): a reader, or a re-run after a kill,
  sees the old file or the complete new one, never a torn one. Files get the umask's
  mode.
- **Never stale**: the key hashes the entry's inputs, and the manifest's recorded inputs
  must equal the request's, or the entry is an error (a hand-edited or colliding
  directory is never read as something else).
- **Resume**: chunks of ``chunk_size`` rows are saved as they finish; a killed run
  restarts at the first missing chunk. The chunk size only shapes an extraction in
  progress: a finished entry is reused whatever the chunk size is now.
- **Integrity**: the manifest holds each array's SHA-256; ``load`` verifies it, so a
  truncated or altered file is an error that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from typing import Mapping

import numpy as np

from platonic_jax import errors
from platonic_jax import workdir as workdir_lib

VERSION = 2
FEATURES_DIR = "features"
MANIFEST = "manifest.json"


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
  return buf.getvalue()


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
  return buf.getvalue()


class Entry:
  """The feature entry of ``key`` (recorded ``inputs``) under ``<workdir>/features``.

  ``write=False`` (multi-host processes other than 0) keeps chunks in memory instead.
  """

  def __init__(self, workdir: str, key: str, inputs: Mapping, *, write: bool = True):
    self.key = key
    self.inputs = json.loads(json.dumps(inputs))  # the form it has once stored
    self.root = os.path.join(workdir, FEATURES_DIR, key)
    self.write = write
    self._manifest_path = os.path.join(self.root, MANIFEST)
    self._fresh: dict[int, dict[str, np.ndarray]] = {}

  def __repr__(self):
    return f"Entry({self.root})"

  # -- manifest ---------------------------------------------------------------------------

  def manifest(self) -> dict | None:
    """The stored manifest (None if the entry is not finished); checks it is ours."""
    if not os.path.exists(self._manifest_path):
      return None
    try:
      with open(self._manifest_path) as f:
        m = json.load(f)
    except (OSError, ValueError) as e:
      raise errors.CacheError(f"{self._manifest_path} cannot be read ({e}); delete "
                              f"{self.root} to re-extract.") from None
    if m.get("inputs") != self.inputs or m.get("key") != self.key:
      raise errors.CacheError(
          f"{self._manifest_path} records other inputs than requested (same key, different "
          "recorded inputs: hand-edited or copied). Delete that directory to re-extract.")
    return m

  def done(self) -> bool:
    return self.manifest() is not None

  # -- writing ----------------------------------------------------------------------------

  def _chunk_path(self, chunk_size: int, i: int) -> str:
    return os.path.join(self.root, f".chunks-{chunk_size}", f"{i:06d}.npz")

  def has_chunk(self, chunk_size: int, i: int) -> bool:
    return i in self._fresh or os.path.exists(self._chunk_path(chunk_size, i))

  def finished_chunks(self, chunk_size: int, num_chunks: int) -> int:
    """How many leading chunks are already saved (the resume point)."""
    i = 0
    while i < num_chunks and self.has_chunk(chunk_size, i):
      i += 1
    return i

  def save_chunk(self, chunk_size: int, i: int, arrays: Mapping[str, np.ndarray]) -> None:
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
      if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        raise errors.InputError(
            f"features {self.root}: {k}, chunk {i}: NaN or Inf from the encoder; check its "
            "dtype (config.encoders.dtype) and inputs.")
    if self.write:
      workdir_lib.atomic_write_bytes(self._chunk_path(chunk_size, i), _npz_bytes(arrays))
    else:
      self._fresh[i] = arrays

  def _read_chunk(self, chunk_size: int, i: int) -> dict[str, np.ndarray]:
    if i in self._fresh:
      return self._fresh[i]
    with np.load(self._chunk_path(chunk_size, i), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}

  def finalise(self, chunk_size: int, num_chunks: int,
               extra: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Joins the chunks into the finished arrays (the commit point), then drops them.
    ``extra``: arrays that are not per row (e.g. a model's parameter count), stored beside."""
    chunks = [self._read_chunk(chunk_size, i) for i in range(num_chunks)]
    out = {name: np.concatenate([c[name] for c in chunks], axis=0) for name in chunks[0]}
    out.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    self.save(out)
    if self.write:
      for i in range(num_chunks):
        with contextlib.suppress(OSError):
          os.unlink(self._chunk_path(chunk_size, i))
      with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(self._chunk_path(chunk_size, 0)))
    self._fresh.clear()
    return out

  def save(self, arrays: Mapping[str, np.ndarray]) -> None:
    """Stores finished arrays; the manifest, written last, makes the entry done."""
    m = {"version": VERSION, "key": self.key, "inputs": self.inputs, "arrays": {}}
    for name, arr in arrays.items():
      data = _npy_bytes(arr)
      if self.write:
        workdir_lib.atomic_write_bytes(os.path.join(self.root, f"{name}.npy"), data)
      m["arrays"][name] = {"file": f"{name}.npy", "shape": list(arr.shape),
                           "dtype": str(arr.dtype), "sha256": hashlib.sha256(data).hexdigest()}
    if self.write:
      workdir_lib.atomic_write_bytes(self._manifest_path,
                                     json.dumps(m, indent=1, sort_keys=True).encode())
    else:
      self._memory = dict(arrays)

  # -- reading ----------------------------------------------------------------------------

  def load(self, *, verify: bool = True) -> dict[str, np.ndarray]:
    """``{name: array}`` of the finished entry; checks shape, dtype and SHA-256."""
    if not self.write and getattr(self, "_memory", None) is not None:
      return dict(self._memory)
    m = self.manifest()
    if m is None:
      raise errors.CacheError(f"{self.root} is not extracted yet; run the feature stage.")
    out = {}
    for name, e in m["arrays"].items():
      path = os.path.join(self.root, e["file"])
      try:
        with open(path, "rb") as f:
          data = f.read()
      except FileNotFoundError:
        raise errors.CacheError(f"{path} is listed in the manifest but missing; delete "
                                f"{self.root} to re-extract.") from None
      if verify and hashlib.sha256(data).hexdigest() != e["sha256"]:
        raise errors.CacheError(f"{path} does not match its checksum in the manifest "
                                f"(corrupt or modified); delete {self.root} to re-extract.")
      arr = np.load(io.BytesIO(data), allow_pickle=False)
      if list(arr.shape) != e["shape"] or str(arr.dtype) != e["dtype"]:
        raise errors.CacheError(f"{path}: shape/dtype {arr.shape}/{arr.dtype} differ from "
                                f"the manifest's {e['shape']}/{e['dtype']}")
      out[name] = arr
    return out
