"""Tiles and devices for the metrics that never build an N x N matrix.

The Gram-like matrices of the k-NN, RBF and CKNNA programs are visited in
``[tile, tile]`` blocks of their upper triangle (the matrices are symmetric), the block
pairs dealt round-robin to every device of the 1-D ``data`` mesh. This module holds what
those programs share: the tile (``DEFAULT_TILE`` on CPU, sized from the device's memory
on GPU / TPU: ``device_tile``), the mesh, the block pairs, the tile windows and
the marking of per-device accumulators inside ``jax.shard_map``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from platonic_jax import sharding
from platonic_jax.metrics import _checks

DEFAULT_TILE = 1024  # [1024, 1024] blocks: ~20% faster than 512 on XLA:CPU, 4 MB each
# Accelerator tiles: powers of two (matrix-unit and top-k friendly shapes) between these.
# Below 1024 a [t, D] x [D, t] block is too small to fill a GPU / TPU (the loop's per-step
# overhead dominates); above 8192 a block is 256 MB of f32 per live copy and the gain
# from fewer, larger steps is gone (the loop already runs at the matmul's rate).
MIN_DEVICE_TILE, MAX_DEVICE_TILE = 1024, 8192
SMALLEST_TILE = 128  # the floor when device memory is too tight even for MIN_DEVICE_TILE
# Share of the device's memory the sweep may plan for: the rest stays for XLA's own
# workspace, other live arrays (the caller's features, a second metric's state) and
# fragmentation of the allocator.
MEMORY_FRACTION = 0.5
# Live [t, t] f32 buffers of one sweep step: the block, its masked copy, its transpose
# (and masked transpose), and the top-k's workspace.
BLOCK_COPIES = 5


@functools.lru_cache(maxsize=None)
def default_mesh():
  """The 1-D ``data`` mesh over every device (made once per process)."""
  return sharding.data_mesh()


def device_bytes_limit(device) -> int | None:
  """Bytes the allocator of ``device`` may hand out (``memory_stats()['bytes_limit']``),
  or None where the backend reports none (XLA:CPU returns no stats)."""
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - a backend without memory stats: no limit known
    return None
  limit = (stats or {}).get("bytes_limit")
  return int(limit) if limit else None


def sweep_bytes(n: int, d: int, k: int, t: int, itemsize: int = 4) -> int:
  """Device bytes one k-NN / kernel sweep holds at tile ``t``: the [N, D] f32 features,
  their ``itemsize`` operand copy when that is not f32 (bf16: 2), the [N, k] f32 values
  and int32 indices of the running top-k twice (the loop's carry and its update), and
  ``BLOCK_COPIES`` [t, t] f32 blocks."""
  feats = n * d * 4 + (n * d * itemsize if itemsize != 4 else 0)
  state = 2 * n * k * 8
  return feats + state + BLOCK_COPIES * t * t * 4


def device_tile(n: int, d: int, k: int = 10, device=None, *, itemsize: int = 4) -> int:
  """Rows per block for a sweep over ``n`` rows of ``d`` features on ``device``.

  CPU devices (and any backend without ``memory_stats``): ``DEFAULT_TILE``, the size
  tuned on XLA:CPU. Accelerators: the largest power of two in [MIN_DEVICE_TILE,
  MAX_DEVICE_TILE] whose ``sweep_bytes`` fit in ``MEMORY_FRACTION`` of the device's
  ``bytes_limit``; when even MIN_DEVICE_TILE does not fit, smaller powers of two down to
  ``SMALLEST_TILE`` (logged: the features themselves nearly fill the device). The N x N
  matrix is never built at any tile: memory is O(N (D + k) + t^2).
  """
  device = jax.devices()[0] if device is None else device
  limit = None if device.platform == "cpu" else device_bytes_limit(device)
  if limit is None:
    return DEFAULT_TILE
  budget = MEMORY_FRACTION * limit
  t = MAX_DEVICE_TILE
  while t > SMALLEST_TILE and sweep_bytes(n, d, k, t, itemsize) > budget:
    t //= 2
  if t < MIN_DEVICE_TILE:
    logging.log_first_n(
        logging.WARNING, "k-NN / kernel tiles of %d rows: the [%d, %d] features leave "
        "little of the device's %.1f GB (budget %.0f%%)", 1, t, n, d, limit / 1e9,
        100 * MEMORY_FRACTION)
  return t


def resolve_tile(tile, n: int, d: int, k: int = 10, mesh=None, *, itemsize: int = 4) -> int:
  """``tile`` checked as a positive int, or for ``tile=None`` the ``device_tile`` of the
  first device of ``mesh`` (default: every device)."""
  if tile is not None:
    return _checks.check_tile(tile)
  device = (default_mesh() if mesh is None else mesh).devices.flat[0]
  return device_tile(n, d, k, device, itemsize=itemsize)


def varying(tree):
  """Marks per-device accumulators inside ``shard_map`` as device-varying (each device
  fills its own from other blocks / rows)."""
  return jax.tree.map(lambda v: lax.pcast(v, (sharding.DATA,), to="varying"), tree)


def tile_start(b, t, n):
  """Tile b covers rows [b t, min(b t + t, n)); the last, ragged tile is read as the
  full-size window [n - t, n) (rows below b t masked), so nothing is ever padded —
  padding would copy the features (GBs at large N) and defeat zero-copy inputs."""
  return jnp.minimum(b * t, n - t)


def effective_tile(n: int, tile: int) -> int:
  """The tile actually used: the rows split into ceil(N / tile) tiles of equal size
  (rounded up to a multiple of 8), so the last tile is not a mostly-overlapping window
  (16000 rows at tile 1024: 16 tiles of 1000, not 15 of 1024 plus a window that
  recomputes 384 rows). Never larger than N."""
  tile = max(1, min(int(tile), n))
  n_tiles = -(-n // tile)
  balanced = -(-n // n_tiles)
  return min(tile, -(-balanced // 8) * 8)


@functools.lru_cache(maxsize=None)
def block_pairs(n_tiles: int, ndev: int):
  """Upper-triangle block pairs (I <= J) dealt round-robin to ``ndev`` devices.

  Returns int32 ``[ndev, P]`` rows, cols and a bool validity mask (the last device
  may get dummy pairs so every device runs the same number of steps). Pairs are in
  row-major upper-triangle order, and dealing preserves it, so each row tile meets
  its column tiles in increasing order (the k-NN merge relies on it).
  """
  ii, jj = np.triu_indices(n_tiles)
  per = -(-len(ii) // ndev)
  pad = per * ndev - len(ii)
  ok = np.concatenate([np.ones(len(ii), bool), np.zeros(pad, bool)])
  ii = np.concatenate([ii, np.zeros(pad, ii.dtype)]).astype(np.int32)
  jj = np.concatenate([jj, np.zeros(pad, jj.dtype)]).astype(np.int32)
  # Round-robin: pair p goes to device p % ndev, which balances long and short rows.
  to_dev = lambda a: np.ascontiguousarray(a.reshape(per, ndev).T)
  return to_dev(ii), to_dev(jj), to_dev(ok)
