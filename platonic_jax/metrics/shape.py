"""Shape metrics (Williams et al. 2021, "Generalized shape metrics on neural
representations"; netrep ``ahwillia/netrep``, ``LinearMetric``): exact in feature space.

With A_c, B_c the column-centred features and Z(α) netrep's partial whitener,

    cos θ = ‖A_wᵀ B_w‖_* / (‖A_w‖_F ‖B_w‖_F),   A_w = A_c Z_a,  B_w = B_c Z_b,
    Z = V diag(α + (1 − α) max(λ, 1e-7)^(-1/2)) Vᵀ,  A_cᵀA_c = V diag(λ) Vᵀ,

and θ ∈ [0, π/2] is netrep's angular distance (``LinearMetric(alpha).fit(a, b).score(a,
b)``: the rotation that best aligns A_w to B_w is the polar factor of A_wᵀB_w, after
which ⟨A_w Q, B_w⟩ = ‖A_wᵀB_w‖_*). Everything is a function of the [D, D] Grams:
O(N D²) to accumulate, O(D³) after, never N x N. netrep zero-pads the narrower side to
a common width; that changes neither the nuclear norm nor the norms, so the widths may
differ here as there. Its variance-preserving rescale of Z is one scalar per side, which
cos θ ignores.
"""

from __future__ import annotations

import numpy as np

from platonic_jax.metrics import _checks, kernel_nulls, kernels, nulls

EIGVAL_TOL = 1e-7  # netrep's ``whiten(eigval_tol=1e-7)``: on the unnormalised A_cᵀA_c


def whitener(gram: np.ndarray, alpha: float) -> np.ndarray:
  """netrep's partial whitening matrix Z [D, D] of a centred Gram A_cᵀA_c (α = 1: I;
  α = 0: full whitening)."""
  if alpha > 1 - EIGVAL_TOL:
    return np.eye(gram.shape[0])
  lam, v = kernels.host_eigh(gram)
  d = alpha + (1 - alpha) * np.maximum(lam, EIGVAL_TOL) ** -0.5
  return (v * d[None, :]) @ v.T


def _check_alpha(alpha) -> float:
  if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
    raise ValueError(f"alpha must be in [0, 1] (1: rotations only, 0: any invertible "
                     f"linear map), got {alpha!r}")
  return float(alpha)


def _parts(a, b, alpha, mesh, metric):
  """(Z_a, Z_b, ‖A_w‖_F ‖B_w‖_F, A_wᵀB_w) in float64."""
  a, b = _checks.kernel_pair(a, b, metric)
  gaa, gbb, gab = kernels.centred_grams(a, b, mesh)
  za, zb = whitener(gaa, alpha), whitener(gbb, alpha)
  # ‖A_w‖²_F = tr(Zᵀ A_cᵀA_c Z)
  norms = np.sqrt(max(np.sum(za * (gaa @ za)), 0.0) * max(np.sum(zb * (gbb @ zb)), 0.0))
  if not norms > 0:
    raise ValueError(f"{metric} is undefined: a whitened side has zero norm")
  return a, b, za, zb, norms, za.T @ gab @ zb


def _finish(cos: float | np.ndarray, angular: bool):
  cos = np.clip(cos, 0.0, 1.0)
  return np.arccos(cos) if angular else cos


def shape_metric(a, b, alpha: float = 1.0, *, angular: bool = False, mesh=None) -> float:
  """netrep's linear shape metric with partial whitening ``alpha`` ∈ [0, 1].

  Returns cos θ = ‖A_wᵀB_w‖_* / (‖A_w‖_F ‖B_w‖_F) in [0, 1] (larger = more similar), or
  θ = arccos of it in [0, π/2] with ``angular=True`` (= ``netrep.metrics.LinearMetric(
  alpha, center_columns=True, zero_pad=True).fit(a, b).score(a, b)``). a: [N, Da],
  b: [N, Db]. α = 1: rotations only (``procrustes``); α = 0: any invertible linear map
  (then cos θ = Σ ρ_i / sqrt(rank a · rank b), ρ the canonical correlations).
  Invariant to translations and rotations of either side, and to isotropic
  scaling; α < 1 adds partial invariance to invertible linear maps (netrep's whitener
  mixes α with λ^(-1/2) of the unnormalised Gram, so for 0 < α < 1 the value also
  depends on the features' overall scale, as in netrep).
  """
  alpha = _check_alpha(alpha)
  *_, norms, cross = _parts(a, b, alpha, mesh, "shape_metric")
  return float(_finish(np.sum(kernels.host_svd(cross, compute_uv=False)) / norms, angular))


def procrustes(a, b, *, angular: bool = False, mesh=None) -> float:
  """Orthogonal Procrustes similarity ‖A_cᵀB_c‖_* / (‖A_c‖_F ‖B_c‖_F) in [0, 1] of the
  centred features (Ding et al. 2021; netrep ``LinearMetric(alpha=1)``), or its angular
  distance arccos(·) with ``angular=True``. Invariant to translation, rotation and
  isotropic scaling of either side. = ``shape_metric(a, b, alpha=1)``."""
  return shape_metric(a, b, 1.0, angular=angular, mesh=mesh)


def shape_null(a, b, alpha: float = 1.0, *, angular: bool = False, mesh=None):
  """Nulls of ``shape_metric``: Z_a, Z_b and the norms are permutation invariant; each
  null is A_wᵀ P B_w (one N·Da·Db product) and its singular values (O(D³) on the host)."""
  alpha = _check_alpha(alpha)
  a, b, za, zb, norms, _ = _parts(a, b, alpha, mesh, "shape_metric")
  left = kernel_nulls.centred(a) @ za.astype(np.float32)  # [N, Da] x [Da, Da]
  right = kernel_nulls.centred(b) @ zb.astype(np.float32)

  def finish(grams, dots):
    return _finish(kernels.host_svd(grams, compute_uv=False).sum(1) / norms, angular)

  return nulls.BilinearNull(left, right, keep_gram=True, finish=finish, mesh=mesh)


def procrustes_null(a, b, *, angular: bool = False, mesh=None):
  return shape_null(a, b, 1.0, angular=angular, mesh=mesh)
