"""The arrays the metrics see: frozen features and adapted embeddings, prepared once.

Every metric is computed as the Platonic release does: frozen features get
``metrics.prepare`` (outlier clamp at quantile ``q``) and l2-normalised rows (cosine
kernels); adapted embeddings are only l2-normalised (the clamp is for raw network
features with emergent outlier dimensions). Evaluation uses the first ``max_samples``
test rows (0: all).

Representations of a shared space: each modality's adapted side, and "mean" — for the
eval.pair sides u, v: r_i = (û_i + v̂_i) / ‖û_i + v̂_i‖, the normalised average of the
two unit vectors (the midpoint on the sphere).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from platonic_jax import errors

REF = "ref"    # the reference's name in records and views (its display name is config's)
MEAN = "mean"  # the normalised mean of the eval.pair sides
RESERVED = (REF, MEAN)


@dataclasses.dataclass(frozen=True)
class ViewParams:
  q: float              # outlier clamp quantile of the frozen features (1: off)
  max_samples: int      # evaluate the first N test rows (0: all)


def l2n(a: np.ndarray) -> np.ndarray:
  """Rows to unit length, float32 [N, D]; InputError for NaN/Inf or all-zero rows."""
  a = np.asarray(a, np.float32)
  if a.ndim != 2:
    raise errors.InputError(f"expected [N, D] features or embeddings, got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    raise errors.InputError(
        f"{int((~np.isfinite(a)).any(1).sum())} sample(s) have NaN/Inf features or "
        "embeddings; check the encoder / adapter that made them.")
  norm = np.linalg.norm(a, axis=-1, keepdims=True)
  if np.any(norm == 0):
    raise errors.InputError(f"{int((norm == 0).sum())} sample(s) have all-zero features; "
                            "cosine kernels are undefined for them. Drop those samples.")
  return a / norm


def mean_representation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """r_i = (û_i + v̂_i) / ‖û_i + v̂_i‖: u, v [N, d] -> [N, d]. Antipodal pairs (sum 0)
  have no midpoint; they get û (only reachable by a degenerate adapter)."""
  uh, vh = l2n(u), l2n(v)
  s = uh + vh
  norm = np.linalg.norm(s, axis=1, keepdims=True)
  return np.where(norm > 1e-6, s / np.maximum(norm, 1e-12), uh)


def num_rows(available: int, max_samples: int) -> int:
  return int(max_samples) or int(available)


class Frozen:
  """Prepared frozen test features, computed once per (name, q, n) and shared by every
  evaluator (``prepare`` costs ~1 s per 20k x 768 array)."""

  def __init__(self, views: Mapping[str, np.ndarray]):
    self.views = views
    self._memo: dict = {}

  def available(self) -> int:
    return next(iter(self.views.values())).shape[0]

  def get(self, name: str, params: ViewParams) -> np.ndarray:
    from platonic_jax import metrics  # noqa: PLC0415 - jax only once evaluating
    if name not in self.views:
      raise errors.CacheError(f"test features lack {name!r} (have {sorted(self.views)}); "
                              "re-run the feature stage")
    n = num_rows(self.available(), params.max_samples)
    key = (name, float(params.q), n)
    if key not in self._memo:
      self._memo[key] = l2n(metrics.prepare(self.views[name][:n], q=float(params.q)))
    return self._memo[key]


def adapted(embeddings: Mapping[str, np.ndarray], sides: Sequence[str],
            pair: tuple[str, str], n: int) -> dict[str, np.ndarray]:
  """The representations of a shared space: each side's unit rows (first n), and MEAN."""
  missing = [m for m in sides if m not in embeddings]
  if missing:
    raise errors.InputError(f"embeddings lack {missing} (have {sorted(embeddings)})")
  reps = {m: l2n(np.asarray(embeddings[m])[:n]) for m in sides}
  reps[MEAN] = mean_representation(reps[pair[0]], reps[pair[1]])
  return reps
