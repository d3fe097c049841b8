"""CCA, projection-weighted CCA, linear regression and the RV coefficients, exact in
feature space from the centred [D, D] Grams (``kernels.centred_grams``).

Whiteners: with A_cᵀA_c = V diag(λ) Vᵀ and r = #{λ > RANK_RTOL² λ_max} (the numerical
rank), W_a = V_r diag(λ_r)^(-1/2) [Da, r] makes Q_a = A_c W_a an orthonormal basis of
a's centred column space. The canonical correlations ρ are the singular values of
Q_aᵀQ_b = W_aᵀ (A_cᵀB_c) W_b [ra, rb]. Q_a and Q_b do not change when rows of b are
permuted, so a null is Q_aᵀ P Q_b: one N·ra·rb product (``metrics.nulls``).

References: Hotelling 1936 (CCA); Morcos, Raghu & Bengio 2018 (PWCCA); Kornblith et al.
2019 and ReSi (Klabunde et al. 2024, ``mklabunde/resi``: ``linear_reg``); Robert &
Escoufier 1976 (RV), Smilde et al. 2009 (modified RV).
"""

from __future__ import annotations

import numpy as np

from platonic_jax.metrics import _checks, kernel_nulls, kernels, nulls

RANK_RTOL = 1e-5  # singular values below this fraction of the largest: fp32 rounding


def whitening(gram: np.ndarray) -> np.ndarray:
  """W [D, r]: Q = X_c W has orthonormal columns spanning X_c's numerical column space."""
  lam, v = kernels.host_eigh(gram)
  keep = lam > (RANK_RTOL ** 2) * max(lam[-1], 0.0)
  return v[:, keep] / np.sqrt(lam[keep])[None, :]


def _cca(a, b, metric: str, mesh):
  """(a, b, W_a, W_b, Gram_aa, Q_aᵀQ_b) after the checks every CCA measure shares."""
  a, b = _checks.kernel_pair(a, b, metric)
  n = a.shape[0]
  gaa, gbb, gab = kernels.centred_grams(a, b, mesh)
  wa, wb = whitening(gaa), whitening(gbb)
  ra, rb = wa.shape[1], wb.shape[1]
  if ra + rb > n - 1:
    raise ValueError(
        f"{metric} needs rank a + rank b <= N - 1 (got {ra} + {rb} with N = {n}): with more "
        "directions than samples the two column spaces must intersect and canonical "
        "correlations of 1 appear whatever the data; use more samples or reduce the widths "
        "first (svcca keeps only the top directions)")
  return a, b, wa, wb, gaa, wa.T @ gab @ wb


def mean_cca(a, b, *, mesh=None) -> float:
  """Mean canonical correlation (1/c) Σ ρ_i over all c = min(rank a, rank b) pairs, in
  [0, 1]. a: [N, Da], b: [N, Db] with rank a + rank b <= N - 1. Invariant to any
  invertible linear map and translation of either side (Raghu et al. 2017's "mean CCA",
  SVCCA without the SVD truncation)."""
  *_, m = _cca(a, b, "mean_cca", mesh)
  return float(np.mean(np.clip(kernels.host_svd(m, compute_uv=False), 0.0, 1.0)))


def _pwcca(m: np.ndarray, t: np.ndarray) -> float:
  """Σ α_i ρ_i / Σ α_i from M = Q_aᵀQ_b = U diag(ρ) Vᵀ and T = Q_aᵀ A_c [ra, Da]."""
  u, rho, _ = kernels.host_svd(m, full_matrices=False)  # u [ra, c]
  # h_i = Q_a u_i, orthonormal by construction; α_i = Σ_j |<h_i, a_j>| = Σ_j |(uᵀ T)_ij|.
  alpha = np.abs(u.T @ t).sum(1)
  return float(np.sum(alpha * np.clip(rho, 0.0, 1.0)) / np.sum(alpha))


def pwcca(a, b, *, mesh=None) -> float:
  """Projection-weighted CCA (Morcos et al. 2018), weighted by a's neurons, in [0, 1].

  ρ_i the canonical correlations, h_i = A_c w_i the canonical variates of a (unit norm,
  mutually orthogonal: the orthonormalisation is of the variates in sample space, not of
  the weight vectors w_i — anatome issue #30's bug), α_i = Σ_j |<h_i, a_j>| over a's
  centred neurons a_j; PWCCA = Σ α_i ρ_i / Σ α_i. Asymmetric: the weights are a's.
  Differences from Google's ``compute_pwcca`` (copied by ReSi): it orthonormalises
  u-combinations of the raw neurons without the whitener, adds the neuron means back,
  weighs by the uncentred activations and, in its y branch, reads acts1; those give other
  numbers. a: [N, Da], b: [N, Db], rank a + rank b <= N - 1.
  """
  _, _, wa, _, gaa, m = _cca(a, b, "pwcca", mesh)
  return _pwcca(m, wa.T @ gaa)


def linear_regression(a, b, *, mesh=None) -> float:
  """ReSi's linear-regression similarity ``linear_reg(R=a, Rp=b)``: the R² of the least-
  squares fit of a from b, ‖Q_bᵀA_c‖²_F / ‖A_c‖²_F in [0, 1] (centred columns).

  Direction: a is predicted from b (asymmetric: swap the arguments for b from a). b's
  basis is its numerical column space (ReSi inverts sqrtm(BᵀB), which fails or amplifies
  rounding for rank-deficient b; the same value for full-rank b). Needs rank b <= N - 2:
  a basis of N - 1 centred directions fits any a exactly. Invariant to invertible linear
  maps of b, to rotations and isotropic scaling of a.
  """
  a, b = _checks.kernel_pair(a, b, "linear_regression")
  gaa, gbb, gab = kernels.centred_grams(a, b, mesh)
  wb = _regression_basis(gbb, a.shape[0])
  return float(np.sum(np.square(gab @ wb)) / np.trace(gaa))


def _regression_basis(gbb, n):
  wb = whitening(gbb)
  if wb.shape[1] > n - 2:
    raise ValueError(
        f"linear_regression needs rank b <= N - 2 (got {wb.shape[1]} with N = {n}): b's "
        "centred columns span every direction, so any a is fit exactly (R² = 1); use more "
        "samples or fewer dimensions of b")
  return wb


def rv(a, b, *, adjusted: bool = False, mesh=None) -> float:
  """RV coefficient (Robert & Escoufier 1976): tr(S_ab S_ba) / sqrt(tr S_aa² tr S_bb²) of
  the centred cross-products, in [0, 1] — identical to linear CKA (it is ``cka``).

  ``adjusted=True``: the modified RV of Smilde et al. (2009), with the diagonals of
  A_cA_cᵀ and B_cB_cᵀ removed (their sample-size bias): (‖A_cᵀB_c‖² − Σ q_i r_i) /
  sqrt((‖A_cᵀA_c‖² − Σ q_i²)(‖B_cᵀB_c‖² − Σ r_i²)), q_i = ‖a_c,i‖², r_i = ‖b_c,i‖²; in
  [−1, 1], ~0 for unrelated features at any N and width.
  """
  if not adjusted:
    return kernels.cka(a, b, mesh=mesh)
  return float(_rv_parts(a, b, mesh)[0])


def _rv_parts(a, b, mesh):
  a, b = _checks.kernel_pair(a, b, "rv(adjusted=True)")
  gaa, gbb, gab = kernels.centred_grams(a, b, mesh)
  ac, bc = kernel_nulls.centred(a), kernel_nulls.centred(b)
  q = np.sum(np.square(ac, dtype=np.float64), 1)
  r = np.sum(np.square(bc, dtype=np.float64), 1)
  den = _checks.positive_denominator(np.sum(gaa ** 2) - q @ q, np.sum(gbb ** 2) - r @ r,
                                     "rv(adjusted=True)")
  return (np.sum(gab ** 2) - q @ r) / den, ac, bc, q, r, den


# ---------------------------------------------------------------------------------------
# Permutation nulls (see metrics.nulls): the whiteners and Grams of a and b are invariant.

def _cca_null(a, b, metric, finish, mesh):
  a, b, wa, wb, gaa, _ = _cca(a, b, metric, mesh)
  qa = kernel_nulls.centred(a) @ wa.astype(np.float32)  # [N, ra]
  qb = kernel_nulls.centred(b) @ wb.astype(np.float32)
  return nulls.BilinearNull(qa, qb, keep_gram=True, mesh=mesh,
                            finish=lambda grams, dots: finish(grams, wa.T @ gaa))


def mean_cca_null(a, b, *, mesh=None):
  return _cca_null(a, b, "mean_cca", lambda g, t: np.mean(
      np.clip(kernels.host_svd(g, compute_uv=False), 0.0, 1.0), axis=1), mesh)


def pwcca_null(a, b, *, mesh=None):
  def finish(grams, t):
    with kernels._one_blas_thread():
      return np.array([_pwcca(m, t) for m in grams])
  return _cca_null(a, b, "pwcca", finish, mesh)


def linear_regression_null(a, b, *, mesh=None):
  """‖A_cᵀ P Q_b‖²_F / ‖A_c‖²_F: one N·Da·rb product a null, no SVD."""
  a, b = _checks.kernel_pair(a, b, "linear_regression")
  gaa, gbb, _ = kernels.centred_grams(a, b, mesh)
  wb = _regression_basis(gbb, a.shape[0])
  qb = kernel_nulls.centred(b) @ wb.astype(np.float32)
  return nulls.BilinearNull(kernel_nulls.centred(a), qb, mesh=mesh,
                            finish=lambda fro2, dots: fro2 / np.trace(gaa))


def rv_null(a, b, *, adjusted: bool = False, mesh=None):
  if not adjusted:
    return kernel_nulls.cka_null(a, b, mesh=mesh)
  _, ac, bc, q, r, den = _rv_parts(a, b, mesh)
  return nulls.BilinearNull(ac, bc, q[None], r[None], mesh=mesh,
                            finish=lambda fro2, dots: (fro2 - dots[:, 0]) / den)
