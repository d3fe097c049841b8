"""Permutation-null models of the kernel metrics of ``metrics.kernels`` (linear CKA,
unbiased CKA, CKNNA, SVCCA); see ``metrics.nulls`` for the machinery.

Each ``*_null(a, b, **options)`` returns a model with ``values(perms [K, N]) -> [K]``:
the metric on (a, b[π_k]) for every row π_k, computed from what a row permutation of b
leaves intact. What one null costs:

| metric | kept | per null |
| --- | --- | --- |
| cka (linear) | centred A, B; ‖AᵀA‖_F, ‖BᵀB‖_F | ‖Aᵀ P B‖²_F: one N·Da·Db product |
| unbiased_cka | the same, K̃1, L̃1, diag K, diag L | that product + two O(N) dots |
| cknna | both k-NN lists and similarities, sim(K,K), sim(L,L) | relabel b's lists, O(N k²) |
| svcca | U_a, U_b [N, c] (z-scored, top-c directions) | U_aᵀ P U_b [c, c] and its SVD |
| cka (rbf) | nothing (no cheap form) | a full tiled call |
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.metrics import _checks, kernels, nulls, tiling


def centred(x: np.ndarray) -> np.ndarray:
  """Columns minus their float64 mean, float32 [N, D] (a row permutation commutes)."""
  return kernels._centred(x)


def cka_null(a, b, kernel: str = "linear", sigma: float = 1.0, *,
             tile: int | None = None, mesh=None):
  if kernel != "linear":  # RBF: no structure to keep; each null a full tiled call
    a, b = _checks.pair(a, b)
    return nulls.BruteNull(kernels.cka, a, b, dict(kernel=kernel, sigma=sigma, tile=tile,
                                                   mesh=mesh))
  a, b = _checks.kernel_pair(a, b, "cka")
  gaa, gbb, _ = kernels._row_stats(a, b, "center", mesh)
  sq = lambda g: float(jnp.sum(jnp.square(g)))
  den = _checks.positive_denominator(sq(gaa), sq(gbb), "cka")
  return nulls.BilinearNull(centred(a), centred(b), finish=lambda fro2, dots: fro2 / den,
                            mesh=mesh)


def unbiased_cka_null(a, b, *, mesh=None):
  a, b = _checks.kernel_pair(a, b, "unbiased_cka")
  n = a.shape[0]
  _checks.check_min_n(n, 4, "unbiased_cka")
  s = np.asarray(kernels._row_stats(a, b, "unbiased", mesh), np.float64)
  _, aa, bb, _, qaa, qbb, sk, sl, _, caa, cbb = s
  den = _checks.positive_denominator(kernels._hsic_u(aa - qaa, sk, sk, caa, n),
                                     kernels._hsic_u(bb - qbb, sl, sl, cbb, n), "unbiased_cka")
  ac, bc = centred(a), centred(b)
  # Per row: q_i = |a_i|^2 (diag K) and (K̃1)_i = a_i.(Aᵀ1) - q_i, the same for b.
  q, r = np.sum(ac * ac, 1), np.sum(bc * bc, 1)
  ka, kb = ac @ ac.sum(0) - q, bc @ bc.sum(0) - r
  # tr(K̃ L̃') = |Aᵀ P B|² - Σ q_i r_{π_i};  1ᵀK̃L̃'1 = Σ (K̃1)_i (L̃1)_{π_i}; 1ᵀL̃1 unchanged.
  finish = lambda fro2, dots: kernels._hsic_u(fro2 - dots[:, 0], sk, sl, dots[:, 1], n) / den
  return nulls.BilinearNull(ac, bc, np.stack([q, ka]), np.stack([r, kb]), finish=finish,
                            mesh=mesh)


def _cknna_batch(perms, ia, va, ib, vb, *, batch):
  def one(p):
    mask, lv = kernels._masked_values(ia, va, nulls.relabel(ib, p), vb[p], batch)
    return jnp.stack(kernels._sparse_hsic_sums(ia, mask, va, lv))
  return jax.vmap(one)(perms)


CKNNA_BATCH = 4  # nulls per step


def cknna_null(a, b, k: int | None = 10, *, tile: int | None = None, mesh=None):
  a, b = _checks.kernel_pair(a, b, "cknna")
  n = a.shape[0]
  _checks.check_min_n(n, 4, "cknna")
  k = _checks.check_k(n - 1 if k is None else k, n, minimum=2)
  va, ia = kernels.cknna_lists(a, k, "a", tile=tile, mesh=mesh)
  vb, ib = kernels.cknna_lists(b, k, "b", tile=tile, mesh=mesh)
  den = kernels.cknna_denominator(ia, va, ib, vb, n)
  fn = nulls.batch_program(_cknna_batch, batch=kernels.cknna_batch(n, k))

  class Model:
    def values(self, perms):
      sums = np.asarray(nulls.map_nulls(fn, perms, (ia, va, ib, vb), batch=CKNNA_BATCH,
                                        mesh=mesh), np.float64)  # [K, 4]
      return kernels._hsic_u(*sums.T, n) / den

  return Model()


def zscored(x: np.ndarray) -> np.ndarray:
  """Columns z-scored as SVCCA does (unbiased std; constant columns 0), float32."""
  mean = x.mean(0, dtype=np.float64)
  sd = np.sqrt(np.maximum((np.sum(np.square(x, dtype=np.float64), 0) - len(x) * mean ** 2)
                          / (len(x) - 1), 0.0))
  inv = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
  return ((x - mean) * inv).astype(np.float32)


def svcca_null(a, b, cca_dim: int = 10, *, cap_rank: bool = False, mesh=None):
  pa, pb, _ = kernels.svcca_directions(a, b, cca_dim, cap_rank=cap_rank, mesh=mesh)
  a, b = _checks.pair(a, b)
  # U = Z P: [N, D] x [D, c] -> [N, c], the orthonormal top-c directions of each side.
  ua = zscored(a) @ pa.astype(np.float32)
  ub = zscored(b) @ pb.astype(np.float32)

  def finish(grams, dots):
    rho = kernels.host_svd(grams, compute_uv=False)  # [K, c]
    return np.mean(np.clip(rho, 0.0, 1.0), axis=1)

  return nulls.BilinearNull(ua, ub, keep_gram=True, finish=finish, mesh=mesh)
