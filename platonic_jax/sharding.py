"""The one device layout of the project: a 1-D ``data`` mesh over every device.

Everything data-parallel (metric row tiles, feature extraction batches, the training
step) shards its leading axis over this mesh with ``jax.shard_map`` — the pmap
programming model, written with shard_map (docs/design.md, "Decisions").
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: every device of every host).

  The axis is ``Auto`` so ``shard_map(in_specs=P('data'))`` accepts unsharded inputs
  (``jax.make_mesh`` would make it Explicit, which rejects them).
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("data_mesh needs at least one device")
  return Mesh(np.asarray(devices), (DATA,), axis_types=(jax.sharding.AxisType.Auto,))


def on_cpu(mesh: Mesh) -> bool:
  """Whether every device of ``mesh`` is a CPU (host-side code paths and XLA:CPU options)."""
  return all(d.platform == "cpu" for d in mesh.devices.flat)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over ``data``, other axes whole."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def pad_rows(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
  """Pads axis 0 of ``x`` with zeros up to a multiple of ``multiple``.

  Returns ``(padded, n)`` where ``n`` is the original row count; callers mask rows ``>= n``.
  """
  n = x.shape[0]
  pad = (-n) % multiple
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)
  return x, n
