"""Typed results of the training recipes' evaluations (docs/training.md): the layer choice,
the modality gap, the circular heads' retrieval and the ASIF fit. Stored and rendered
like ``evaluation.records`` (which refers to them)."""

from __future__ import annotations

import dataclasses

from platonic_jax.evaluation.records_base import RankSummary


@dataclasses.dataclass(frozen=True)
class LayerChoiceEntry:
  """Mutual k-NN between every candidate layer of ``modality`` and of ``partner`` on the
  sampled training pairs: ``scores[i][j]`` for ``layers[i]``, ``partner_layers[j]``
  (a fixed partner has one). ``chosen`` / ``partner_chosen``: the argmax."""
  modality: str
  partner: str
  layers: tuple[int, ...]
  partner_layers: tuple[int, ...]
  scores: tuple[tuple[float, ...], ...]
  chosen: int
  partner_chosen: int
  k: int
  samples: int


@dataclasses.dataclass(frozen=True)
class LayerChoice:
  entries: tuple[LayerChoiceEntry, ...]

  def layer(self, modality: str) -> int | None:
    """The layer chosen for ``modality`` (as the auto side or as a co-chosen partner)."""
    for e in self.entries:
      if e.modality == modality:
        return e.chosen
    return None


@dataclasses.dataclass(frozen=True)
class GapStats:
  """The modality gap of one space between the ``pair`` sides (Liang et al. 2022), on
  unit embeddings: ``distance`` = ‖mean(x̂) − mean(ŷ)‖; ``variance_share[side]`` = the
  share of that side's total variance along the gap direction; ``separability`` = a
  linear classifier's held-out accuracy at telling the two sides apart (chance 0.5)."""
  distance: float
  variance_share: dict[str, float]
  separability: float
  num_samples: int


@dataclasses.dataclass(frozen=True)
class ModalityGap:
  """One space's gap: ``after`` (the space), ``before`` (the adapters at initialisation;
  trained space only), ``frozen`` (the raw features, when both widths agree; else
  ``frozen_note`` says why not)."""
  pair: tuple[str, str]
  after: GapStats
  before: GapStats | None = None
  frozen: GapStats | None = None
  frozen_note: str = ""


@dataclasses.dataclass(frozen=True)
class GapSweepEntry:
  tau: float
  gap: ModalityGap


@dataclasses.dataclass(frozen=True)
class CycleHop:
  """Retrieval of ``gallery`` items by ``query`` embeddings mapped along ``path``."""
  query: str
  gallery: str
  path: tuple[str, ...]            # the modalities visited, query first
  ranks: RankSummary


@dataclasses.dataclass(frozen=True)
class CycleResult:
  """The circular heads: after each hop (query a mapped to b, in b's gallery) and after
  the full cycle (a mapped around back to a, in a's own gallery)."""
  modalities: tuple[str, ...]
  hops: tuple[CycleHop, ...]
  cycles: tuple[CycleHop, ...]


@dataclasses.dataclass(frozen=True)
class AsifInfo:
  """The ASIF space (Norelli et al. 2023): anchors, k kept, power p."""
  TAGGED = True
  dim: int                          # = the number of anchors
  anchors: int
  k: int
  p: float
