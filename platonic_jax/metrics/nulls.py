"""Permutation nulls at the cost of the structure, not of K full recomputations.

A null of Gröger et al. (2026, Algorithm 1) permutes the rows of b: b' = b[π] (row i of
b' is row π_i of b). Most metrics keep something of b that such a relabelling leaves
intact, so a null costs far less than a call:

* neighbour lists. The neighbours of sample i in b' are those of π_i in b, renamed:
  N_b'(i) = π⁻¹(N_b(π_i)), in the same order. A null is a gather of the cached [N, k]
  lists, then the O(N k) or O(N k²) score of the two lists: no Gram sweep.
* feature-space statistics. Column means, AᵀA and BᵀB do not change when rows are
  permuted; only cross terms do: Aᵀ P B (one N·Da·Db product) and sums Σ_i u_i v_{π_i}
  of per-row quantities (O(N)).

This module holds the two batched programs every null model uses (``NeighbourNull``,
``BilinearNull``); each metric's module says how its value is put back together
(``null`` of its ``registry.Metric``). The K permutations are dealt to the devices of the
``data`` mesh in fixed batches of ``BATCH`` nulls: every null is computed by the same
program on any number of devices, so the device count never changes a value.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from platonic_jax import sharding
from platonic_jax.metrics import tiling

_HI = lax.Precision.HIGHEST


def inverse(perm):
  """π⁻¹ of a permutation [N] (jax): inv[π_i] = i."""
  n = perm.shape[0]
  return jnp.zeros_like(perm).at[perm].set(jnp.arange(n, dtype=perm.dtype))


def relabel(idx, perm):
  """The neighbour lists of b[π] from those of b: idx [N, k], perm [N] -> [N, k]."""
  return inverse(perm)[idx[perm]]


def _batches(perms: np.ndarray, batch: int, ndev: int) -> tuple[np.ndarray, int]:
  """Perms [K, N] padded (with the identity) to a multiple of ``batch * ndev`` rows."""
  k = perms.shape[0]
  pad = (-k) % (batch * ndev)
  if pad:
    ident = np.broadcast_to(np.arange(perms.shape[1], dtype=perms.dtype), (pad, perms.shape[1]))
    perms = np.concatenate([perms, ident])
  return perms, k


@functools.lru_cache(maxsize=None)
def _sharded(mesh, per_batch: Callable, batch: int, n_const: int):
  """jit(shard_map): perms [K, N] over the devices; each device ``lax.map``s
  ``per_batch(perms [batch, N], *consts)`` over its rows in batches."""
  def device_fn(perms, *consts):
    groups = perms.reshape(-1, batch, perms.shape[-1])
    out = lax.map(lambda p: per_batch(p, *consts), groups)
    return jax.tree.map(lambda o: o.reshape((perms.shape[0],) + o.shape[2:]), out)

  # check_vma=False: the per-batch programs are the metrics' own (scans with replicated
  # initial carries, e.g. the LCS DP), run per device on its own perms; nothing is
  # reduced across devices, so there is no replication to check.
  fn = jax.shard_map(device_fn, mesh=mesh, in_specs=(P(sharding.DATA),) + (P(),) * n_const,
                     out_specs=P(sharding.DATA), check_vma=False)
  return jax.jit(fn)


def map_nulls(per_batch: Callable, perms: np.ndarray, consts: Sequence, *, batch: int,
              mesh=None):
  """``per_batch(perms [batch, N] int32, *consts)`` -> pytree of [batch, ...], over all
  K rows of ``perms``; returns the pytree of [K, ...] numpy arrays (padding dropped).
  ``per_batch`` must be a module-level function or a ``batch_program`` (the compiled
  program is cached per function object)."""
  mesh = tiling.default_mesh() if mesh is None else mesh
  padded, k = _batches(np.asarray(perms, np.int32), batch, mesh.devices.size)
  out = _sharded(mesh, per_batch, batch, len(consts))(padded, *consts)
  return jax.tree.map(lambda o: np.asarray(o)[:k], out)


# ---------------------------------------------------------------------------------------
# Neighbour lists.

NEIGHBOUR_BATCH = 8  # nulls per step: [8, N, k] lists in flight


def _neighbour_batch(perms, idx_a, idx_b, *, score, direct):
  if direct is not None:
    return jax.vmap(lambda p: direct(idx_a, idx_b, p))(perms)
  return jax.vmap(lambda p: score(idx_a, relabel(idx_b, p)))(perms)


@functools.lru_cache(maxsize=None)
def batch_program(fn, **static):
  """``fn`` with its static options bound, one object per (fn, options): the compiled
  null programs are cached per function object (``map_nulls``)."""
  return functools.partial(fn, **static)


class NeighbourNull:
  """Nulls of a metric computed from two ordered k-NN lists.

  score: jax ``score(idx_a [N, k], idx_b [N, k]) -> scalar`` (the registry's
  ``neighbour_score``). A null is the relabelled lists' score: O(N k) gather plus the
  score's own O(N k) (mutual, Jaccard) or O(N k²) (cycle, LCS, edit, rank) work; or
  ``direct(idx_a, idx_b, perm)`` where a metric computes it without relabelling
  (mutual k-NN and Jaccard: O(N k²) equalities, no sort). Equal to recomputing the
  metric on b[π] whenever no two neighbours of a sample tie (a tie is broken toward the
  lower index, and a permutation renames indices).
  """

  def __init__(self, score, idx_a, idx_b, mesh=None, direct=None):
    self._fn = batch_program(_neighbour_batch, score=score, direct=direct)
    self._consts = (jnp.asarray(idx_a), jnp.asarray(idx_b))
    self._mesh = mesh

  def values(self, perms: np.ndarray) -> np.ndarray:
    """[K] float64 null values for perms [K, N]."""
    out = map_nulls(self._fn, perms, self._consts, batch=NEIGHBOUR_BATCH, mesh=self._mesh)
    return np.asarray(out, np.float64)


# ---------------------------------------------------------------------------------------
# Feature-space cross products.

BYTES_IN_FLIGHT = 1 << 28  # ~256 MB of permuted rows per step


def bilinear_batch(n: int, width: int) -> int:
  """Nulls per step of ``BilinearNull``: [N, batch · width] float32 rows in flight."""
  return int(max(1, min(16, BYTES_IN_FLIGHT // max(1, 4 * n * width))))


def _bilinear_batch(perms, left, right, us, vs, *, keep_gram):
  # Rows of right in permuted order, the batch side by side: [N, B, q] -> [N, B q], so
  # the B cross products are one [p, N] x [N, B q] matmul.
  b, n = perms.shape
  q = right.shape[1]
  rp = right[perms.T].reshape(n, b * q)
  g = lax.dot_general(left, rp, (((0,), (0,)), ((), ())), precision=_HI,
                      preferred_element_type=jnp.float32)  # [p, B q]
  g = jnp.moveaxis(g.reshape(left.shape[1], b, q), 1, 0)  # [B, p, q]
  # Σ_i u_i v_{π_i} for each (u, v) pair: [B, m]
  dots = jnp.einsum("mn,bmn->bm", us, vs[:, perms].transpose(1, 0, 2), precision=_HI)
  if keep_gram:
    return g, dots
  return jnp.sum(g * g, axis=(1, 2)), dots


class BilinearNull:
  """Nulls whose b-dependence is Lᵀ P R (and a few Σ_i u_i v_{π_i}).

  left [N, p], right [N, q]: the metric's transformed features (centred, z-scored,
  whitened: transforms that commute with a row permutation); us, vs [m, N]: per-row
  quantities of a and b whose permuted inner products the metric needs. Per null the
  program forms ``‖Lᵀ P R‖²_F`` (``keep_gram=False``) or ``Lᵀ P R`` itself [p, q]
  (``keep_gram=True``, for metrics that take its singular values) and the [m] dots;
  ``finish(stat [K'] or [K', p, q], dots [K', m])`` (float64 numpy) turns a chunk of
  them into metric values. Cost per null: 2 N p q flops and O(m N).
  """

  def __init__(self, left, right, us=None, vs=None, *, finish, keep_gram=False, mesh=None):
    n = left.shape[0]
    us = np.zeros((0, n), np.float32) if us is None else np.asarray(us, np.float32)
    vs = np.zeros((0, n), np.float32) if vs is None else np.asarray(vs, np.float32)
    self._consts = (jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32),
                    jnp.asarray(us), jnp.asarray(vs))
    self._fn = batch_program(_bilinear_batch, keep_gram=keep_gram)
    self._batch = bilinear_batch(n, right.shape[1])
    self._mesh = mesh
    self._finish = finish
    # Gram matrices come back to the host in chunks of nulls of ~BYTES_IN_FLIGHT.
    gram_bytes = 4 * left.shape[1] * right.shape[1] if keep_gram else 8
    self._chunk = max(1, BYTES_IN_FLIGHT // gram_bytes)

  def values(self, perms: np.ndarray) -> np.ndarray:
    """[K] float64 null values for perms [K, N]."""
    out = []
    for i in range(0, len(perms), self._chunk):
      stat, dots = map_nulls(self._fn, perms[i:i + self._chunk], self._consts,
                             batch=self._batch, mesh=self._mesh)
      out.append(np.asarray(self._finish(np.asarray(stat, np.float64),
                                         np.asarray(dots, np.float64)), np.float64))
    return np.concatenate(out)


class BruteNull:
  """The fallback for metrics with no cheap structure (RBF CKA): the metric recomputed
  on b[π] for every null, K full calls."""

  def __init__(self, fn, a, b, options):
    self._fn, self._a, self._b, self._options = fn, a, b, options

  def values(self, perms: np.ndarray) -> np.ndarray:
    return np.array([self._fn(self._a, self._b[p], **self._options) for p in perms],
                    np.float64)
