"""``report.md``: the tables of every stage, from the typed results."""

from __future__ import annotations

import dataclasses

from platonic_jax.evaluation.records import (AlignmentTable, Results, Retrieval,
                                             SpaceResult, Transfer, Verdict)
from platonic_jax.report import recipes
from platonic_jax.report.labels import Labels, fmt


def table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def _cross_header(t: AlignmentTable):
  first = t.rows[0].cross if t.rows else ()
  return [f"{c.a}↔{c.b}" for c in first]


def before_table(t: AlignmentTable, labels: Labels) -> list[str]:
  ref = labels.reference
  x, y = t.pair
  hdr = ["metric"] + [f"{m}↔{ref}" for m in t.sides] + [f"avg({x}, {y})"] + _cross_header(t)
  rows = [[r.spec.label] + [fmt(r.to_ref[m]) for m in t.sides] + [fmt(r.avg)]
          + [fmt(c.value) for c in r.cross] for r in t.rows]
  return ["## Alignment before training (test split)", "",
          "m(K_mod, K_ref) for each frozen modality, their average over eval.pair (the "
          "right-hand side of the hypothesis), and the cross-modal m(K_a, K_b).", "",
          table(hdr, rows), ""] + calibration_table(t, labels) + curve_table(t, labels)


def after_table(t: AlignmentTable, before: AlignmentTable, labels: Labels) -> list[str]:
  ref = labels.reference
  hdr = (["metric"] + [f"{s}↔{ref}" for s in t.sides] + _cross_header(t) + ["before avg"])
  rows = []
  for r in t.rows:
    b = before.row(r.spec.label)
    rows.append([r.spec.label] + [fmt(r.to_ref[s]) for s in t.sides]
                + [fmt(c.value) for c in r.cross] + [fmt(b.avg if b else None)])
  x, y = t.pair
  return ([f"m(K_R, K_ref) for R = each adapted side and `mean` (the normalised mean of the "
           f"{x} and {y} sides); then the cross-modal m(W_a A, W_b B).", "", table(hdr, rows),
           ""] + calibration_table(t, labels) + curve_table(t, labels))


def _test(c) -> str:
  """A calibrated number's cell: "score (p=…)"; "–" without a test."""
  return "–" if c is None else f"{fmt(c.score)} (p={fmt(c.p_value)})"


def calibration_table(t: AlignmentTable, labels: Labels) -> list[str]:
  """Calibrated score and permutation p-value of every number of an alignment table."""
  if not any(r.calibrated for r in t.rows):
    return []
  ref = labels.reference
  k = next(c.K for r in t.rows for c in (r.calibrated or {}).values())
  hdr = ["metric"] + [f"{s}↔{ref}" for s in t.sides] + _cross_header(t)
  rows = [[r.spec.label] + [_test((r.calibrated or {}).get(s)) for s in t.sides]
          + [_test(c.calibrated) for c in r.cross] for r in t.rows]
  return [f"Calibrated against {k} permutations of the second side's rows (Gröger et al. "
          "2026): score = clamp((m − τ)/(1 − τ), 0, 1), τ the null's threshold; p = (1 + "
          "#{null ≥ m})/(K + 1).", "", table(hdr, rows), ""]


def curve_table(t: AlignmentTable, labels: Labels) -> list[str]:
  """The scale curves: each neighbour metric against N, with the chance level."""
  out = []
  for c in t.curves:
    sides = list(c.points[0].to_ref) if c.points else []
    hdr = ["N", f"chance k/(N−1)"] + [f"{s}↔{labels.reference}" for s in sides]
    rows = [[p.n, fmt(p.chance)] + [fmt(p.to_ref[s]) for s in sides] for p in c.points]
    out += [f"{c.label} (k = {c.k}) against N, nested subsets of the test rows "
            "(`scale_curve.png`):", "", table(hdr, rows), ""]
  return out


def verdict_table(v: Verdict) -> list[str]:
  lvl = int(round(100 * v.level))
  x, y = v.pair
  out = [f"**Verdict** (Δ = m(K_R, K_ref) − avg(m(K_{x}, K_ref), m(K_{y}, K_ref)); "
         f"{lvl}% bootstrap interval over test samples):", ""]
  rows = []
  calibrated = any(r.calibrated for r in v.rows)
  for r in v.rows:
    for rep in ("mean", x, y):
      e = r.entries.get(rep)
      if e is None:
        continue
      ci = (f"[{fmt(e.interval.low, 4)}, {fmt(e.interval.high, 4)}]" if e.interval
            else e.off)
      row = [r.spec.label, rep, fmt(e.delta, 4), ci, fmt(e.holds),
             fmt(e.significant) if e.significant is not None else "–"]
      if calibrated:
        dc = (r.calibrated or {}).get(rep)
        row += [fmt(dc, 4), fmt(None if dc is None else dc > 0)]
      rows.append(row)
  hdr = ["metric", "R", "Δ", f"{lvl}% CI", "Δ > 0", "CI > 0"]
  if calibrated:
    hdr += ["Δ calibrated", "Δ cal > 0"]
    out[0] += (" Δ calibrated: the same difference of the calibrated scores (each "
               "m(K_·, K_ref) against its permutation null).")
  return out + [table(hdr, rows), ""]


def retrieval_table(ret: Retrieval) -> list[str]:
  ks = sorted({k for p in ret.protocols for d in p.directions for k in d.ranks.recall})
  rows = [[p.name, f"{d.query}→{d.gallery}"] + [fmt(100 * d.ranks.recall[k], 1) for k in ks]
          + [fmt(d.ranks.median_rank, 1), d.ranks.num_queries]
          for p in ret.protocols for d in p.directions]
  hdr = ["protocol", "direction"] + [f"R@{k}" for k in ks] + ["median rank", "queries"]
  return ["Retrieval (recall in %):", "", table(hdr, rows), ""]


def transfer_table(tr: Transfer) -> list[str]:
  rows = [[f"{e.source}→{e.target}", fmt(100 * e.transfer_acc, 1), fmt(100 * e.within_acc, 1),
           fmt(100 * e.chance, 1)] for e in tr.entries]
  return ["Cross-modal transfer (Gaussian classifier fit on the source side, accuracy %):",
          "", table(["source→target", "transfer", "within source", "chance"], rows), ""]


def short(v) -> str:
  if isinstance(v, float):
    return fmt(v, 4)
  if isinstance(v, (list, tuple)) and len(v) > 6:
    return "[" + ", ".join(short(x) for x in v[:6]) + ", …]"
  if isinstance(v, (list, tuple)):
    return "[" + ", ".join(short(x) for x in v) + "]"
  if isinstance(v, dict):
    return "{" + ", ".join(f"{k}: {short(x)}" for k, x in v.items()) + "}"
  return str(v)


def space_section(sp: SpaceResult, before: AlignmentTable, labels: Labels) -> list[str]:
  title = "trained" if sp.name == "trained" else f"baseline: {sp.name}"
  out = [f"## After — {title}", ""]
  if sp.alignment:
    out += after_table(sp.alignment, before, labels)
  if sp.verdict:
    out += verdict_table(sp.verdict)
  if sp.retrieval:
    out += retrieval_table(sp.retrieval)
  if sp.transfer:
    out += transfer_table(sp.transfer)
  if sp.gap:
    out += recipes.gap_table(sp.gap)
  if sp.cycle:
    out += recipes.cycle_table(sp.cycle)
  if sp.info is not None:
    fields = dataclasses.asdict(sp.info)
    out += ["Fit: " + ", ".join(f"{k}={short(v)}" for k, v in fields.items() if v is not None),
            ""]
  return out


def markdown(res: Results, labels: Labels) -> str:
  sources = ", ".join(f"`{m}` ({labels.sources.get(m, '?')})" for m in res.modalities)
  out = ["# platonic_jax report", "",
         f"Reference: `{labels.reference}` ({labels.sources.get('ref', '?')}); modalities: "
         f"{sources}; data: `{labels.data}`.", ""]
  if res.layer_choice:
    out += recipes.layer_choice_section(res.layer_choice)
  out += before_table(res.before, labels)
  for sp in res.spaces:
    out += space_section(sp, res.before, labels)
  if res.gap_sweep:
    out += recipes.gap_sweep_section(res.gap_sweep)
  if res.history:
    first, last = res.history[0], res.history[-1]
    out += ["## Training", "",
            f"{len(res.history)} logged steps; first loss {fmt(first.loss, 4)}, last "
            f"{fmt(last.loss, 4)} (step {last.step}). See `train_loss.png`.", ""]
  out += ["## Figures", "", "![alignment](alignment.png)", "",
          "![mutual kNN vs k](mutual_knn_vs_k.png)", ""]
  if res.before.curves:
    out += ["![alignment against N](scale_curve.png)", ""]
  if any(sp.retrieval for sp in res.spaces):
    out += ["![recall](recall.png)", ""]
  if res.history:
    out += ["![training loss](train_loss.png)", ""]
  return "\n".join(out)
