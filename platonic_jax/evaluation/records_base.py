"""Records shared by ``evaluation.records`` and ``evaluation.recipe_records`` (kept apart
so that neither module imports the other)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RankSummary:
  recall: dict[int, float]           # K -> recall@K (a fraction)
  median_rank: float
  mean_rank: float
  num_queries: int
