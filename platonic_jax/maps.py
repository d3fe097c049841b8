"""Closed-form alignments of two modalities: the baselines the trained adapters must beat.

All functions take paired features ``x: [N, Dx]``, ``y: [N, Dy]`` (row i of both describe
the same sample), work in float64 NumPy (these are one-off SVDs of modest matrices, and
float64 keeps the small singular values of ``perfect_alignment`` meaningful) and return
small frozen dataclasses whose ``apply*`` methods map new features.

- ``procrustes(x, y)``: orthogonal map + mean shift, ``y ≈ (x − μ_x) Q + μ_y`` (seed 001:
  two contrastive models are related by one orthogonal Q up to a global mean shift, and the
  Q fitted on images also maps the texts).
- ``cca(x, y, dim)``: canonical correlation analysis (exact, by SVD of the whitened
  cross-covariance; scikit-learn's NIPALS ``CCA`` converges to the same correlations).
- ``perfect_alignment(x, y, dim)``: seed 003's inverse problem ``W_1 x_i = W_2 y_i``,
  solved by the left null space of the stacked modalities.
- ``pca(x, dim)``: the common-dimension reduction used before Procrustes when Dx != Dy.
- ``lda_fit`` / ``cross_modal_transfer``: seed 003's Gaussian cross-modal transfer — a
  Gaussian (shared-covariance) classifier fit on one modality's aligned features, scored
  on the other's. Hand-written (a few lines of NumPy) because scikit-learn is only a test
  dependency; the tests compare it with ``sklearn.discriminant_analysis``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _as_2d(name: str, a) -> np.ndarray:
  a = np.asarray(a, dtype=np.float64)
  if a.ndim != 2:
    raise ValueError(f"{name} must be a [N, D] matrix, got shape {a.shape}; "
                     "reshape layer-stacked [L, N, D] features to one layer first.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contains NaN or Inf; check the features that produced it.")
  return a


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = _as_2d("x", x), _as_2d("y", y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x and y must be paired row by row: x has {x.shape[0]} rows, "
                     f"y has {y.shape[0]}.")
  if x.shape[0] < 2:
    raise ValueError(f"need at least 2 paired samples, got {x.shape[0]}")
  return x, y


def _check_dim(dim: int, limit: int, what: str) -> int:
  dim = int(dim)
  if not 1 <= dim <= limit:
    raise ValueError(f"dim={dim} must be in [1, {limit}] ({what}).")
  return dim


# ---------------------------------------------------------------------------------------
# Orthogonal Procrustes with mean shift (seed 001).


@dataclasses.dataclass(frozen=True)
class ProcrustesMap:
  """``apply(x) = (x − mean_x) Q + mean_y``.

  Q: [Dx, Dy] with orthonormal rows (Dx <= Dy) or columns (Dx >= Dy); square orthogonal
  when Dx == Dy. ``residual``: the relative fit error ‖(X−μ_x)Q − (Y−μ_y)‖_F / ‖Y−μ_y‖_F on
  the fitting data (0 = exact orthogonal relation).
  """
  Q: np.ndarray
  mean_x: np.ndarray
  mean_y: np.ndarray
  residual: float

  def apply(self, x) -> np.ndarray:
    """[M, Dx] -> [M, Dy]: the same map for any modality living in the x space."""
    x = _as_2d("x", x)
    if x.shape[1] != self.Q.shape[0]:
      raise ValueError(f"map expects {self.Q.shape[0]} features, got {x.shape[1]}")
    return (x - self.mean_x) @ self.Q + self.mean_y  # [M, Dx] x [Dx, Dy] -> [M, Dy]


def procrustes(x, y, *, center: bool = True) -> ProcrustesMap:
  """Orthogonal Procrustes with mean shift: argmin_Q ‖(X − μ_x) Q − (Y − μ_y)‖_F.

  Args:
    x: [N, Dx] source features, y: [N, Dy] targets (row i paired). When Dx != Dy the
      minimiser over matrices with orthonormal rows/columns is returned (the same SVD
      formula); reduce both to a common dimension first (``pca``) for a square Q.
    center: subtract the means (the "global mean shift" of seed 001). False fits a pure
      rotation through the origin (``scipy.linalg.orthogonal_procrustes``).

  The map fitted on one modality's pairs (e.g. images of model A -> images of model B)
  applies unchanged to the other modality (texts of A -> texts of B) — seed 001's claim,
  which ``residual`` of the transferred map measures.
  """
  x, y = _pair(x, y)
  mean_x = x.mean(0) if center else np.zeros(x.shape[1])
  mean_y = y.mean(0) if center else np.zeros(y.shape[1])
  xc, yc = x - mean_x, y - mean_y
  # Q = U Vᵀ from the SVD of the cross-covariance XᵀY (Schönemann 1966).
  u, _, vt = np.linalg.svd(xc.T @ yc, full_matrices=False)  # [Dx, N] x [N, Dy] -> [Dx, Dy]
  q = u @ vt  # [Dx, r] x [r, Dy] -> [Dx, Dy]
  denom = np.linalg.norm(yc)
  residual = float(np.linalg.norm(xc @ q - yc) / denom) if denom > 0 else 0.0
  return ProcrustesMap(Q=q, mean_x=mean_x, mean_y=mean_y, residual=residual)


# ---------------------------------------------------------------------------------------
# PCA (to bring two modalities to a common dimension).


@dataclasses.dataclass(frozen=True)
class PCAMap:
  """``apply(x) = (x − mean) components``; components: [D, dim], orthonormal columns."""
  components: np.ndarray
  mean: np.ndarray
  explained_variance: np.ndarray  # [dim], variance along each component

  def apply(self, x) -> np.ndarray:
    x = _as_2d("x", x)
    return (x - self.mean) @ self.components  # [M, D] x [D, dim] -> [M, dim]


def pca(x, dim: int) -> PCAMap:
  """Principal components of ``x: [N, D]``, ``dim <= min(N, D)``; sign fixed so the
  largest-magnitude loading of each component is positive (deterministic output)."""
  x = _as_2d("x", x)
  dim = _check_dim(dim, min(x.shape), "at most min(N, D) principal components exist")
  mean = x.mean(0)
  xc = x - mean
  # The [D, D] covariance, not an SVD of [N, D]: the same top components for a fraction
  # of the memory traffic when N >> D (20k x 768 features: one syrk and a 768² eigh).
  evals, evecs = np.linalg.eigh(xc.T @ xc)  # [D, N] x [N, D] -> [D, D]
  order = np.argsort(evals)[::-1][:dim]
  comps = evecs[:, order]
  signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(dim)])
  comps = comps * np.where(signs == 0, 1.0, signs)
  return PCAMap(components=comps, mean=mean,
                explained_variance=np.maximum(evals[order], 0) / max(x.shape[0] - 1, 1))


# ---------------------------------------------------------------------------------------
# CCA.


@dataclasses.dataclass(frozen=True)
class CCAMap:
  """Canonical directions: ``apply_x(x) = (x − mean_x) Wx`` ([M, Dx] -> [M, dim]), likewise y.

  Each projected side has unit variance per component on the fitting data and the
  component-wise correlation between the two sides is ``correlations`` (descending).
  """
  Wx: np.ndarray
  Wy: np.ndarray
  mean_x: np.ndarray
  mean_y: np.ndarray
  correlations: np.ndarray

  def apply_x(self, x) -> np.ndarray:
    return (_as_2d("x", x) - self.mean_x) @ self.Wx  # [M, Dx] x [Dx, dim] -> [M, dim]

  def apply_y(self, y) -> np.ndarray:
    return (_as_2d("y", y) - self.mean_y) @ self.Wy  # [M, Dy] x [Dy, dim] -> [M, dim]


def _whitener(a: np.ndarray, reg: float, rtol: float) -> np.ndarray:
  """Returns T ([D, r]) with A T having orthonormal columns (A centred [N, D]).

  From the eigendecomposition of AᵀA ([D, D]: cheap for N >> D). Directions with
  eigenvalue below ``max(rtol, 1e-13) · λ_max`` are dropped (rank deficiency: D > N or
  collinear features; 1e-13 is the float64 noise floor of a Gram matrix); ``reg`` adds
  ridge μ·I with μ = reg · the mean eigenvalue (regularised CCA).
  """
  lam, v = np.linalg.eigh(a.T @ a)  # [D, N] x [N, D] -> [D, D]
  keep = lam > max(rtol, 1e-13) * max(lam[-1], 1e-300)
  lam, v = lam[keep][::-1], v[:, keep][:, ::-1]
  # AᵀA + μI = V (Λ + μ) Vᵀ on the kept subspace, so T = V (Λ + μ)^(-1/2).
  mu = reg * lam.sum() / a.shape[1]
  return v / np.sqrt(lam + mu)


def cca(x, y, dim: int, *, reg: float = 0.0, rtol: float = 1e-12) -> CCAMap:
  """Canonical correlation analysis of ``x: [N, Dx]`` and ``y: [N, Dy]``.

  Exact: whiten each centred side (eigendecomposition of its covariance), then the SVD
  of the whitened cross-covariance gives the canonical correlations (singular values)
  and directions.
  ``reg > 0`` is ridge-regularised CCA (needed when D approaches N: unregularised CCA
  then finds spurious correlations of 1). ``dim <= min(rank x, rank y)``.
  """
  x, y = _pair(x, y)
  mean_x, mean_y = x.mean(0), y.mean(0)
  xc, yc = x - mean_x, y - mean_y
  tx, ty = _whitener(xc, reg, rtol), _whitener(yc, reg, rtol)
  dim = _check_dim(dim, min(tx.shape[1], ty.shape[1]),
                   f"ranks of x and y are {tx.shape[1]} and {ty.shape[1]}")
  cross = tx.T @ (xc.T @ yc) @ ty  # [rx, Dx] x [Dx, Dy] x [Dy, ry] -> [rx, ry]
  a, rho, bt = np.linalg.svd(cross, full_matrices=False)
  n1 = np.sqrt(x.shape[0] - 1)  # unit variance (ddof=1) per canonical variate
  wx = tx @ a[:, :dim] * n1  # [Dx, rx] x [rx, dim] -> [Dx, dim]
  wy = ty @ bt[:dim].T * n1  # [Dy, ry] x [ry, dim] -> [Dy, dim]
  return CCAMap(Wx=wx, Wy=wy, mean_x=mean_x, mean_y=mean_y,
                correlations=np.clip(rho[:dim], 0.0, 1.0))


# ---------------------------------------------------------------------------------------
# Perfect alignment (seed 003).


@dataclasses.dataclass(frozen=True)
class PerfectAlignment:
  """Seed 003's solution: ``z¹ = x W1ᵀ`` and ``z² = y W2ᵀ`` with ``W1 x_i ≈ W2 y_i``.

  W1: [dim, Dx], W2: [dim, Dy]; the rows of [W1, −W2] are the left-singular vectors of the
  stacked data D = [Xᵀ; Yᵀ] ([Dx+Dy, N]) with the ``dim`` smallest singular values (an
  orthonormal basis of its left null space when that is ``dim``-dimensional).
  ``singular_values``: those ``dim`` values; Σ_i ‖W1 x_i − W2 y_i‖² = Σ singular_values².
  """
  W1: np.ndarray
  W2: np.ndarray
  mean_x: np.ndarray
  mean_y: np.ndarray
  singular_values: np.ndarray

  def apply_x(self, x) -> np.ndarray:
    return (_as_2d("x", x) - self.mean_x) @ self.W1.T  # [M, Dx] x [Dx, dim] -> [M, dim]

  def apply_y(self, y) -> np.ndarray:
    return (_as_2d("y", y) - self.mean_y) @ self.W2.T  # [M, Dy] x [Dy, dim] -> [M, dim]

  def alignment_error(self, x, y) -> float:
    """Seed 003 eq. 4: mean_i ‖W1 x_i − W2 y_i‖₂ (0 = the two modalities coincide)."""
    return float(np.linalg.norm(self.apply_x(x) - self.apply_y(y), axis=1).mean())

  def reconstruction_error(self, x, z, side: str = "x") -> float:
    """Seed 003 eq. 5: mean_i ‖ẑ_i − z_i‖₂ with ẑ from modality ``side`` ("x" or "y").

    Only defined where the true latent ``z: [N, dim]`` is known (synthetic data). The
    solution is unique only up to an invertible map of the latent space, so this is
    large in general even when the alignment error is ~0 (seed 003, Table 1).
    """
    if side not in ("x", "y"):
      raise ValueError(f"side must be 'x' or 'y', got {side!r}")
    z = _as_2d("z", z)
    zh = self.apply_x(x) if side == "x" else self.apply_y(x)
    if zh.shape != z.shape:
      raise ValueError(f"z has shape {z.shape}, the reconstruction {zh.shape}")
    return float(np.linalg.norm(zh - z, axis=1).mean())


def perfect_alignment(x, y, dim: int, *, center: bool = False,
                      method_threshold: float = 1e9) -> PerfectAlignment:
  """Seed 003: solve W D = 0 for W = [W1, −W2] ([dim, Dx+Dy]) by SVD of D = [Xᵀ; Yᵀ].

  Args:
    x: [N, Dx], y: [N, Dy] paired samples (the seed writes them as columns).
    dim: latent dimension k; ``dim < Dx + Dy``.
    center: subtract the per-modality means first (off in the seed: its modalities are
      linear images of z without offsets). Centre real features, where a constant offset
      would otherwise occupy a singular direction.
    method_threshold: above N·(Dx+Dy)² = this, the singular vectors come from the Gram
      matrix (4x less work) instead of an exact QR + SVD; see the code comment.

  Caveat (read before trusting the alignment error on real features): the smallest
  singular directions of D may lie entirely inside one modality (a low-variance direction
  of y alone gives W1 = 0, W2 ≠ 0: tiny "alignment error", nothing aligned). The report
  therefore also shows ‖W1‖_F and ‖W2‖_F. With each modality whitened first, this method
  reduces to CCA (the smallest singular values of D are sqrt(1 − ρ) of the canonical
  correlations ρ).
  """
  x, y = _pair(x, y)
  dx, dy = x.shape[1], y.shape[1]
  dim = _check_dim(dim, dx + dy - 1, f"the stacked data has Dx+Dy = {dx + dy} rows")
  mean_x = x.mean(0) if center else np.zeros(dx)
  mean_y = y.mean(0) if center else np.zeros(dy)
  a = np.concatenate([x - mean_x, y - mean_y], axis=1)  # Dᵀ: [N, Dx+Dy]
  n, dt = a.shape
  s_full = np.zeros(dt)
  # The left singular vectors of D = Aᵀ are the right singular vectors of A.
  if n * dt * dt > method_threshold:
    # Large inputs (20k x 1280 features): eigenvectors of the float64 Gram AᵀA, a quarter
    # of the work of a QR. It squares the relative error of the smallest singular values
    # (below ~1e-8 of the largest they are noise): that perturbs which near-null
    # directions are chosen, not the reported errors, which are computed from the data.
    lam, u = np.linalg.eigh(a.T @ a)  # [Dt, N] x [N, Dt] -> [Dt, Dt], ascending
    u = u[:, ::-1]
    s_full[:] = np.sqrt(np.maximum(lam[::-1], 0))
  else:
    # Small inputs: exact. For N > Dt the triangular factor of A = QR has A's singular
    # values and right vectors (Q, [N, Dt], is never formed); otherwise the full SVD.
    if n > dt:
      a = np.linalg.qr(a, mode="r")  # [Dt, Dt]
    _, s, vt = np.linalg.svd(a, full_matrices=True)
    u = vt.T  # [Dt, Dt]
    s_full[:s.shape[0]] = s
  basis = u[:, dx + dy - dim:][:, ::-1]  # the dim smallest, smallest first: [Dx+Dy, dim]
  sv = s_full[dx + dy - dim:][::-1]
  return PerfectAlignment(W1=basis[:dx].T, W2=-basis[dx:].T, mean_x=mean_x, mean_y=mean_y,
                          singular_values=sv)


# ---------------------------------------------------------------------------------------
# Gaussian cross-modal transfer (seed 003).


@dataclasses.dataclass(frozen=True)
class GaussianClassifier:
  """Linear discriminant analysis: class means + one shared covariance, equal priors
  optional. ``predict(x: [M, D]) -> [M]`` labels, ``score`` the accuracy."""
  classes: np.ndarray
  means: np.ndarray        # [C, D]
  precision: np.ndarray    # [D, D], inverse of the (ridge-regularised) pooled covariance
  log_priors: np.ndarray   # [C]

  def decision_function(self, x) -> np.ndarray:
    x = _as_2d("x", x)
    if x.shape[1] != self.means.shape[1]:
      raise ValueError(f"classifier expects {self.means.shape[1]} features, got {x.shape[1]}")
    pm = self.means @ self.precision  # [C, D] x [D, D] -> [C, D]
    # log N(x; μ_c, Σ) up to a constant: xᵀΣ⁻¹μ_c − ½ μ_cᵀΣ⁻¹μ_c + log π_c.
    return x @ pm.T - 0.5 * np.einsum("cd,cd->c", pm, self.means) + self.log_priors

  def predict(self, x) -> np.ndarray:
    return self.classes[self.decision_function(x).argmax(1)]

  def score(self, x, labels) -> float:
    return float((self.predict(x) == np.asarray(labels)).mean())


def lda_fit(x, labels, *, reg: float = 1e-6) -> GaussianClassifier:
  """Fits a shared-covariance Gaussian classifier to ``x: [N, D]`` with integer ``labels: [N]``.

  ``reg`` adds reg · mean-variance · I to the pooled covariance so a singular one (more
  features than samples) still inverts.
  """
  x = _as_2d("x", x)
  labels = np.asarray(labels)
  if labels.shape != (x.shape[0],):
    raise ValueError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
  classes, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
  if classes.shape[0] < 2:
    raise ValueError("need at least 2 classes to fit a classifier")
  means = np.stack([x[inv == c].mean(0) for c in range(classes.shape[0])])
  centred = x - means[inv]
  cov = centred.T @ centred / max(x.shape[0] - classes.shape[0], 1)  # [D, N] x [N, D]
  cov += reg * max(np.trace(cov) / x.shape[1], 1e-300) * np.eye(x.shape[1])
  return GaussianClassifier(classes=classes, means=means, precision=np.linalg.inv(cov),
                            log_priors=np.log(counts / counts.sum()))


def cross_modal_transfer(src_train, labels_train, tgt_test, labels_test,
                         *, src_test=None) -> dict[str, float]:
  """Seed 003's cross-modal transfer in an aligned space.

  Fits ``lda_fit`` on one modality's aligned training features ``src_train: [N, d]`` and
  scores it on the *other* modality's aligned test features ``tgt_test: [M, d]`` (no label
  of the target modality is used). Returns ``{"transfer_acc", "chance"}`` and, when
  ``src_test`` (the source modality's test features) is given, ``"within_acc"``: the
  same classifier on its own modality, the ceiling transfer can reach.
  """
  clf = lda_fit(src_train, labels_train)
  labels_test = np.asarray(labels_test)
  _, counts = np.unique(labels_test, return_counts=True)
  out = {"transfer_acc": clf.score(tgt_test, labels_test),
         "chance": float(counts.max() / counts.sum())}
  if src_test is not None:
    out["within_acc"] = clf.score(src_test, labels_test)
  return out
