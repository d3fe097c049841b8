"""Retrieval through the circular heads (``platonic_jax.cycle``), on the test split.

- after each hop a → b: the queries h_{a→b}(e_a) against b's embeddings (sample i's
  correct item is row i), both read in the shared space;
- after the full cycle from each modality m: H_m(e_m) (the K hops from m back to m)
  against m's own embeddings — recall@1 says how often a sample comes back to itself.
Ranks as ``evaluation.retrieval`` (ties count against the query).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import retrieval
from platonic_jax.evaluation.recipe_records import CycleHop, CycleResult


@dataclasses.dataclass(frozen=True)
class CycleEvalParams:
  modalities: tuple[str, ...]   # the cycle, in order
  ks: tuple[int, ...]           # recall@K
  max_samples: int

  @property
  def hops(self) -> tuple[tuple[str, str], ...]:
    m = self.modalities
    return tuple(zip(m, m[1:] + m[:1]))


def _ranks(queries, gallery, ks) -> retrieval.RankSummary:
  ids = np.arange(queries.shape[0])
  return retrieval.summarize(retrieval.retrieval_ranks(queries, gallery, ids, ids), ks)


def cycle_retrieval(params: CycleEvalParams, embeddings: Mapping[str, np.ndarray],
                    heads: Callable | None) -> CycleResult:
  """``embeddings``: {modality: [N, E]} test embeddings; ``heads(path, e) -> [N, E]``
  (``train.TrainResult.heads``)."""
  if heads is None:
    raise errors.InputError("the cycle evaluation needs circular heads: set "
                            "--config.cycle.modalities (docs/training.md)")
  hops = tuple(CycleHop(a, b, (a, b), _ranks(heads(((a, b),), embeddings[a]), embeddings[b],
                                             params.ks)) for a, b in params.hops)
  cycles = []
  for i, m in enumerate(params.modalities):
    path = params.hops[i:] + params.hops[:i]
    back = heads(path, embeddings[m])
    visited = tuple(a for a, _ in path) + (m,)
    cycles.append(CycleHop(m, m, visited, _ranks(back, embeddings[m], params.ks)))
  return CycleResult(params.modalities, hops, tuple(cycles))
