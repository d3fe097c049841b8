"""The modality gap (Liang et al., "Mind the Gap: Understanding the Modality Gap in
Multi-modal Contrastive Representation Learning", NeurIPS 2022; seed 002).

For the two ``eval.pair`` sides of a space, on the test split's unit embeddings
x̂_i = x_i/‖x_i‖, ŷ_i (i = 1..N, float64):

- distance: ‖Δ‖ with Δ = mean_i x̂_i − mean_i ŷ_i (the paper's "modality gap": the
  distance between the two modalities' centroids on the sphere);
- variance share along the gap, per side: Var(x̂ · g) / tr Cov(x̂) with g = Δ/‖Δ‖ (how
  much of a modality's spread lies along the direction that separates it from the
  other; population variances, and tr Cov(x̂) = 1 − ‖mean x̂‖² for unit rows);
- separability: held-out accuracy of a linear classifier telling x̂ from ŷ (chance 0.5).
  Fit on the first half of the samples (both sides), scored on the second half, so a
  sample's two views are never split between fit and test. The classifier is Fisher's
  LDA with a shared covariance on the top r principal directions of the pooled fit
  embeddings (r = min(d, 64, 2·n_fit − 2); ridge 1e-3 · tr Σ / r), threshold at the
  midpoint of the class means (equal priors).

Spaces: the trained adapters after training (``after``) and at their initialisation
(``before``: Liang et al.'s cone effect makes a gap exist before any training), the
frozen features (only when both widths are equal: otherwise there is no common space
and the record says so) and each baseline. ``eval.gap_temperatures`` trains one more
adapter per temperature (fixed, not learned) and reports the gap of each: the paper's
Fig. 5 shows the gap moving with the temperature.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import views
from platonic_jax.evaluation.recipe_records import GapStats, ModalityGap

MAX_PCA = 64     # principal directions the separability classifier uses at most
RIDGE = 1e-3     # relative ridge of its covariance


@dataclasses.dataclass(frozen=True)
class GapParams:
  pair: tuple[str, str]
  max_samples: int


def _unit64(a) -> np.ndarray:
  a = np.asarray(a, np.float64)
  if a.ndim != 2:
    raise errors.InputError(f"the modality gap needs [N, d] embeddings, got {a.shape}")
  norm = np.linalg.norm(a, axis=1, keepdims=True)
  if np.any(norm == 0) or not np.all(np.isfinite(a)):
    raise errors.InputError("the modality gap needs finite, non-zero embeddings")
  return a / norm


def _variance_share(u: np.ndarray, g: np.ndarray) -> float:
  mu = u.mean(0)
  total = 1.0 - float(mu @ mu)  # tr Cov of unit rows
  along = float(np.mean(np.square((u - mu) @ g)))  # [N, d] x [d] -> [N]
  return along / total if total > 0 else 0.0


def separability(x: np.ndarray, y: np.ndarray) -> float:
  """Held-out accuracy of the LDA classifier of the module docstring; x, y: [N, d] unit
  rows of the same N samples (N >= 4)."""
  n = x.shape[0]
  h = n // 2
  fit = np.concatenate([x[:h], y[:h]])
  mu = fit.mean(0)
  # principal directions of the pooled fit rows (an SVD of [2h, d]: d may exceed 2h)
  _, _, vt = np.linalg.svd(fit - mu, full_matrices=False)
  r = min(x.shape[1], MAX_PCA, 2 * h - 2, vt.shape[0])
  basis = vt[:r].T  # [d, r]
  px, py = (x - mu) @ basis, (y - mu) @ basis  # [N, d] x [d, r] -> [N, r]
  mx, my = px[:h].mean(0), py[:h].mean(0)
  resid = np.concatenate([px[:h] - mx, py[:h] - my])
  cov = resid.T @ resid / (2 * h - 2)
  cov += RIDGE * np.trace(cov) / r * np.eye(r)
  w = np.linalg.solve(cov, mx - my)
  mid = 0.5 * (mx + my)
  correct = np.concatenate([(px[h:] - mid) @ w > 0, (py[h:] - mid) @ w <= 0])
  return float(correct.mean())


def gap_stats(x, y, pair: tuple[str, str]) -> GapStats:
  """The gap between the rows of x and y [N, d] (row i of both: sample i)."""
  xu, yu = _unit64(x), _unit64(y)
  if xu.shape != yu.shape:
    raise errors.InputError(f"the modality gap needs both sides in one space: {pair[0]} "
                            f"is {xu.shape}, {pair[1]} is {yu.shape}")
  if xu.shape[0] < 4:
    raise errors.InputError(f"the modality gap needs >= 4 samples, got {xu.shape[0]}")
  delta = xu.mean(0) - yu.mean(0)
  dist = float(np.linalg.norm(delta))
  g = delta / dist if dist > 0 else np.zeros_like(delta)
  return GapStats(distance=dist,
                  variance_share={pair[0]: _variance_share(xu, g),
                                  pair[1]: _variance_share(yu, g)},
                  separability=separability(xu, yu), num_samples=int(xu.shape[0]))


def modality_gap(params: GapParams, embed: Callable, test, *,
                 initial: Callable | None = None, frozen: bool = False) -> ModalityGap:
  """The gap of a space: ``embed(side, features) -> [N, d]``; ``initial``: the same for
  the adapters at initialisation (trained space); ``frozen``: also the raw features'."""
  a, b = params.pair
  n = views.num_rows(test.views[a].shape[0], params.max_samples)
  fa, fb = test.views[a][:n], test.views[b][:n]
  after = gap_stats(embed(a, fa), embed(b, fb), params.pair)
  before = gap_stats(initial(a, fa), initial(b, fb), params.pair) if initial else None
  raw, note = None, ""
  if frozen:
    if fa.shape[1] == fb.shape[1]:
      raw = gap_stats(fa, fb, params.pair)
    else:
      note = (f"frozen widths differ ({a}: {fa.shape[1]}, {b}: {fb.shape[1]}): the frozen "
              "features share no space")
  return ModalityGap(params.pair, after, before, raw, note)
