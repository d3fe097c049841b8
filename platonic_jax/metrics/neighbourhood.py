"""ReSi's neighbourhood measures (Klabunde et al. 2024, ``mklabunde/resi``,
``repsim/measures/nearest_neighbor.py``) from the tiled k-NN lists of ``metrics.knn``.

* knn_jaccard: mean_i |N_A(i) ∩ N_B(i)| / |N_A(i) ∪ N_B(i)| (ReSi ``jaccard_similarity``).
* rank_similarity (Wang et al. 2020): mean_i of Σ_{j ∈ N_A(i) ∩ N_B(i)} 2 / ((1 + |r_A(j)
  − r_B(j)|)(r_A(j) + r_B(j))) normalised by Σ_{l=1}^{|∩|} 1/l (0 for an empty ∩), r the
  1-based ranks in the two ordered lists (ReSi ``rank_similarity``).
* second_order_cosine (Hamilton et al. 2016): mean_i cos(d_A(i, U_i), d_B(i, U_i)), the
  cosine between the vectors of cosine distances 1 − cos from i to the union U_i =
  N_A(i) ∪ N_B(i), in each space (ReSi ``second_order_cosine_similarity``).

ReSi finds neighbours with scikit-learn's cosine distance; here they are the k largest
inner products, self excluded, ties toward the lower index — the same lists on
l2-normalised rows (``metrics.score`` normalises; second_order_cosine normalises rows
itself, as its values are cosine distances). Never N x N: knn_jaccard and rank_similarity
are O(N k) / O(N k²) from the lists; second_order_cosine also needs the 2k inner products
of each sample with the other space's neighbours: O(N k D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from platonic_jax.metrics import _checks, knn, nulls, tiling


@jax.jit
def jaccard_per_row(idx_a, idx_b):
  """|∩| / |∪| of each row pair, [N] float32 (|∪| = 2k − |∩|)."""
  c = knn.common_counts(idx_a, idx_b).astype(jnp.float32)
  return c / (2 * idx_a.shape[1] - c)


@jax.jit
def rank_per_row(idx_a, idx_b):
  """Wang et al.'s rank similarity of each row pair, [N] float32."""
  k = idx_a.shape[1]
  eq = idx_a[:, :, None] == idx_b[:, None, :]  # [N, k, k]: position p in A, q in B
  p = jnp.arange(k, dtype=jnp.float32)
  rank_a, rank_b = p[:, None] + 1, p[None, :] + 1
  w = 2.0 / ((1.0 + jnp.abs(rank_a - rank_b)) * (rank_a + rank_b))  # [k, k]
  score = jnp.sum(jnp.where(eq, w, 0.0), axis=(1, 2))
  m = jnp.sum(eq, axis=(1, 2))  # |∩|
  harmonic = jnp.concatenate([jnp.ones(1), jnp.cumsum(1.0 / jnp.arange(1, k + 1))])
  return jnp.where(m > 0, score / harmonic[m], 0.0)


def jaccard_null(idx_a, idx_b, perm):
  """knn_jaccard of (a, b[perm]) from the lists of a and b (the permutation null)."""
  c = knn.permuted_common_counts(idx_a, idx_b, perm).astype(jnp.float32)
  return jnp.mean(c / (2 * idx_a.shape[1] - c))


@jax.jit
def jaccard_from_idx(idx_a, idx_b):
  return jnp.mean(jaccard_per_row(idx_a, idx_b))


@jax.jit
def rank_from_idx(idx_a, idx_b):
  return jnp.mean(rank_per_row(idx_a, idx_b))


def jaccard_per_sample(idx_a, idx_b) -> np.ndarray:
  return np.asarray(jaccard_per_row(idx_a, idx_b), np.float64)


def rank_per_sample(idx_a, idx_b) -> np.ndarray:
  return np.asarray(rank_per_row(idx_a, idx_b), np.float64)


def knn_jaccard(a, b, k: int = 10, *, tile: int | None = None,
                precision: str = "fp32", mesh=None,
                approx_recall: float | None = None) -> float:
  """Mean Jaccard index of the k-NN sets, in [0, 1] (ReSi ``jaccard_similarity``).
  = mean_i c_i / (2k − c_i) with c_i = |N_A(i) ∩ N_B(i)| (mutual_knn is mean_i c_i / k).
  Invariant to rotation and isotropic scaling (and, on unit rows, to what cosine ignores)."""
  return knn._neighbour_metric(jaccard_from_idx, a, b, k, tile, precision, mesh,
                               approx_recall)


def rank_similarity(a, b, k: int = 10, *, tile: int | None = None,
                    precision: str = "fp32", mesh=None,
                    approx_recall: float | None = None) -> float:
  """Rank similarity of the ordered k-NN lists (Wang et al. 2020; ReSi), in [0, 1]: shared
  neighbours count more when near the top of both lists and at similar ranks."""
  return knn._neighbour_metric(rank_from_idx, a, b, k, tile, precision, mesh,
                               approx_recall)


# ---------------------------------------------------------------------------------------
# Second-order cosine similarity.

ROWS = 512  # rows per step: [ROWS, 2k, D] gathered neighbours in flight


def _unit(x: np.ndarray, name: str) -> np.ndarray:
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  if np.any(norm == 0):
    raise ValueError(f"second_order_cosine: {int((norm == 0).sum())} row(s) of {name} are "
                     "all zero (cosine distance undefined); drop them")
  return (x / norm).astype(np.float32)


def _soc_rows(xa, xb, ia, ib, pb):
  """Per-row second-order cosine with b's rows in the order pb (b' = b[pb]).

  xa, xb: unit rows [N, D]; ia: a's lists [N, k]; ib: b' 's lists [N, k] (already
  relabelled). Returns [N] float32 (NaN where a distance vector is all zero)."""
  n = ia.shape[0]

  def row(args):  # one sample: its index, its k neighbours in a and in b'
    r, na, nb = args
    ja = jnp.concatenate([na, nb])  # [2k]
    # cosines to both lists in a and in b': [D] x [2k, D] -> [2k]
    ca = jnp.dot(xa[ja], xa[r], precision=lax.Precision.HIGHEST)
    cb = jnp.dot(xb[pb[ja]], xb[pb[r]], precision=lax.Precision.HIGHEST)
    # the union: b's neighbours that are also a's count once (drop their second slot)
    dup = jnp.any(nb[:, None] == na[None, :], axis=1)
    keep = jnp.concatenate([jnp.ones_like(dup), ~dup])
    da, db = jnp.where(keep, 1.0 - ca, 0.0), jnp.where(keep, 1.0 - cb, 0.0)
    return jnp.sum(da * db) / jnp.sqrt(jnp.sum(da * da) * jnp.sum(db * db))

  rid = jnp.arange(n, dtype=jnp.int32)
  # lax.map in batches: [ROWS, 2k, D] gathered rows in flight, never N x N
  return lax.map(row, (rid, ia, ib), batch_size=min(n, ROWS))


def _soc_batch(perms, xa, xb, ia, ib):
  return jax.vmap(lambda p: jnp.mean(_soc_rows(xa, xb, ia, nulls.relabel(ib, p), p)))(perms)


_soc_one = jax.jit(lambda xa, xb, ia, ib: _soc_rows(xa, xb, ia, ib, jnp.arange(
    xa.shape[0], dtype=jnp.int32)))


def _soc_parts(a, b, k, tile, mesh):
  a, b = _checks.pair(a, b)
  k = _checks.check_k(k, a.shape[0])
  xa, xb = _unit(a, "a"), _unit(b, "b")
  ia = knn._knn_checked(xa, k, tile=tile, precision="fp32", mesh=mesh)[1]
  ib = knn._knn_checked(xb, k, tile=tile, precision="fp32", mesh=mesh)[1]
  return jnp.asarray(xa), jnp.asarray(xb), ia, ib


def _check_finite(v):
  if not np.all(np.isfinite(v)):
    raise ValueError("second_order_cosine is undefined: some sample has cosine distance 0 "
                     "to all of its neighbours in one space (duplicated samples); drop "
                     "the duplicates")
  return v


def second_order_cosine(a, b, k: int = 10, *, tile: int | None = None,
                        mesh=None) -> float:
  """Second-order cosine similarity (Hamilton et al. 2016; ReSi), in [0, 1]: for each i,
  the cosine between its cosine distances to U_i = N_A(i) ∪ N_B(i) in a and in b; mean
  over i. Rows are l2-normalised (cosine neighbours and distances). O(N k D)."""
  xa, xb, ia, ib = _soc_parts(a, b, k, tile, mesh)
  return float(np.mean(_check_finite(np.asarray(_soc_one(xa, xb, ia, ib), np.float64))))


SOC_BATCH = 2  # nulls per step


def second_order_cosine_null(a, b, k: int = 10, *, tile: int | None = None, mesh=None):
  """b's lists relabelled and the O(N k D) inner products with the permuted rows a null."""
  xa, xb, ia, ib = _soc_parts(a, b, k, tile, mesh)
  fn = nulls.batch_program(_soc_batch)

  class Model:
    def values(self, perms):
      return _check_finite(np.asarray(nulls.map_nulls(fn, perms, (xa, xb, ia, ib),
                                                      batch=SOC_BATCH, mesh=mesh), np.float64))

  return Model()

