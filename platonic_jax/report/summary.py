"""The few lines printed at the end of a run."""

from __future__ import annotations

from platonic_jax.evaluation.records import Results
from platonic_jax.report.labels import Labels, fmt


def summary(res: Results, labels: Labels) -> str:
  """The verdict per metric (R = mean), retrieval, each baseline's headline numbers."""
  lines = ["== platonic_jax summary =="]
  trained = res.space("trained")
  v = trained.verdict if trained else None
  if v is not None:
    lvl = int(round(100 * v.level))
    x, y = v.pair
    lines.append(f"hypothesis m(K_repr, K_{labels.reference}) > avg(m(K_{x}, K_ref), "
                 f"m(K_{y}, K_ref)), R = mean representation ({lvl}% CI):")
    n_sig = 0
    for r in v.rows:
      e = r.entries["mean"]
      n_sig += bool(e.significant)
      tag = ("HOLDS (significant)" if e.significant else "holds" if e.holds else "fails")
      ci = (f"[{fmt(e.interval.low, 4)}, {fmt(e.interval.high, 4)}]" if e.interval
            else "interval " + e.off)
      cal = (r.calibrated or {}).get("mean")
      cal = "" if cal is None else f"  calibrated Δ={cal:+.4f} ({'holds' if cal > 0 else 'fails'})"
      lines.append(f"  {r.spec.label:<18} Δ={e.delta:+.4f} {ci}  {tag}{cal}")
    lines.append(f"  -> significant for {n_sig}/{len(v.rows)} metrics")
    if any(r.calibrated for r in v.rows):
      n_cal = sum(bool((r.calibrated or {}).get("mean", 0) > 0) for r in v.rows)
      lines.append(f"  -> on calibrated scores it holds for {n_cal}/{len(v.rows)} metrics")
  for proto in (trained.retrieval.protocols if trained and trained.retrieval else ()):
    lines.append(f"retrieval {proto.name}: " + "; ".join(
        f"{d.query}→{d.gallery} R@" + "/".join(str(k) for k in sorted(d.ranks.recall)) + " = "
        + "/".join(fmt(100 * d.ranks.recall[k], 1) for k in sorted(d.ranks.recall))
        + f" medR {fmt(d.ranks.median_rank, 1)}" for d in proto.directions))
  for sp in res.spaces:
    if sp.name == "trained" or sp.alignment is None:
      continue
    row = sp.alignment.row("mutual_knn")
    mk = row.to_ref.get("mean") if row else None
    r1 = None
    if sp.retrieval:
      first = sp.retrieval.protocols[0].directions[0].ranks.recall
      r1 = first.get(1)
    lines.append(f"baseline {sp.name}: mutual_knn(mean, ref)={fmt(mk)}  "
                 f"{res.pair[0]}→{res.pair[1]} R@1={fmt(None if r1 is None else 100 * r1, 1)}%")
  if res.layer_choice:
    lines.append("layer choice (mutual k-NN): " + ", ".join(
        f"{e.modality} → {e.chosen}" for e in res.layer_choice.entries))
  gap = trained.gap if trained else None
  if gap is not None:
    before = f"{fmt(gap.before.distance)} before → " if gap.before else ""
    lines.append(f"modality gap {gap.pair[0]}/{gap.pair[1]} (trained): {before}"
                 f"{fmt(gap.after.distance)} after, separable "
                 f"{fmt(100 * gap.after.separability, 1)}%")
  lines.append(f"modalities: {', '.join(res.modalities)}; reference: {labels.reference}")
  return "\n".join(lines)
