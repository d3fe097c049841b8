"""One record per alignment metric: everything the library, the CLI and the experiment's
evaluators need to know of it, in one place.

    from platonic_jax.metrics import registry
    m = registry.get("mutual_knn")
    m.fn(a, b, k=10)                 # the metric itself -> float
    m.options                        # keyword options fn takes: ("k", "tile", ...)
    m.neighbour_score(ia, ib)        # k-NN metrics: the value from two [N, k] lists
    m.per_sample(ia, ib)             # k-NN metrics: [N] per-query scores, mean = value
    m.pipeline_options(kw)           # the options the experiment passes for configured kw

Adding a metric = writing its function and one ``Metric`` entry below.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from platonic_jax import errors
from platonic_jax.metrics import (cca_family, kernel_nulls, kernels, knn, neighbourhood, rdms,
                                  shape)


@dataclasses.dataclass(frozen=True)
class Metric:
  """An alignment measure.

  name: registry key. fn: ``fn(a [N, Da], b [N, Db], **options) -> float``.
  options: the keyword options ``fn`` accepts besides a and b.
  neighbour_score / per_sample: set for the neighbour metrics (computed from the two
    samples' ordered k-NN lists ``[N, k]``): the value (a jax scalar) and the per-query
    scores whose mean it is (numpy ``[N]``, for the query bootstrap).
  experiment_options: options the experiment adds to the configured ones (e.g. SVCCA
    caps its directions at the features' ranks instead of raising).
  null: ``null(a, b, **options)`` -> a permutation-null model (``values(perms [K, N])
    -> [K]``, the metric on (a, b[π]) from what a row permutation leaves intact;
    ``metrics.nulls``). None: the neighbour metrics (their nulls relabel the lists) and
    metrics with no cheap form (each null a full call).
  neighbour_null: neighbour metrics: ``(idx_a, idx_b, perm) -> `` the value for b[perm]
    without relabelling b's lists (default: ``neighbour_score`` of the relabelled lists).
  """
  name: str
  fn: Callable[..., float]
  options: tuple[str, ...]
  neighbour_score: Callable | None = None
  per_sample: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
  experiment_options: Mapping[str, object] = dataclasses.field(default_factory=dict)
  null: Callable | None = None
  neighbour_null: Callable | None = None

  @property
  def is_neighbour(self) -> bool:
    return self.per_sample is not None

  @property
  def takes_k(self) -> bool:
    return "k" in self.options

  def pipeline_options(self, configured: Mapping[str, object]) -> dict:
    """The options of a call made by the experiment: the configured ones this metric
    takes, plus ``experiment_options``."""
    return {**{k: v for k, v in configured.items() if k in self.options},
            **self.experiment_options}


_KNN = ("k", "tile", "precision", "mesh", "approx_recall")


def _neighbour(name: str, fn, combine, per_sample, null=None) -> Metric:
  return Metric(name, fn, _KNN, neighbour_score=combine, per_sample=per_sample,
                neighbour_null=null)


REGISTRY: dict[str, Metric] = {m.name: m for m in (
    _neighbour("mutual_knn", knn.mutual_knn, knn.mutual_from_idx, knn.mutual_per_sample,
               knn.mutual_null),
    _neighbour("cycle_knn", knn.cycle_knn, knn.cycle_from_idx, knn.cycle_per_sample),
    _neighbour("lcs_knn", knn.lcs_knn, knn.lcs_from_idx, knn.lcs_per_sample),
    _neighbour("edit_distance_knn", knn.edit_distance_knn, knn.edit_from_idx,
               knn.edit_per_sample),
    Metric("cka", kernels.cka, ("kernel", "sigma", "tile", "mesh"),
           null=kernel_nulls.cka_null),
    Metric("unbiased_cka", kernels.unbiased_cka, ("mesh",), null=kernel_nulls.unbiased_cka_null),
    Metric("cknna", kernels.cknna, ("k", "tile", "mesh"), null=kernel_nulls.cknna_null),
    Metric("svcca", kernels.svcca, ("cca_dim", "cap_rank", "mesh"),
           experiment_options={"cap_rank": True}, null=kernel_nulls.svcca_null),
    # The measures of netrep, ReSi and rsatoolbox (issue 16).
    Metric("procrustes", shape.procrustes, ("angular", "mesh"), null=shape.procrustes_null),
    Metric("shape_metric", shape.shape_metric, ("alpha", "angular", "mesh"),
           null=shape.shape_null),
    Metric("rsa", rdms.rsa, ("rdm", "compare", "max_pairs", "pair_seed", "mesh"),
           null=rdms.rsa_null),
    Metric("pwcca", cca_family.pwcca, ("mesh",), null=cca_family.pwcca_null),
    Metric("mean_cca", cca_family.mean_cca, ("mesh",), null=cca_family.mean_cca_null),
    Metric("rv", cca_family.rv, ("adjusted", "mesh"), null=cca_family.rv_null),
    Metric("linear_regression", cca_family.linear_regression, ("mesh",),
           null=cca_family.linear_regression_null),
    _neighbour("knn_jaccard", neighbourhood.knn_jaccard, neighbourhood.jaccard_from_idx,
               neighbourhood.jaccard_per_sample, neighbourhood.jaccard_null),
    _neighbour("rank_similarity", neighbourhood.rank_similarity, neighbourhood.rank_from_idx,
               neighbourhood.rank_per_sample),
    Metric("second_order_cosine", neighbourhood.second_order_cosine, ("k", "tile", "mesh"),
           null=neighbourhood.second_order_cosine_null),
)}

NEIGHBOUR_METRICS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.is_neighbour)


def get(name: str) -> Metric:
  """The record of metric ``name``; an unknown name is an error listing the known ones."""
  try:
    return REGISTRY[name]
  except KeyError:
    raise errors.InputError(f"unknown metric {name!r}; choose one of {sorted(REGISTRY)}"
                            ) from None


def selection_problems(section: str, metrics, k: int) -> list[str]:
  """The config checks of a metric selection, shared by the experiment's ``eval`` and the
  sweep's ``scores``: every name known (and at least one), and ``k`` >= 1 (>= 2 when
  cknna, whose centring needs two neighbours, is selected). One line per problem,
  named ``{section}.metrics`` / ``{section}.k``."""
  out = []
  unknown = [m for m in metrics if m not in REGISTRY]
  if unknown or not metrics:
    out.append(f"{section}.metrics={tuple(metrics)!r}: unknown {unknown or '(empty)'}; "
               f"allowed (any of) {tuple(REGISTRY)}")
  low = 2 if "cknna" in metrics else 1
  if k < low:
    out.append(f"{section}.k={k}: must be >= {low}" + (" (cknna needs 2)" if low == 2 else ""))
  return out
