"""Parameters sharded over a ``model`` mesh axis by rules on their paths, placed slice by slice.

The mesh of a loaded encoder is 2-D, ``("data", "model")``: the batch is split over
``data`` (as in ``platonic_jax.sharding``), parameters over ``model``. An architecture
module may declare (contract in ``registry.py``)::

    PARTITION_RULES = (
        (r"layers_\\d+/attn/(q|k|v)_proj/kernel", (None, "model")),   # column-parallel
        (r"layers_\\d+/attn/o_proj/kernel", ("model", None)),          # row-parallel
        ...
    )

Each rule is a regular expression ``re.fullmatch``-ed against the '/'-joined Flax param
path (``layers_3/attn/q_proj/kernel``) and a partition spec with one mesh-axis name or
None per array dim (big_vision's / MaxText's rules on parameter names). The first match
wins; unmatched parameters are replicated. A dim whose size the axis does not divide is
replicated instead (logged once), so tiny test models and odd vocabularies still load.

:func:`place` puts every parameter on the mesh slice by slice: each addressable
device's slice is read (a ``lazy`` view of the safetensors files reads only those
bytes), put on the devices that hold it (``jax.device_put``; devices that share a slice
share one read), and dropped before the next is read; the shards are then assembled
with ``jax.make_array_from_single_device_arrays``. A process only reads the slices of
its own devices -- so on ``jax.distributed`` runs each host reads about
``1 / processes`` of the weights and no host ever holds the whole model.

User-facing option: ``encoders.load(name, model_parallel=N)`` -- N devices per model
replica (``N`` must divide the device count); the remaining factor is data parallel.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from platonic_jax import sharding

log = logging.getLogger(__name__)

DATA = sharding.DATA
MODEL = "model"

Rules = Sequence[tuple[str, tuple]]


def model_mesh(devices: Sequence[jax.Device] | None = None, model_parallel: int = 1) -> Mesh:
  """A ``("data", "model")`` mesh: ``len(devices) / model_parallel`` x ``model_parallel``.

  Devices that are neighbours in ``devices`` (the same host, first) share a model
  replica. Axes are ``Auto`` (``jax.make_mesh`` would make them Explicit, docs/design.md).
  Raises ValueError for a model_parallel that is not a positive divisor of the count.
  """
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if not n:
    raise ValueError("model_mesh needs at least one device")
  if (isinstance(model_parallel, bool) or not isinstance(model_parallel, (int, np.integer))
      or model_parallel < 1 or n % model_parallel):
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    raise ValueError(f"model_parallel={model_parallel!r} must be a divisor of the {n} devices "
                     f"({', '.join(map(str, divisors))}); fix: pass one of those")
  grid = np.asarray(devices, dtype=object).reshape(n // model_parallel, model_parallel)
  return Mesh(grid, (DATA, MODEL), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def model_parallel_size(mesh: Mesh) -> int:
  """The size of the mesh's ``model`` axis (1 for a plain ``data`` mesh)."""
  return int(mesh.shape.get(MODEL, 1))


def path_str(key_path: Sequence[Any]) -> str:
  """A jax tree key path as the rules see it: ``layers_3/attn/q_proj/kernel``."""
  parts = []
  for k in key_path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def _check_rules(rules: Rules) -> list[tuple[re.Pattern, tuple]]:
  out = []
  for i, rule in enumerate(rules):
    if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)
            and isinstance(rule[1], tuple)):
      raise TypeError(f"PARTITION_RULES[{i}] must be (regex str, spec tuple), got {rule!r}")
    out.append((re.compile(rule[0]), rule[1]))
  return out


def spec_for(path: str, shape: Sequence[int], rules: Rules, mesh: Mesh) -> P:
  """The partition spec of one parameter: the first rule whose regex fullmatches
  ``path``, with dims the mesh axis does not divide replicated; P() when none matches."""
  for regex, spec in _check_rules(rules):
    if not regex.fullmatch(path):
      continue
    if len(spec) != len(shape):
      raise ValueError(f"partition rule {regex.pattern!r} has {len(spec)} dims but {path} has "
                       f"shape {tuple(shape)}; fix the architecture's PARTITION_RULES")
    out = []
    for dim, axis in zip(shape, spec):
      if axis is not None and axis not in mesh.shape:
        raise ValueError(f"partition rule {regex.pattern!r} names mesh axis {axis!r}; the mesh "
                         f"has {tuple(mesh.shape)}")
      if axis is not None and dim % mesh.shape[axis]:
        log.info("%s: dim of size %d is not divisible by mesh axis %s=%d; replicated",
                 path, dim, axis, mesh.shape[axis])
        axis = None
      out.append(axis)
    return P(*out)
  return P()


def shardings(params: Any, mesh: Mesh, rules: Rules = ()) -> Any:
  """A pytree of ``NamedSharding`` matching ``params`` (arrays, lazy views or
  ``jax.ShapeDtypeStruct`` leaves)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, spec_for(path_str(path), np.shape(x), rules, mesh)),
      params)


def place_array(x: Any, target: NamedSharding, dtype: Any) -> jax.Array:
  """One parameter on the mesh: each addressable device gets ``x[its slice]`` cast to
  ``dtype``. Slices are read one at a time and each is put on every device that holds
  it (replicated dims: one read) before the next is read, so the host holds one slice
  at a time. (``jax.make_array_from_callback`` would first collect every device's
  slice, i.e. the process's whole share of the parameter, then copy them all.)"""
  shape = tuple(np.shape(x))
  groups: dict[tuple, tuple[Any, list]] = {}
  for device, index in target.addressable_devices_indices_map(shape).items():
    key = tuple((s.start, s.stop) for s in index)
    groups.setdefault(key, (index, []))[1].append(device)
  shards = {}
  for index, devices in groups.values():
    part = np.asarray(x[index] if shape else x).astype(dtype, copy=False)
    for device in devices:
      # Synchronously, so this slice's host buffers are free before the next is read.
      shards[device] = jax.device_put(part, device).block_until_ready()
    del part
  ordered = [shards[d] for d in target.addressable_devices_indices_map(shape)]
  return jax.make_array_from_single_device_arrays(shape, target, ordered)


def place(params: Any, mesh: Mesh, rules: Rules = (),
          dtype_of: Callable[[str, Any], Any] | None = None) -> Any:
  """Every leaf of ``params`` on ``mesh`` by ``rules``, one leaf at a time.

  Args:
    params: pytree of numpy arrays or ``lazy`` views (anything with ``.shape`` and
      ``x[tuple of slices] -> np.ndarray``).
    mesh: from :func:`model_mesh` (or any mesh whose axes the rules name).
    rules: an architecture's ``PARTITION_RULES``.
    dtype_of: ``(path, leaf) -> dtype`` of the device array (default float32).
  Returns the same pytree of ``jax.Array``; peak host memory is the largest slice read
  at once, not the model.
  """
  dtype_of = dtype_of or (lambda path, x: np.float32)

  def put(path, x):
    p = path_str(path)
    target = NamedSharding(mesh, spec_for(p, np.shape(x), rules, mesh))
    out = place_array(x, target, dtype_of(p, x))
    _trim_host_heap()
    return out

  return jax.tree_util.tree_map_with_path(put, params)


_LIBC = None


def _trim_host_heap() -> None:
  """Returns the freed slices' memory to the OS (glibc ``malloc_trim``; a no-op
  elsewhere). Without it glibc keeps the heap pages of every freed read slice and the
  peak RSS of a load grows ~30% past the device buffers (measured on a 0.7 GB model)."""
  global _LIBC
  if _LIBC is None:
    import ctypes
    import ctypes.util
    try:
      _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
      _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
      _LIBC = False
  if _LIBC:
    _LIBC.malloc_trim(0)
