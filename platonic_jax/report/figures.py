"""The report's PNG figures (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np

from platonic_jax.evaluation.records import AlignmentTable, Results
from platonic_jax.report.labels import Labels


def _plt():
  import matplotlib  # noqa: PLC0415 - only when a report is written
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # noqa: PLC0415
  return plt


def _headline(t: AlignmentTable):
  """The rows at the configured k (not the extra k of eval.ks)."""
  return [r for r in t.rows if r.spec.label == r.spec.metric]


def alignment(res: Results, labels: Labels, path: str) -> None:
  """Grouped bars per metric: frozen modalities and their average (before) vs the trained
  representations and the baselines' mean representation (after)."""
  plt = _plt()
  rows = _headline(res.before)
  names = [r.spec.label for r in rows]
  series = [(f"{m} (frozen)", [r.to_ref[m] for r in rows]) for m in res.before.sides]
  series.append(("avg frozen", [r.avg for r in rows]))
  for sp in res.spaces:
    if sp.alignment is None:
      continue
    after = {r.spec.label: r for r in sp.alignment.rows}
    reps = (res.pair[0], "mean") if sp.name == "trained" else ("mean",)
    series += [(f"{sp.name}: {rep}" if rep == "mean" else f"{sp.name}: {rep} side",
                [after[n].to_ref[rep] for n in names]) for rep in reps]
  fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 5.2))
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(names))
  for i, (name, vals) in enumerate(series):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
  ax.set_xticks(x, names, rotation=20, ha="right")
  ax.set_ylabel(f"alignment to {labels.reference}")
  ax.set_title("Kernel alignment to the reference, before vs after")
  ax.axhline(0, color="k", lw=0.5)
  # Below the axes: inside, the legend would hide bars.
  ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _knn_by_k(t: AlignmentTable, side: str) -> tuple[list[int], list[float]]:
  pts = sorted((r.spec.k, r.to_ref[side]) for r in t.rows if r.spec.metric == "mutual_knn")
  return [p[0] for p in pts], [p[1] for p in pts]


def mutual_knn_vs_k(res: Results, labels: Labels, path: str) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for m in res.before.sides:
    ks, v = _knn_by_k(res.before, m)
    ax.plot(ks, v, "o--", label=f"{m} (frozen)")
  pts = sorted((r.spec.k, r.avg) for r in res.before.rows if r.spec.metric == "mutual_knn")
  ks = [p[0] for p in pts]
  ax.plot(ks, [p[1] for p in pts], "k:", label="avg frozen")
  trained = res.space("trained")
  if trained is not None and trained.alignment is not None:
    for rep in (res.pair[0], "mean"):
      kk, v = _knn_by_k(trained.alignment, rep)
      ax.plot(kk, v, "s-", label=f"trained: {rep}")
  ax.set_xscale("log")
  if ks:
    ax.set_xticks(ks, [str(k) for k in ks])  # plain k values, not 6x10^0 log labels
    ax.minorticks_off()
  ax.set_xlabel("k")
  ax.set_ylabel(f"mutual kNN with {labels.reference}")
  ax.set_title("Mutual k-NN alignment vs k")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def scale_curve(res: Results, labels: Labels, path: str) -> None:
  """Each neighbour metric against N (frozen sides, trained sides), chance k/(N − 1)."""
  plt = _plt()
  curves = res.before.curves
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
  trained = res.space("trained")
  after = {c.label: c for c in (trained.alignment.curves if trained and trained.alignment
                                else ())}
  for ax, c in zip(axes[0], curves):
    ns = [p.n for p in c.points]
    for side in c.points[0].to_ref:
      ax.plot(ns, [p.to_ref[side] for p in c.points], "o--", label=f"{side} (frozen)")
    for side in (res.pair[0], "mean") if c.label in after else ():
      pts = after[c.label].points
      ax.plot([p.n for p in pts], [p.to_ref[side] for p in pts], "s-", label=f"trained: {side}")
    ax.plot(ns, [p.chance for p in c.points], "k:", label="chance k/(N−1)")
    ax.set_xscale("log")
    ax.set_xlabel("N (nested subsets of the test rows)")
    ax.set_ylabel(f"{c.label} with {labels.reference}")
    ax.set_title(f"{c.label} (k = {c.k}) against N")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_loss(res: Results, path: str) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ax.plot([h.step for h in res.history], [h.loss for h in res.history], "-o", ms=3)
  ax.set_xlabel("step")
  ax.set_ylabel("contrastive loss")
  ax.set_title("Training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def recall(res: Results, path: str) -> None:
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
  for d, ax in enumerate(axes):
    for sp in res.spaces:
      for proto in (sp.retrieval.protocols if sp.retrieval else ()):
        dr = proto.directions[d]
        ks = sorted(dr.ranks.recall)
        ax.plot(ks, [100 * dr.ranks.recall[k] for k in ks], "o-",
                label=f"{sp.name} ({proto.name})")
        ax.set_title(f"{dr.query} → {dr.gallery}")
        ax.set_xticks(ks)
    ax.set_xlabel("K")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("recall@K (%)")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
