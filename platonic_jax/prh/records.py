"""The sweep's typed results (stored as JSON through ``typed_json``; the report renders
them)."""

from __future__ import annotations

import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """One model as the report describes it.

  name: as configured (hub id, timm name or directory); modality: "vision" | "language";
  family: for the figures' lines (``prh.models.family``); num_params: parameter count
  (None if unknown); num_layers, dims: the feature layers and their widths; bpb, loss:
  language models: mean bits per UTF-8 byte and mean next-token loss (nats per
  predicted token) over the captions, as the release's ``extract_features.py``;
  origin: the feature entry or file the features came from.
  """
  name: str
  modality: str
  family: str
  num_params: int | None
  num_layers: int
  dims: tuple[int, ...]
  bpb: float | None
  loss: float | None
  origin: str


@dataclasses.dataclass(frozen=True)
class PairScore:
  """One metric of one (language, vision) pair: the release's protocol.

  score: the max over every (vision layer, language layer) pair of the metric on the
  clamped, l2-normalised features; language_layer / vision_layer: where it is (the first
  maximum in the release's loop order: vision layers outer). calibrated, p_value, tau:
  that max calibrated against K row permutations of the language features applied to
  every layer (Gröger et al. 2026, Algorithm 2); None when calibration is off (K = 0).
  layer_scores: [vision layers][language layers], every layer pair's value.
  """
  metric: str
  language: str
  vision: str
  score: float
  language_layer: int
  vision_layer: int
  calibrated: float | None
  p_value: float | None
  tau: float | None
  K: int
  layer_scores: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Everything the report shows: the models and every pair's scores per metric."""
  language: tuple[ModelInfo, ...]
  vision: tuple[ModelInfo, ...]
  metrics: tuple[str, ...]
  scores: tuple[PairScore, ...]

  @functools.cached_property
  def _index(self) -> dict[tuple[str, str, str], PairScore]:
    return {(s.metric, s.language, s.vision): s for s in self.scores}

  def get(self, metric: str, language: str, vision: str) -> PairScore:
    return self._index[(metric, language, vision)]
