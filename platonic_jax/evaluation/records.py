"""Typed results of the evaluators: built by the evaluation modules, stored (as JSON,
``platonic_jax.typed_json``) by the stage store, rendered by ``platonic_jax.report``.

Names in the records are the config's modality names; the reference is "ref" (its
display name comes from the config at report time, so renaming it recomputes nothing).
"""

from __future__ import annotations

import dataclasses

from platonic_jax import typed_json
from platonic_jax.evaluation.recipe_records import (AsifInfo, CycleResult, GapSweepEntry,
                                                    LayerChoice, ModalityGap)
from platonic_jax.evaluation.records_base import RankSummary  # noqa: F401 - re-exported


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """One number of an alignment table: ``metric`` with its options; ``label`` names the
  row ("mutual_knn", or "mutual_knn@5" for the extra k of ``eval.ks``)."""
  label: str
  metric: str
  k: int | None = None
  cca_dim: int | None = None
  # eval.approx_recall of a k-NN metric (None: exact top-k); optional in the JSON, so
  # the keys of exact runs are those from before the field existed.
  approx_recall: float | None = dataclasses.field(default=None, metadata=typed_json.OPTIONAL)

  def options(self) -> dict:
    return {n: v for n, v in (("k", self.k), ("cca_dim", self.cca_dim),
                              ("approx_recall", self.approx_recall)) if v is not None}


@dataclasses.dataclass(frozen=True)
class Calibrated:
  """A number's permutation test (Gröger et al. 2026, Algorithm 1; ``metrics.calibrate``):
  the calibrated score clamp((m − τ)/(1 − τ), 0, 1), p = (1 + #{null ≥ m})/(K + 1), the
  null threshold τ at level ``eval.calibration_alpha`` and the number K of permutations."""
  score: float
  p_value: float
  tau: float
  K: int  # noqa: N815 - the paper's name


@dataclasses.dataclass(frozen=True)
class CrossValue:
  """m(K_a, K_b) between two sides (modalities, or their adapted embeddings)."""
  a: str
  b: str
  value: float
  calibrated: Calibrated | None = None


@dataclasses.dataclass(frozen=True)
class AlignmentRow:
  spec: MetricSpec
  to_ref: dict[str, float]        # side -> m(K_side, K_ref), sides in table order
  cross: tuple[CrossValue, ...]   # every pair of modalities
  avg: float | None = None        # frozen table: mean of to_ref over eval.pair
  calibrated: dict[str, Calibrated] | None = None  # side -> the test of to_ref[side]


@dataclasses.dataclass(frozen=True)
class CurvePoint:
  """A neighbour metric on the first n samples of one seeded order of the test rows."""
  n: int
  chance: float                   # k / (n − 1): mutual k-NN of unrelated neighbour sets
  to_ref: dict[str, float]        # side -> m(K_side, K_ref) on those n samples


@dataclasses.dataclass(frozen=True)
class ScaleCurve:
  """Alignment against N (Koepke et al. 2026) on nested subsets: ``eval.n_curve``."""
  label: str                      # the metric's row label
  k: int
  points: tuple[CurvePoint, ...]


@dataclasses.dataclass(frozen=True)
class AlignmentTable:
  """Alignment to the reference of each side; ``sides``: the modalities (and, after
  training, "mean": the normalised mean of the eval.pair sides)."""
  sides: tuple[str, ...]
  pair: tuple[str, str]
  rows: tuple[AlignmentRow, ...]
  curves: tuple[ScaleCurve, ...] = ()

  def row(self, label: str) -> AlignmentRow | None:
    return next((r for r in self.rows if r.spec.label == label), None)


@dataclasses.dataclass(frozen=True)
class Interval:
  low: float
  high: float
  num_bootstrap: int               # resamples that gave a value


@dataclasses.dataclass(frozen=True)
class VerdictEntry:
  """Δ = m(K_R, K_ref) − avg(m(K_X, K_ref), m(K_Y, K_ref)) for one representation R.

  ``interval``: the bootstrap percentile interval, or None with ``off`` saying why (and
  which config field turns it on)."""
  delta: float
  interval: Interval | None
  off: str = ""

  @property
  def holds(self) -> bool:
    return self.delta > 0

  @property
  def significant(self) -> bool | None:
    """Whether the whole interval is above 0; None (no claim) without an interval."""
    return None if self.interval is None else self.interval.low > 0


@dataclasses.dataclass(frozen=True)
class VerdictRow:
  spec: MetricSpec
  entries: dict[str, VerdictEntry]  # representation (eval.pair sides, "mean") -> entry
  # The same Δ on calibrated scores, s(K_R) − avg(s(K_X), s(K_Y)) (None: calibration off)
  calibrated: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
  pair: tuple[str, str]              # X, Y
  level: float                       # of the intervals (eval.ci)
  rows: tuple[VerdictRow, ...]

  def row(self, label: str) -> VerdictRow | None:
    return next((r for r in self.rows if r.spec.label == label), None)


@dataclasses.dataclass(frozen=True)
class RetrievalDirection:
  query: str
  gallery: str
  ranks: RankSummary


@dataclasses.dataclass(frozen=True)
class RetrievalProtocol:
  name: str                          # "1:1" or "all_captions"
  directions: tuple[RetrievalDirection, ...]


@dataclasses.dataclass(frozen=True)
class Retrieval:
  protocols: tuple[RetrievalProtocol, ...]


@dataclasses.dataclass(frozen=True)
class TransferEntry:
  source: str
  target: str
  transfer_acc: float
  within_acc: float
  chance: float


@dataclasses.dataclass(frozen=True)
class Transfer:
  entries: tuple[TransferEntry, ...]


# What each closed-form baseline reports about its fit (``evaluation.baselines``).
@dataclasses.dataclass(frozen=True)
class ProcrustesInfo:
  TAGGED = True
  dim: int
  train_residual: float


@dataclasses.dataclass(frozen=True)
class CCAInfo:
  TAGGED = True
  dim: int
  correlations: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class PerfectAlignmentInfo:
  TAGGED = True
  dim: int
  train_alignment_error: float
  test_alignment_error: float
  singular_values: tuple[float, ...]
  norm_W1: float
  norm_W2: float
  train_reconstruction_error: dict[str, float] | None = None  # with true latents z
  test_reconstruction_error: dict[str, float] | None = None


SpaceInfo = ProcrustesInfo | CCAInfo | PerfectAlignmentInfo | AsifInfo


@dataclasses.dataclass(frozen=True)
class SpaceResult:
  """Every evaluation of one shared space: the trained adapters or a baseline."""
  name: str                          # "trained" or the baseline's name
  alignment: AlignmentTable | None = None
  verdict: Verdict | None = None
  retrieval: Retrieval | None = None
  transfer: Transfer | None = None
  info: SpaceInfo | None = None
  gap: ModalityGap | None = None        # the modality gap (evaluation.modality_gap)
  cycle: CycleResult | None = None      # the circular heads (trained space, cycle on)


@dataclasses.dataclass(frozen=True)
class LogRecord:
  """One logged training step (``<train dir>/metrics.jsonl``)."""
  step: int
  loss: float
  grad_norm: float
  lr: float
  steps_per_s: float
  tau: float | None = None


@dataclasses.dataclass(frozen=True)
class Results:
  """What the report renders: the frozen table, each space, the training log."""
  modalities: tuple[str, ...]
  pair: tuple[str, str]
  before: AlignmentTable
  spaces: tuple[SpaceResult, ...] = ()
  history: tuple[LogRecord, ...] = ()
  layer_choice: LayerChoice | None = None        # modalities.<m>.layer = "auto"
  gap_sweep: tuple[GapSweepEntry, ...] = ()      # eval.gap_temperatures

  def space(self, name: str) -> SpaceResult | None:
    return next((s for s in self.spaces if s.name == name), None)
