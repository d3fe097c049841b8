"""Seed 000's hypothesis per metric and representation, with a paired bootstrap interval.

For each metric and representation R (the eval.pair sides and their "mean"):
Δ = m(K_R, K_ref) − ½ (m(K_X, K_ref) + m(K_Y, K_ref)), X, Y the frozen eval.pair
modalities. The hypothesis holds for that metric when Δ > 0, and is significant when the
whole ``level`` bootstrap interval of Δ is above 0. The bootstrap is paired (the same
resampled test samples for every term of Δ):
- neighbour metrics are means over query samples of a per-sample score; the neighbour
  lists are computed once on the whole test set and the *queries* are resampled
  (``bootstrap`` times). Resampling the whole set with replacement would put exact
  duplicates into every neighbour list and inflate all k-NN scores;
- kernel metrics are recomputed on test sets resampled with replacement (``resample``
  times, each a full evaluation; 0 = off, and the entry says which field turns it on).
The interval is the percentile interval of the resampled Δ.

The verdict is also stated on calibrated scores (Gröger et al. 2026: each m(K_·, K_ref)
replaced by its calibrated score against ``calibration.K`` permutations of the
reference's rows): Δ_cal = s(K_R) − ½ (s(K_X) + s(K_Y)), read from the alignment tables
when they hold the same tests.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import alignment, views
from platonic_jax.evaluation.records import (AlignmentTable, Interval, MetricSpec, Verdict,
                                             VerdictEntry, VerdictRow)


@dataclasses.dataclass(frozen=True)
class VerdictParams:
  metrics: tuple[MetricSpec, ...]
  views: views.ViewParams
  pair: tuple[str, str]
  bootstrap: int        # query resamples (neighbour metrics)
  resample: int         # full resamples (kernel metrics); 0 = no interval
  resample_field: str   # "field=value" that turns the kernel intervals on (named when off)
  ci: float             # interval level
  seed: int
  calibration: alignment.CalibrationParams = alignment.OFF


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
  """The central ``level`` percentile interval of bootstrap ``samples``."""
  if not 0 < level < 1:
    raise errors.ConfigError(f"eval.ci={level}: must be in (0, 1)")
  lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def bootstrap_mean_diff(per_sample: Mapping[str, np.ndarray], weights: Mapping[str, float],
                        num: int, seed: int) -> np.ndarray:
  """Query bootstrap of Σ_s w_s · mean(per_sample[s]): [num] resampled values.

  All arrays are resampled with the *same* indices (paired). Deterministic for ``seed``.
  """
  n = next(iter(per_sample.values())).shape[0]
  rng = np.random.default_rng(seed)
  combo = sum(w * np.asarray(per_sample[s], np.float64) for s, w in weights.items())
  out = np.empty(num)
  for b in range(num):  # a loop, not [num, n] indices: O(n) memory for any num
    out[b] = combo[rng.integers(0, n, n)].mean()
  return out


def _entry(delta: float, boots: np.ndarray, level: float, off: str) -> VerdictEntry:
  if not boots.size:
    return VerdictEntry(float(delta), None, off)
  lo, hi = percentile_interval(boots, level)
  return VerdictEntry(float(delta), Interval(lo, hi, int(boots.size)))


def _neighbour_row(spec, params, raw, reps, ref, rng, lists) -> VerdictRow:
  from platonic_jax.metrics import registry  # noqa: PLC0415
  record = registry.get(spec.metric)
  # The same top-k as the alignment table's (eval.approx_recall), so Δ matches its values.
  nb = lambda name, x: lists(name, x, spec.k, spec.approx_recall)  # noqa: E731
  ref_nb = nb(views.REF, ref)
  ps = {f"raw:{m}": record.per_sample(nb(f"raw:{m}", raw[m]), ref_nb) for m in params.pair}
  ps.update({rep: record.per_sample(nb(rep, r), ref_nb) for rep, r in reps.items()})
  entries = {}
  for rep in reps:
    w = {rep: 1.0, **{f"raw:{m}": -0.5 for m in params.pair}}
    delta = float(sum(wt * ps[s].mean() for s, wt in w.items()))
    boots = bootstrap_mean_diff(ps, w, params.bootstrap, int(rng.integers(2**31)))
    entries[rep] = _entry(delta, boots, params.ci, "")
  return VerdictRow(spec, entries)


def _kernel_row(spec, params, raw, reps, ref, rng, known) -> VerdictRow:
  n = ref.shape[0]
  terms = {**{f"raw:{m}": raw[m] for m in params.pair}, **reps}
  point = {s: known[s] if s in known else alignment.measure(spec, a, ref)
           for s, a in terms.items()}
  num = params.resample
  boots = {s: np.full(num, np.nan) for s in terms}
  for b in range(num):
    idx = rng.integers(0, n, n)
    ref_b = ref[idx]  # one gather per draw, shared by every term
    try:
      for s, a in terms.items():
        boots[s][b] = alignment.measure(spec, a[idx], ref_b)
    except ValueError:
      # A degenerate draw (tiny N: duplicated rows leave a metric undefined) has no
      # value; it is dropped and num_bootstrap counts the draws that remain.
      for s in terms:
        boots[s][b] = np.nan
  base = sum(point[f"raw:{m}"] for m in params.pair) / 2
  base_b = sum(boots[f"raw:{m}"] for m in params.pair) / 2
  off = (f"off (--config.{params.resample_field} turns it on)" if not num
         else "no resample gave a value (too few test samples)")
  entries = {}
  for rep in reps:
    d = boots[rep] - base_b
    entries[rep] = _entry(point[rep] - base, d[np.isfinite(d)], params.ci, off)
  return VerdictRow(spec, entries)


def _calibrated(spec, params, raw, reps, ref, before, after) -> dict[str, float] | None:
  """Δ on calibrated scores for every representation (None when calibration is off)."""
  cal = params.calibration
  if not cal.K:
    return None

  def score(name, x, table):
    row = table.row(spec.label) if table is not None else None
    known = (row.calibrated or {}).get(name) if row is not None else None
    if known is not None and known.K == cal.K:
      return known.score
    return alignment.measure_calibrated(spec, x, ref, cal)[1].score

  base = float(np.mean([score(m, raw[m], before) for m in params.pair]))
  return {r: score(r, x, after) - base for r, x in reps.items()}


def verdict(params: VerdictParams, frozen: views.Frozen, embeddings: Mapping[str, np.ndarray],
            *, before: AlignmentTable | None = None, after: AlignmentTable | None = None
            ) -> Verdict:
  """The verdict for one shared space (``embeddings``: {pair side: [N, d]} test rows).

  ``before`` / ``after``: the frozen and this space's alignment tables for the same
  inputs, when already computed; the kernel metrics' point estimates are read from them
  instead of recomputed (the same metric calls, so the same values).
  """
  from platonic_jax import metrics  # noqa: PLC0415
  ref = frozen.get(views.REF, params.views)
  raw = {m: frozen.get(m, params.views) for m in params.pair}
  reps = views.adapted(embeddings, params.pair, params.pair, ref.shape[0])
  alignment.check_k(params.metrics, ref.shape[0])
  rng = np.random.default_rng(params.seed)
  memo: dict = {}

  def lists(name, x, k, recall=None):  # neighbour lists, once per (representation, k)
    if (name, k, recall) not in memo:
      memo[(name, k, recall)] = np.asarray(
          metrics.nearest_neighbors(x, k, approx_recall=recall)[1])
    return memo[(name, k, recall)]

  rows = []
  for spec in params.metrics:
    cal = _calibrated(spec, params, raw, reps, ref, before, after)
    if metrics.registry.get(spec.metric).is_neighbour:
      rows.append(dataclasses.replace(
          _neighbour_row(spec, params, raw, reps, ref, rng, lists), calibrated=cal))
      continue
    known = {}
    if before is not None and before.row(spec.label):
      known.update({f"raw:{m}": before.row(spec.label).to_ref[m] for m in params.pair})
    if after is not None and after.row(spec.label):
      known.update({r: v for r, v in after.row(spec.label).to_ref.items() if r in reps})
    rows.append(dataclasses.replace(_kernel_row(spec, params, raw, reps, ref, rng, known),
                                    calibrated=cal))
  return Verdict(params.pair, float(params.ci), tuple(rows))


def representations(pair: Sequence[str]) -> tuple[str, ...]:
  """The representations R a verdict row has, in order."""
  return (*pair, views.MEAN)
