"""One metric of one (language, vision) pair, the release's protocol, calibrated.

The release (``minyoungg/platonic-rep`` ``measure_alignment.py``): ``prepare_features``
clamps each model's features at the q-quantile (``metrics.remove_outliers``: over the
whole [N, L, D] tensor, or each layer of a list on its own), ``compute_score`` l2-
normalises rows and keeps the best ``AlignmentMetrics.measure(metric, vision layer,
language layer)`` over every layer pair. Here the same, with every layer pair of a
model pair in one batched program (``prh.pair_scores``) and the best value's
permutation test (``metrics.calibration.threshold`` on the nulls of the max: Gröger et
al. 2026, Algorithm 2, one permutation of the language rows for every layer).

Deliberate differences (docs/prh.md, docs/metrics.md): the true maximum (the release
starts from 0 and returns ``(0, None)`` when no pair is positive); ``lcs_knn`` / k;
no +1e-6 in the CKA / CKNNA denominators; exact SVCCA; CKNNA at ``k`` (the release's
``compute_score`` passes it no ``topk`` and raises); k-NN ties toward the lower index.
Metrics without a batched form (the registry's other measures) are scored pair by pair
with ``metrics.score`` / ``metrics.calibrate_layers``: the same numbers, slower.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from platonic_jax import metrics
from platonic_jax.metrics import calibration
from platonic_jax.prh import layer_stats
from platonic_jax.prh.pair_scores import PairScorer
from platonic_jax.prh.plan import ScoreParams
from platonic_jax.prh.records import PairScore
from platonic_jax.prh.release_files import LayerFeatures


def prepared_layers(feats: LayerFeatures, q: float, exact: bool) -> list[np.ndarray]:
  """The release's ``prepare_features`` then ``F.normalize``: a stacked [L, N, D] model
  is clamped at one threshold over all its layers, a list form layer by layer; then each
  row is l2-normalised. Returns the L float32 [N, D] layers."""
  if feats.stacked:
    clamped = list(metrics.prepare(feats.layers, q=q, exact=exact))
  else:
    clamped = [metrics.prepare(x, q=q, exact=exact) for x in feats.layers]
  return [metrics._l2_normalize(x) for x in clamped]


@dataclasses.dataclass
class Model:
  """A model ready to be scored: its prepared layers and, for the batched metrics, its
  ``layer_stats``."""
  name: str
  layers: list[np.ndarray]
  stats: layer_stats.ModelStats | None


def prepare_model(name: str, feats: LayerFeatures, params: list[ScoreParams]) -> Model:
  """``prepared_layers`` and the structures of every batched metric in ``params`` (all
  share q, exact, k and cca_dim; the plan gives them one scores block)."""
  p0 = params[0]
  layers = prepared_layers(feats, p0.q, p0.exact)
  batched = [p.metric for p in params if p.metric in layer_stats.SUPPORTED]
  opts = dict(p0.options)
  for p in params:
    opts.update(dict(p.options))
  stats = None
  if batched:
    try:
      stats = layer_stats.compute(layers, batched, k=opts.get("k", 10),
                                  cca_dim=opts.get("cca_dim", 10))
    except ValueError as e:
      from platonic_jax import errors  # noqa: PLC0415
      raise errors.InputError(f"{name} ({feats.origin}): {e}") from None
  return Model(name, layers, stats)


def score_pair(p: ScoreParams, vision: Model, language: Model, *, scorer: PairScorer | None,
               perms: np.ndarray | None, language_name: str, vision_name: str) -> PairScore:
  """``p.metric`` of (vision, language): every layer pair, the max, its calibration."""
  opts = dict(p.options)
  if p.metric in layer_stats.SUPPORTED:
    values = scorer.values(p.metric)
    null = scorer.null(p.metric, perms).max(axis=(1, 2)) if p.calibration else None
  elif p.calibration:
    cal = metrics.calibrate_layers(vision.layers, language.layers, p.metric, agg="max",
                                   perms=perms, K=p.calibration.K,
                                   alpha=p.calibration.alpha, **opts)
    values, null = np.asarray(cal.values, np.float64), cal.null
  else:
    values = np.array([[metrics.METRICS[p.metric](x, y, **opts) for y in language.layers]
                       for x in vision.layers], np.float64)
  i, j = np.unravel_index(int(np.argmax(values)), values.shape)  # first max, vision-major
  cal_score = p_value = tau = None
  if p.calibration:
    # As calibrate_layers: the layer-pair entries in float32, their max calibrated.
    observed = float(np.max(values.astype(np.float32)))
    cal_score, p_value, tau = calibration.threshold(observed, np.asarray(null, np.float64),
                                                    p.calibration.alpha, 1.0)
  return PairScore(
      metric=p.metric, language=language_name, vision=vision_name, score=float(values[i, j]),
      language_layer=int(j), vision_layer=int(i), calibrated=cal_score, p_value=p_value,
      tau=tau, K=p.calibration.K if p.calibration else 0,
      layer_scores=tuple(tuple(float(v) for v in row) for row in values))
