"""Evaluators: one job each, built from their typed parameters, run on a shared space.

As big_vision's evaluators (``evaluators/common.py``: each built from its config entry
and run on the current state), each evaluator here is a function of its params, the
space and the features, returning a typed record; the experiment runs every evaluator
the plan lists for a space through the stage store, so each result is computed once for
its inputs.

    EVALUATORS[kind](params, space, ctx) -> record      (kind: alignment, verdict, ...)

A *space* is anything with ``name``, ``modalities`` and ``embed(modality, x [M, D]) ->
[M, d]``: the trained adapters (``TrainedSpace``) or a closed-form baseline
(``baselines.FittedSpace``, which also has ``info``). A space whose dimension is too
large for [d, d] statistics (ASIF: one per anchor) also has ``joint(embeddings) ->
embeddings``, the same rows in a basis of their span (every inner product kept), which
the alignment, verdict and gap evaluators use.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from platonic_jax.evaluation import (alignment, cycle_eval, modality_gap, retrieval, transfer,
                                     verdict, views)
from platonic_jax.evaluation.recipe_records import CycleResult, ModalityGap
from platonic_jax.evaluation.records import (AlignmentTable, Retrieval, SpaceInfo,
                                             SpaceResult, Transfer, Verdict)


class TrainedSpace:
  """The trained adapters as a space: ``embed(m, x) = result.embed(result.params, m, x)``
  for a ``train.TrainResult``; ``initial``: the adapters' parameters at step 0 (the
  modality gap's "before"), or None."""

  def __init__(self, result, modalities, initial=None, name: str = "trained"):
    self.name, self.modalities = name, tuple(modalities)
    self.result = result
    self.initial_params = initial
    self.heads = result.heads  # circular heads along a path, or None

  def embed(self, modality: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(self.result.embed(self.result.params, modality, x))

  def initial_embed(self, modality: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(self.result.embed(self.initial_params, modality, x))


@dataclasses.dataclass
class Context:
  """What every evaluator of one run reads: the splits, the prepared frozen test
  features (shared), the frozen table, and each space's alignment table once computed."""
  train: Any                  # features.Split
  test: Any                   # features.Split
  frozen: views.Frozen
  before: AlignmentTable | None = None
  after: dict[str, AlignmentTable] = dataclasses.field(default_factory=dict)


class _Embeddings:
  """A space's embeddings of the test split, computed once per (modality, rows)."""

  def __init__(self, space, test):
    self.space, self.test, self._memo = space, test, {}

  def of(self, sides, n: int) -> dict[str, np.ndarray]:
    joint = getattr(self.space, "joint", None)
    if joint is not None:  # one basis for the rows of every side asked for together
      key = (tuple(sorted(sides)), n)
      if key not in self._memo:
        self._memo[key] = joint({m: self.space.embed(m, self.test.views[m][:n])
                                 for m in sorted(sides)})
      return {m: self._memo[key][m] for m in sides}
    for m in sides:
      if (m, n) not in self._memo:
        self._memo[(m, n)] = self.space.embed(m, self.test.views[m][:n])
    return {m: self._memo[(m, n)] for m in sides}

  def __call__(self, modality, x):
    return self.space.embed(modality, x)


def _n(ctx: Context, max_samples: int) -> int:
  return views.num_rows(ctx.test.num_rows, max_samples)


def run_alignment(params: alignment.AlignmentParams, space, ctx, emb) -> AlignmentTable:
  n = _n(ctx, params.views.max_samples)
  return alignment.adapted_table(params, ctx.frozen, emb.of(space.modalities, n),
                                 space.modalities)


def run_verdict(params: verdict.VerdictParams, space, ctx, emb) -> Verdict:
  n = _n(ctx, params.views.max_samples)
  return verdict.verdict(params, ctx.frozen, emb.of(params.pair, n), before=ctx.before,
                         after=ctx.after.get(space.name))


def run_retrieval(params: retrieval.RetrievalParams, space, ctx, emb) -> Retrieval:
  return retrieval.retrieval(params, emb, ctx.test)


def run_transfer(params: transfer.TransferParams, space, ctx, emb) -> Transfer:
  return transfer.transfer(params, emb, ctx.train, ctx.test)


def run_info(params, space, ctx, emb) -> SpaceInfo:
  return space.info(ctx.test, _n(ctx, params.max_samples))


def run_gap(params: modality_gap.GapParams, space, ctx, emb) -> ModalityGap:
  n = _n(ctx, params.max_samples)
  got = emb.of(params.pair, n)
  initial = (space.initial_embed if getattr(space, "initial_params", None) is not None
             else None)
  return modality_gap.modality_gap(params, lambda m, x: got[m], ctx.test, initial=initial,
                                   frozen=space.name == "trained")


def run_cycle(params: cycle_eval.CycleEvalParams, space, ctx, emb) -> CycleResult:
  n = _n(ctx, params.max_samples)
  return cycle_eval.cycle_retrieval(params, emb.of(params.modalities, n), space.heads)


EVALUATORS: dict[str, tuple[Callable, Any]] = {  # kind -> (run, result type)
    "alignment": (run_alignment, AlignmentTable),
    "verdict": (run_verdict, Verdict),
    "retrieval": (run_retrieval, Retrieval),
    "transfer": (run_transfer, Transfer),
    "info": (run_info, SpaceInfo),
    "gap": (run_gap, ModalityGap),
    "cycle": (run_cycle, CycleResult),
}


def evaluate_space(space, stages, ctx: Context,
                   cached: Callable[[Any, Callable[[], Any], Any], Any]) -> SpaceResult:
  """Every evaluator of ``stages`` (the plan's ``<space>/<kind>`` stages) on ``space``;
  ``cached(stage, compute, result_type)`` reads or computes each result."""
  emb = _Embeddings(space, ctx.test)
  out: dict[str, Any] = {}
  for stage in stages:
    run, result_type = EVALUATORS[stage.kind]
    out[stage.kind] = cached(
        stage, lambda run=run, stage=stage: run(stage.params, space, ctx, emb), result_type)
    if stage.kind == "alignment":
      ctx.after[space.name] = out[stage.kind]
  return SpaceResult(space.name, alignment=out.get("alignment"), verdict=out.get("verdict"),
                     retrieval=out.get("retrieval"), transfer=out.get("transfer"),
                     info=out.get("info"), gap=out.get("gap"), cycle=out.get("cycle"))
