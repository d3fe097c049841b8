"""``report.md`` sections of the training recipes: the layer choice, the modality gap (and
its temperature sweep), the circular heads' retrieval."""

from __future__ import annotations

from platonic_jax.evaluation.recipe_records import (CycleResult, GapStats, GapSweepEntry,
                                                    LayerChoice, ModalityGap)
from platonic_jax.report.labels import fmt


def _table(header, rows) -> str:
  from platonic_jax.report.markdown import table  # noqa: PLC0415 - markdown imports this
  return table(header, rows)


def layer_choice_section(choice: LayerChoice) -> list[str]:
  out = ["## Layer choice (modalities.<m>.layer = \"auto\")", "",
         "Mutual k-NN between every layer pair on the sampled training pairs (STRUCTURE's "
         "rule); the chosen pair is marked *.", ""]
  for e in choice.entries:
    hdr = [f"{e.modality} \\ {e.partner}"] + [str(l) for l in e.partner_layers]
    rows = [[str(l)] + [fmt(v) + ("*" if (l, pl) == (e.chosen, e.partner_chosen) else "")
                        for pl, v in zip(e.partner_layers, row)]
            for l, row in zip(e.layers, e.scores)]
    out += [f"`{e.modality}` → layer {e.chosen} (against `{e.partner}` layer "
            f"{e.partner_chosen}; k = {e.k}, {e.samples} pairs):", "", _table(hdr, rows), ""]
  return out


def _gap_row(label: str, g: GapStats, pair) -> list:
  a, b = pair
  return [label, fmt(g.distance, 4), fmt(g.variance_share[a], 4), fmt(g.variance_share[b], 4),
          fmt(100 * g.separability, 1)]


def gap_table(gap: ModalityGap) -> list[str]:
  a, b = gap.pair
  rows = []
  if gap.frozen is not None:
    rows.append(_gap_row("frozen features", gap.frozen, gap.pair))
  if gap.before is not None:
    rows.append(_gap_row("before training (init)", gap.before, gap.pair))
  rows.append(_gap_row("this space" if gap.before is None else "after training", gap.after,
                       gap.pair))
  out = [f"Modality gap ({a} vs {b}, unit embeddings): centroid distance, share of each "
         "side's variance along the gap, held-out linear separability (%, chance 50):", "",
         _table(["space", "‖μ_a − μ_b‖", f"var share {a}", f"var share {b}", "separable %"],
                rows), ""]
  if gap.frozen_note:
    out += [f"(frozen: {gap.frozen_note})", ""]
  return out


def gap_sweep_section(sweep: tuple[GapSweepEntry, ...]) -> list[str]:
  pair = sweep[0].gap.pair
  rows = [[fmt(e.tau, 4)] + _gap_row("", e.gap.after, pair)[1:] for e in sweep]
  return ["## Modality gap against the temperature (eval.gap_temperatures)", "",
          "One training per fixed temperature τ, all else equal (Liang et al. 2022, Fig. 5).",
          "", _table(["τ", "‖μ_a − μ_b‖", f"var share {pair[0]}", f"var share {pair[1]}",
                      "separable %"], rows), ""]


def cycle_table(c: CycleResult) -> list[str]:
  ks = sorted({k for h in c.hops + c.cycles for k in h.ranks.recall})
  rows = [["→".join(h.path), h.gallery] + [fmt(100 * h.ranks.recall[k], 1) for k in ks]
          + [fmt(h.ranks.median_rank, 1)] for h in c.hops + c.cycles]
  return ["Circular heads (retrieval after each hop, then after the full cycle, recall %):",
          "", _table(["path", "gallery"] + [f"R@{k}" for k in ks] + ["median rank"], rows), ""]
