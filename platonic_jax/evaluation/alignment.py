"""Alignment tables: every configured metric between each side and the reference.

- ``frozen_table`` (stage "before"): m(K_m, K_ref) for each frozen modality m, their
  average over eval.pair (the right-hand side of the hypothesis), and m(K_a, K_b) for
  every pair of modalities.
- ``adapted_table`` (per shared space): m(K_R, K_ref) for each adapted side R and their
  "mean", and m(W_a A, W_b B) for every pair of sides.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import views
from platonic_jax.evaluation.records import AlignmentRow, AlignmentTable, CrossValue, MetricSpec


def metric_specs(metrics: Sequence[str], k: int, ks: Sequence[int],
                 cca_dim: int) -> tuple[MetricSpec, ...]:
  """Every metric of ``eval.metrics`` at ``eval.k``, then mutual_knn at each k of
  ``eval.ks`` not already covered (label "mutual_knn@k")."""
  from platonic_jax.metrics import registry  # noqa: PLC0415
  specs = []
  for name in metrics:
    m = registry.get(name)
    specs.append(MetricSpec(name, name, k=int(k) if m.takes_k else None,
                            cca_dim=int(cca_dim) if "cca_dim" in m.options else None))
  for kk in ks:
    if int(kk) != int(k) or "mutual_knn" not in metrics:
      specs.append(MetricSpec(f"mutual_knn@{int(kk)}", "mutual_knn", k=int(kk)))
  return tuple(specs)


@dataclasses.dataclass(frozen=True)
class AlignmentParams:
  metrics: tuple[MetricSpec, ...]
  views: views.ViewParams
  pair: tuple[str, str]


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


def _cross(spec, reps, sides):
  return tuple(CrossValue(a, b, measure(spec, reps[a], reps[b]))
               for a, b in itertools.combinations(sides, 2))


def frozen_table(params: AlignmentParams, frozen: views.Frozen,
                 modalities: Sequence[str]) -> AlignmentTable:
  """Stage "before" on the test split's prepared frozen features."""
  ref = frozen.get(views.REF, params.views)
  reps = {m: frozen.get(m, params.views) for m in modalities}
  check_k(params.metrics, ref.shape[0])
  rows = []
  for spec in params.metrics:
    to_ref = {m: measure(spec, reps[m], ref) for m in modalities}
    avg = float(np.mean([to_ref[m] for m in params.pair]))
    rows.append(AlignmentRow(spec, to_ref, _cross(spec, reps, modalities), avg))
  return AlignmentTable(tuple(modalities), params.pair, tuple(rows))


def adapted_table(params: AlignmentParams, frozen: views.Frozen,
                  embeddings: Mapping[str, np.ndarray], sides: Sequence[str]) -> AlignmentTable:
  """Alignment of a shared space: ``embeddings`` {side: [N, d]} of the test rows."""
  ref = frozen.get(views.REF, params.views)
  reps = views.adapted(embeddings, sides, params.pair, ref.shape[0])
  check_k(params.metrics, ref.shape[0])
  rows = []
  for spec in params.metrics:
    to_ref = {s: measure(spec, r, ref) for s, r in reps.items()}
    rows.append(AlignmentRow(spec, to_ref, _cross(spec, reps, sides)))
  return AlignmentTable(tuple(reps), params.pair, tuple(rows))
