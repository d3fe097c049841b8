"""Kernel-alignment metrics of the Platonic Representation Hypothesis, as jitted, tiled
JAX programs that never build an N x N matrix.

    from platonic_jax import metrics
    metrics.mutual_knn(a, b, k=10)        # a: [N, Da], b: [N, Db] -> float
    metrics.score(a, b, "cka")            # [L, N, D] inputs: max over layer pairs
    metrics.calibrate(a, b, "cka", K=200)  # permutation null: .score, .p_value, .tau
    metrics.score(a, b, "cka", calibrate=True)   # the max over layer pairs, calibrated
    python -m platonic_jax.metrics A.npy B.npy --metric=mutual_knn --k=10 --json

Definitions follow the reference release (Huh et al. 2024, ``minyoungg/platonic-rep``
``metrics.py``); each function's docstring names where and why it differs.
Compiled programs are cached per (shape, k, tile, mesh): repeated calls on arrays of
the same shape do not recompile.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from platonic_jax.metrics import _checks, registry, tiling
from platonic_jax.metrics import knn
from platonic_jax.metrics.calibration import (Calibration, calibrate, calibrate_layers,
                                              permutations)
from platonic_jax.metrics.cca_family import linear_regression, mean_cca, pwcca, rv
from platonic_jax.metrics.kernels import cka, cknna, svcca, unbiased_cka
from platonic_jax.metrics.neighbourhood import knn_jaccard, rank_similarity, second_order_cosine
from platonic_jax.metrics.rdms import rsa
from platonic_jax.metrics.scale import scale_curve
from platonic_jax.metrics.shape import procrustes, shape_metric
from platonic_jax.metrics.knn import (
    cycle_knn, edit_distance_knn, lcs_knn, mutual_knn, nearest_neighbors)
from platonic_jax.metrics.registry import NEIGHBOUR_METRICS, Metric

# name -> function (the public API); the records with everything else are registry.REGISTRY.
METRICS: dict[str, Callable[..., float]] = {n: m.fn for n, m in registry.REGISTRY.items()}

__all__ = ["METRICS", "Calibration", "Metric", "NEIGHBOUR_METRICS", "calibrate",
           "calibrate_layers", "cka", "cknna", "cycle_knn", "edit_distance_knn", "knn_jaccard",
           "lcs_knn", "linear_regression", "mean_cca", "mutual_knn", "nearest_neighbors",
           "permutations", "prepare", "procrustes", "pwcca", "rank_similarity", "registry",
           "rsa", "rv", "scale_curve", "score", "second_order_cosine", "shape_metric", "svcca",
           "tiling", "unbiased_cka"]


def prepare(feats, q: float = 0.95, exact: bool = False) -> np.ndarray:
  """Clamps outliers to +-t, the Platonic protocol's ``remove_outliers`` (float32 numpy).

  Transformers have "emergent outlier" features; the reference clamps every element to
  [-t, t] before measuring alignment, with t the q-quantile of |feats|:
    exact=False: per sample, the q-quantile (linear interpolation, as torch.quantile) of
      |x| over all its values, averaged over samples (the reference default);
    exact=True: the element at sorted position int(q * size) of all |x| (the
      reference's ``exact`` / ``--precise`` path, no interpolation).
  feats: [N, D] or layer-wise [L, N, D] (samples on axis -2; a sample's values across
  all layers form its row, as the reference's [N, L, D] flatten). q in (0, 1]; q = 1
  returns the features unchanged.
  """
  x = np.asarray(feats)
  if x.ndim not in (2, 3):
    raise ValueError(f"prepare expects [N, D] or [L, N, D] features, got shape {x.shape}")
  x = x.astype(np.float32, copy=False)
  _checks.check_finite(x, "feats")
  if not 0.0 < q <= 1.0:
    raise ValueError(f"q must be a quantile in (0, 1], got {q!r}")
  if q == 1:
    return x
  mag = np.abs(x)
  if exact:
    flat = mag.ravel()
    pos = int(q * flat.size)
    t = np.partition(flat, pos)[pos]
  else:
    per_sample = np.moveaxis(mag, -2, 0).reshape(x.shape[-2], -1)  # [N, L * D]
    t = np.quantile(per_sample, q, axis=1).mean()
  return np.clip(x, -t, t)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  # As torch.nn.functional.normalize: x / max(|x|, 1e-12); zero rows stay zero.
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _layers(x, name: str):
  """[L, N, D] float32, or a list of [N, D_l] layers when given a list (widths may differ,
  as in the Platonic release's per-layer feature lists)."""
  if isinstance(x, (list, tuple)):
    if not x:
      raise ValueError(f"{name} is an empty list of layers")
    layers = [_checks.as_features(layer, f"{name}[{i}]") for i, layer in enumerate(x)]
    if len({layer.shape[0] for layer in layers}) != 1:
      raise ValueError(f"the layers of {name} hold different numbers of samples: "
                       f"{[layer.shape[0] for layer in layers]}")
    return layers
  arr = np.asarray(x)
  if arr.ndim == 2:
    arr = arr[None]
  if arr.ndim != 3:
    raise ValueError(
        f"{name} must be [N, D] or layer-wise [L, N, D] features, got shape {arr.shape}")
  arr = arr.astype(np.float32, copy=False)
  _checks.check_finite(arr, name)
  return arr


CALIBRATION_OPTIONS = ("K", "alpha", "smax", "seed", "perms")


def score(a, b, metric: str = "mutual_knn", *, normalize: bool = True,
          calibrate: bool = False, **kw):
  """Alignment of a and b as the Platonic protocol measures it: best over layer pairs.

  a: [N, Da], [La, N, Da] or a list of La [N, D_i] layers; b likewise (same N). Rows are
  l2-normalised first (``normalize=True``, so k-NN is by cosine), then ``metric`` (a
  name in METRICS; ``**kw`` go to it: k, kernel, sigma, cca_dim, tile, ...) is measured
  for every layer pair (i, j). Returns ``(best value, (i, j))``, i indexing a's layers.
  For the neighbour metrics each layer's k-NN is computed once, not once per pair.
  Difference from the reference ``compute_score``: it starts from best = 0 and returns
  (0, None) when no pair scores above 0; here the true maximum and its pair are
  returned. Apply ``prepare`` first for the reference's outlier clamp.

  ``calibrate=True``: the layer-aware form (Gröger et al. 2026, Algorithm 2): the max
  over layer pairs calibrated against row permutations of b applied to every layer of b
  at once; returns ``calibrate_layers``' record (``.observed`` is the best value,
  ``.pair`` its layers, ``.score`` / ``.p_value`` / ``.tau``); ``K``, ``alpha``, ``smax``,
  ``seed``, ``perms`` go to it.
  """
  record = registry.get(metric)
  la, lb = _layers(a, "a"), _layers(b, "b")
  cal = {o: kw.pop(o) for o in CALIBRATION_OPTIONS if o in kw}
  if cal and not calibrate:
    raise ValueError(f"{sorted(cal)} are options of the calibration: pass calibrate=True")
  if la[0].shape[0] != lb[0].shape[0]:
    raise ValueError(
        f"a and b must have the same number of samples: got {la[0].shape[0]} and "
        f"{lb[0].shape[0]} (layer-wise inputs are [L, N, D])")
  if normalize:
    la, lb = [_l2_normalize(x) for x in la], [_l2_normalize(x) for x in lb]
  if calibrate:
    return calibrate_layers(la, lb, metric, agg="max", **cal, **kw)
  values = np.empty((len(la), len(lb)))
  unknown = set(kw) - set(record.options)
  if unknown:
    raise ValueError(f"{metric} got unexpected arguments {sorted(unknown)}; it takes "
                     f"{list(record.options)}")
  if record.is_neighbour:
    kw = dict(kw)
    k = kw.pop("k", 10)
    ia = [nearest_neighbors(x, k, **kw)[1] for x in la]
    ib = [nearest_neighbors(x, k, **kw)[1] for x in lb]
    for i, j in np.ndindex(*values.shape):
      values[i, j] = float(record.neighbour_score(ia[i], ib[j]))
  else:
    for i, j in np.ndindex(*values.shape):
      values[i, j] = record.fn(la[i], lb[j], **kw)
  i, j = np.unravel_index(np.argmax(values), values.shape)
  return float(values[i, j]), (int(i), int(j))
