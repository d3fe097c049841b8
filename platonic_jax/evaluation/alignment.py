"""Alignment tables: every configured metric between each side and the reference.

- ``frozen_table`` (stage "before"): m(K_m, K_ref) for each frozen modality m, their
  average over eval.pair (the right-hand side of the hypothesis), and m(K_a, K_b) for
  every pair of modalities.
- ``adapted_table`` (per shared space): m(K_R, K_ref) for each adapted side R and their
  "mean", and m(W_a A, W_b B) for every pair of sides.

Every number gets its permutation test (``CalibrationParams``: K permutations of the rows
of the second argument — the reference, or the second side of a cross pair — at level
alpha; ``metrics.calibrate``), and each neighbour metric at ``eval.k`` its scale curve
(``eval.n_curve``: the metric on nested subsets of the test rows, with the chance level
k/(n − 1)).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import views
from platonic_jax.evaluation.records import (AlignmentRow, AlignmentTable, Calibrated,
                                             CrossValue, CurvePoint, MetricSpec, ScaleCurve)


def metric_specs(metrics: Sequence[str], k: int, ks: Sequence[int],
                 cca_dim: int, approx_recall: float | None = None) -> tuple[MetricSpec, ...]:
  """Every metric of ``eval.metrics`` at ``eval.k``, then mutual_knn at each k of
  ``eval.ks`` not already covered (label "mutual_knn@k"). ``approx_recall`` (eval's,
  None = exact) goes to the metrics whose top-k takes it."""
  from platonic_jax.metrics import registry  # noqa: PLC0415
  specs = []

  def recall(m):
    return approx_recall if "approx_recall" in m.options else None

  for name in metrics:
    m = registry.get(name)
    specs.append(MetricSpec(name, name, k=int(k) if m.takes_k else None,
                            cca_dim=int(cca_dim) if "cca_dim" in m.options else None,
                            approx_recall=recall(m)))
  for kk in ks:
    if int(kk) != int(k) or "mutual_knn" not in metrics:
      specs.append(MetricSpec(f"mutual_knn@{int(kk)}", "mutual_knn", k=int(kk),
                              approx_recall=recall(registry.get("mutual_knn"))))
  return tuple(specs)


@dataclasses.dataclass(frozen=True)
class CalibrationParams:
  """The permutation test of every alignment number: ``K`` permutations (0: off) at level
  ``alpha``, drawn from ``seed`` (the same permutations for every number of a table)."""
  K: int  # noqa: N815 - the paper's name
  alpha: float
  seed: int


OFF = CalibrationParams(0, 0.05, 0)


@dataclasses.dataclass(frozen=True)
class AlignmentParams:
  metrics: tuple[MetricSpec, ...]
  views: views.ViewParams
  pair: tuple[str, str]
  calibration: CalibrationParams = OFF
  curve: tuple[int, ...] = ()   # eval.n_curve: scale-curve sizes (() : no curve)


def check_k(specs: Sequence[MetricSpec], n: int) -> None:
  too_big = [(s.label, s.k) for s in specs if s.k is not None and s.k >= n]
  if too_big:
    raise errors.InputError(
        f"k must be smaller than the number of test samples ({n}) but {too_big} are not; "
        "lower config.eval.k / config.eval.ks or use more test samples.")


def measure(spec: MetricSpec, a: np.ndarray, b: np.ndarray) -> float:
  """The metric of ``spec`` on prepared arrays, called as the experiment calls it."""
  from platonic_jax.metrics import registry  # noqa: PLC0415
  m = registry.get(spec.metric)
  return float(m.fn(a, b, **m.pipeline_options(spec.options())))


def measure_calibrated(spec: MetricSpec, a: np.ndarray, b: np.ndarray,
                       cal: CalibrationParams) -> tuple[float, Calibrated | None]:
  """``measure`` and, unless ``cal.K == 0``, its permutation test (b's rows permuted).
  The value is the same call's, so it equals ``measure`` exactly."""
  if not cal.K:
    return measure(spec, a, b), None
  from platonic_jax import metrics  # noqa: PLC0415
  m = metrics.registry.get(spec.metric)
  r = metrics.calibrate(a, b, spec.metric, K=cal.K, alpha=cal.alpha, seed=cal.seed,
                        **m.pipeline_options(spec.options()))
  return r.observed, Calibrated(r.score, r.p_value, r.tau, r.K)


def _cross(spec, reps, sides, cal):
  return tuple(CrossValue(a, b, *measure_calibrated(spec, reps[a], reps[b], cal))
               for a, b in itertools.combinations(sides, 2))


def _to_ref(spec, reps, ref, cal):
  out = {s: measure_calibrated(spec, r, ref, cal) for s, r in reps.items()}
  values = {s: v for s, (v, _) in out.items()}
  tests = {s: c for s, (_, c) in out.items() if c is not None}
  return values, (tests or None)


def curve_sizes(sizes, n: int) -> tuple[int, ...]:
  """The scale curve's sizes for n rows: those of ``eval.n_curve`` below n, then n."""
  return tuple(sorted({int(s) for s in sizes if int(s) < n} | {n})) if sizes else ()


def scale_curves(params: AlignmentParams, reps, ref) -> tuple[ScaleCurve, ...]:
  """Each neighbour metric at its configured k (row label == metric) against N."""
  from platonic_jax import metrics  # noqa: PLC0415
  out = []
  for spec in params.metrics:
    sizes = tuple(s for s in curve_sizes(params.curve, ref.shape[0]) if s > spec.k + 1) \
        if spec.k is not None else ()
    if not sizes or spec.label != spec.metric or not metrics.registry.get(
        spec.metric).is_neighbour:
      continue
    per_side = {s: metrics.scale_curve(r, ref, spec.metric, sizes, k=spec.k,
                                       seed=params.calibration.seed)
                for s, r in reps.items()}
    points = tuple(CurvePoint(n, chance, {s: c[i][1] for s, c in per_side.items()})
                   for i, (n, _, chance) in enumerate(next(iter(per_side.values()))))
    out.append(ScaleCurve(spec.label, int(spec.k), points))
  return tuple(out)


def frozen_table(params: AlignmentParams, frozen: views.Frozen,
                 modalities: Sequence[str]) -> AlignmentTable:
  """Stage "before" on the test split's prepared frozen features."""
  ref = frozen.get(views.REF, params.views)
  reps = {m: frozen.get(m, params.views) for m in modalities}
  check_k(params.metrics, ref.shape[0])
  cal = params.calibration
  rows = []
  for spec in params.metrics:
    to_ref, tests = _to_ref(spec, reps, ref, cal)
    avg = float(np.mean([to_ref[m] for m in params.pair]))
    rows.append(AlignmentRow(spec, to_ref, _cross(spec, reps, modalities, cal), avg, tests))
  return AlignmentTable(tuple(modalities), params.pair, tuple(rows),
                        scale_curves(params, reps, ref))


def adapted_table(params: AlignmentParams, frozen: views.Frozen,
                  embeddings: Mapping[str, np.ndarray], sides: Sequence[str]) -> AlignmentTable:
  """Alignment of a shared space: ``embeddings`` {side: [N, d]} of the test rows."""
  ref = frozen.get(views.REF, params.views)
  reps = views.adapted(embeddings, sides, params.pair, ref.shape[0])
  check_k(params.metrics, ref.shape[0])
  cal = params.calibration
  rows = []
  for spec in params.metrics:
    to_ref, tests = _to_ref(spec, reps, ref, cal)
    rows.append(AlignmentRow(spec, to_ref, _cross(spec, reps, sides, cal), calibrated=tests))
  return AlignmentTable(tuple(reps), params.pair, tuple(rows), scale_curves(params, reps, ref))
