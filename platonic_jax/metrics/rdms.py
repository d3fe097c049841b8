"""Representational similarity analysis (Kriegeskorte et al. 2008; rsatoolbox): the
correlation between the two representational dissimilarity matrices' upper triangles.

RDMs (as rsatoolbox's ``calc_rdm``): "correlation" 1 − Pearson r of the two rows (each
row centred over its features), "cosine" 1 − cos, "euclidean" the squared Euclidean
distance (rsatoolbox divides it by D; neither comparison sees a scale).

* ``compare="pearson"`` is exact in feature space. Every RDM entry is f_ij = σ c_ij +
  u_i + u_j + const with C = Y_cY_cᵀ the centred Gram of the rows' transform Y (unit rows
  for correlation / cosine, σ = 1, u_i = μ·(y_i − μ); the raw rows for euclidean, σ = −2,
  u_i = ‖y_c,i‖² centred). Pearson ignores the constant, and every sum over the
  N(N − 1)/2 pairs is one of ‖Y_cᵀY'_c‖²_F and four per-row dots (``_pair_sums``):
  O(N D²), never N x N. A null is ‖Y_cᵀ P Y'_c‖² plus four O(N) dots.
* ``compare="spearman"`` needs the ranks of all pairs: exact over all N(N − 1)/2 pairs
  while they are at most ``max_pairs``, else over ``max_pairs`` pairs drawn uniformly
  (seeded by ``pair_seed``, ``rsa_pairs``) — an estimate of the full value (standard error
  ~ (1 − ρ²)/√max_pairs). Memory O(max_pairs), never N x N. A null recomputes b's
  dissimilarities on the permuted pairs and their ranks: O(max_pairs · (Db + log)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.metrics import _checks, kernels, nulls

RDMS = ("correlation", "cosine", "euclidean")
COMPARISONS = ("pearson", "spearman")
MAX_PAIRS = 2_000_000  # all pairs up to N = 2000 (the experiment's test split)


def _transform(x: np.ndarray, rdm: str, name: str) -> np.ndarray:
  if rdm not in RDMS:
    raise ValueError(f"rdm must be one of {RDMS}, got {rdm!r}")
  if rdm == "euclidean":
    return x
  y = x - x.mean(1, keepdims=True) if rdm == "correlation" else x
  norm = np.linalg.norm(y, axis=1, keepdims=True)
  if np.any(norm == 0):
    what = "constant over its features" if rdm == "correlation" else "all zero"
    raise ValueError(f"rsa(rdm={rdm!r}): {int((norm == 0).sum())} row(s) of {name} are {what}, "
                     "so their dissimilarity is undefined; drop them or use rdm='euclidean'")
  return (y / norm).astype(np.float32)


def _side(y: np.ndarray, rdm: str):
  """(Y_c float32, σ, d = diag C, ũ) of one side, the vectors float64 [N]."""
  mu = y.mean(0, dtype=np.float64)
  yc = (y - mu).astype(np.float32)
  d = np.sum(np.square(yc, dtype=np.float64), 1)
  if rdm == "euclidean":
    return yc, -2.0, d, d - d.mean()
  return yc, 1.0, d, yc.astype(np.float64) @ mu


def _pair_sums(gram_fro2, sig_a, sig_b, da, db, ua, ub, dots=None):
  """Σ_{i<j} f^a_ij f^b_ij (U = Σũ = 0); dots: (d_a·d_b, ũ_b·d_a, ũ_a·d_b, ũ_a·ũ_b)."""
  n = len(da)
  dd, ubda, uadb, uu = dots if dots is not None else (da @ db, ub @ da, ua @ db, ua @ ub)
  return 0.5 * (sig_a * sig_b * (gram_fro2 - dd) - 2 * sig_a * ubda - 2 * sig_b * uadb
                + (2 * n - 4) * uu)


def _pearson_parts(a, b, rdm, mesh):
  a, b = _checks.kernel_pair(a, b, "rsa")
  if a.shape[0] < 3:
    raise ValueError(f"rsa needs at least 3 samples (2 dissimilarities), got N = {a.shape[0]}")
  sa, sb = _side(_transform(a, rdm, "a"), rdm), _side(_transform(b, rdm, "b"), rdm)
  gaa, gbb, gab = kernels._row_stats(sa[0], sb[0], "center", mesh)
  fro2 = lambda g: float(jnp.sum(jnp.square(g)))
  n = a.shape[0]
  m = n * (n - 1) / 2
  s_a, s_b = -sa[1] * sa[2].sum() / 2, -sb[1] * sb[2].sum() / 2  # Σ_{i<j} f
  var = lambda s, f2: _pair_sums(f2, s[1], s[1], s[2], s[2], s[3], s[3])
  va = var(sa, fro2(gaa)) - s_a ** 2 / m
  vb = var(sb, fro2(gbb)) - s_b ** 2 / m
  den = _checks.positive_denominator(va, vb, "rsa")

  def corr(gab_fro2, dots=None):
    return (_pair_sums(gab_fro2, sa[1], sb[1], sa[2], sb[2], sa[3], sb[3], dots)
            - s_a * s_b / m) / den

  return sa, sb, fro2(gab), corr


def rsa_pairs(n: int, max_pairs: int = MAX_PAIRS, pair_seed: int = 0):
  """The pairs (i, j) Spearman RSA ranks: all i < j when N(N − 1)/2 <= max_pairs, else
  ``max_pairs`` pairs drawn uniformly (with replacement) from ``default_rng(pair_seed)``."""
  if isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)) or max_pairs < 2:
    raise ValueError(f"max_pairs must be an integer >= 2, got {max_pairs!r}")
  if n * (n - 1) // 2 <= max_pairs:
    i, j = np.triu_indices(n, 1)
    return i.astype(np.int32), j.astype(np.int32)
  rng = np.random.default_rng(pair_seed)
  i = rng.integers(0, n, max_pairs)
  j = rng.integers(0, n - 1, max_pairs)
  j = j + (j >= i)
  return i.astype(np.int32), j.astype(np.int32)


@jax.jit
def _pair_values(y, i, j):  # [M] similarities (unit rows) or squared distances
  return jnp.sum(y[i] * y[j], 1)


@jax.jit
def _pair_sqdist(y, i, j):
  return jnp.sum(jnp.square(y[i] - y[j]), 1)


PAIR_CHUNK = 1 << 18


def _dissimilarities(y, rdm, i, j) -> np.ndarray:
  fn = _pair_sqdist if rdm == "euclidean" else _pair_values
  yj = jnp.asarray(y)
  return np.concatenate([np.asarray(fn(yj, i[s:s + PAIR_CHUNK], j[s:s + PAIR_CHUNK]))
                         for s in range(0, len(i), PAIR_CHUNK)])


def _ranks(v: np.ndarray) -> np.ndarray:
  import scipy.stats  # noqa: PLC0415
  r = scipy.stats.rankdata(v)  # average ranks for ties, as rsatoolbox / scipy.spearmanr
  return r - r.mean()


def _spearman_parts(a, b, rdm, max_pairs, pair_seed):
  a, b = _checks.kernel_pair(a, b, "rsa")
  ya, yb = _transform(a, rdm, "a"), _transform(b, rdm, "b")
  i, j = rsa_pairs(a.shape[0], max_pairs, pair_seed)
  ra = _ranks(_dissimilarities(ya, rdm, i, j))

  def corr(yb_rows):
    rb = _ranks(_dissimilarities(yb_rows, rdm, i, j))
    den = np.sqrt((ra @ ra) * (rb @ rb))
    if not den > 0:
      raise ValueError("rsa(compare='spearman') is undefined: every dissimilarity of a "
                       "side ties")
    return float(ra @ rb / den)

  return yb, corr


def _check(rdm, compare):
  if rdm not in RDMS:
    raise ValueError(f"rdm must be one of {RDMS}, got {rdm!r}")
  if compare not in COMPARISONS:
    raise ValueError(f"compare must be one of {COMPARISONS}, got {compare!r}")


def rsa(a, b, rdm: str = "correlation", compare: str = "pearson", *,
        max_pairs: int = MAX_PAIRS, pair_seed: int = 0, mesh=None) -> float:
  """RSA: the ``compare`` correlation of a's and b's ``rdm`` RDMs over the pairs i < j.

  a: [N, Da], b: [N, Db], N >= 3; rdm "correlation" | "cosine" | "euclidean";
  compare "pearson" (exact, feature space) | "spearman" (exact over all pairs up to
  ``max_pairs``, else a seeded uniform sample of that many: ``rsa_pairs``). In [−1, 1].
  Equals rsatoolbox's ``compare(calc_rdm(a, method=rdm), calc_rdm(b, ...), method="corr"
  | "spearman")`` and scipy's pdist + pearsonr / spearmanr on the same pairs. Invariant to
  rotation and isotropic scaling of either side; "correlation" also to a shift of each
  row, the others to translation of either side only through the RDM kind.
  """
  _check(rdm, compare)
  if compare == "pearson":
    *_, gab_fro2, corr = _pearson_parts(a, b, rdm, mesh)
    return float(np.clip(corr(gab_fro2), -1.0, 1.0))
  yb, corr = _spearman_parts(a, b, rdm, max_pairs, pair_seed)
  return corr(yb)


def rsa_null(a, b, rdm: str = "correlation", compare: str = "pearson", *,
             max_pairs: int = MAX_PAIRS, pair_seed: int = 0, mesh=None):
  """Pearson: one cross product and four O(N) dots a null (``BilinearNull``); Spearman:
  a's ranks kept, b's dissimilarities on the permuted pairs re-ranked each null."""
  _check(rdm, compare)
  if compare == "pearson":
    sa, sb, _, corr = _pearson_parts(a, b, rdm, mesh)
    # dots per null: (d_a·d_b∘π, ũ_b∘π·d_a, ũ_a·d_b∘π, ũ_a·ũ_b∘π)
    us = np.stack([sa[2], sa[2], sa[3], sa[3]])
    vs = np.stack([sb[2], sb[3], sb[2], sb[3]])
    return nulls.BilinearNull(sa[0], sb[0], us, vs, mesh=mesh, finish=lambda fro2, dots:
                              np.clip(corr(fro2, dots.T), -1.0, 1.0))
  yb, corr = _spearman_parts(a, b, rdm, max_pairs, pair_seed)

  class Model:
    def values(self, perms):
      return np.array([corr(yb[p]) for p in perms])

  return Model()
