"""Stage 7: ``report.json``, ``report.md``, PNG figures and a printed summary.

``write_report(results, config, workdir)`` takes the result dict the stages produce::

    results = {
      "before":    evaluate.alignment_before(...),          # stage 2
      "trained":   evaluate.evaluate_space(...),            # stages 4-5 (+ "transfer")
      "baselines": evaluate.baselines(...),                 # stage 6 (optional)
      "train":     {"history": [{"step": int, "loss": float, ...}, ...], ...},  # optional
      "features":  {...},                                   # optional: cache key, shapes
    }

and writes into ``<workdir>/report/``: ``report.json`` (every number, the config, package
versions, devices), ``report.md`` (tables), ``alignment.png`` (alignment to the reference
per metric, before vs after), ``mutual_knn_vs_k.png``, ``train_loss.png`` (when a history
is given) and ``recall.png``. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
from typing import Mapping

import numpy as np

from platonic_jax import features as _features

REPORT_DIR = "report"
PACKAGES = ("platonic_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "scipy", "transformers", "tokenizers", "tensorflow-datasets", "grain",
            "ml_collections", "matplotlib")


def environment() -> dict:
  """Package versions, devices, host: what a reader needs to reproduce the numbers."""
  versions = {}
  for p in PACKAGES:
    try:
      versions[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      versions[p] = None
  env = {"versions": versions, "python": platform.python_version(),
         "platform": platform.platform()}
  try:
    import jax
    env["devices"] = [str(d) for d in jax.devices()]
    env["device_kind"] = jax.devices()[0].device_kind
    env["process_count"] = jax.process_count()
  except Exception as e:  # a report must still be written if no backend initialises
    env["devices"] = f"unavailable: {e}"
  return env


# ---------------------------------------------------------------------------------------
# Markdown.


def _f(x, digits=3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f"{x:.{digits}f}"


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def _mods(config) -> list[str]:
  return list(config.modalities)


def markdown(results: Mapping, config) -> str:
  mods = _mods(config)
  ref = config.reference.name
  a, b = mods[0], mods[1]
  out = [f"# platonic_jax report", "",
         f"Reference: `{ref}` ({config.reference.encoder or 'synthetic'}); modalities: "
         + ", ".join(f"`{m}` ({config.modalities[m].encoder or 'synthetic'})" for m in mods)
         + f"; data: `{config.data.name}`.", ""]
  before = results.get("before", {})
  if before:
    out += ["## Alignment before training (test split)", "",
            "m(K_mod, K_ref) for each frozen modality, their average (the baseline of the "
            "hypothesis), and the cross-modal m(K_a, K_b).", ""]
    hdr = ["metric"] + [f"{m}↔{ref}" for m in mods] + ["avg"] + [f"{a}↔{b}"]
    rows = [[lab] + [_f(r[f"{m}_ref"]) for m in mods] + [_f(r["avg"]), _f(r.get(f"{a}_{b}"))]
            for lab, r in before.items()]
    out += [_table(hdr, rows), ""]
  spaces = {"trained": results["trained"]} if "trained" in results else {}
  spaces.update({f"baseline: {k}": v for k, v in results.get("baselines", {}).items()})
  for name, sp in spaces.items():
    after = sp.get("after", {})
    out += [f"## After — {name}", "",
            f"m(K_R, K_ref) for R = the {a} side (W_x X), the {b} side (W_y Y) and their "
            "normalised mean; then the cross-modal m(W_x X, W_y Y).", ""]
    reps = mods + ["mean"]
    hdr = ["metric"] + [f"{r}↔{ref}" for r in reps] + [f"{a}↔{b}", "before avg"]
    rows = [[lab] + [_f(r.get(f"{rp}_ref")) for rp in reps]
            + [_f(r.get(f"{a}_{b}")), _f(before.get(lab, {}).get("avg"))]
            for lab, r in after.items()]
    out += [_table(hdr, rows), ""]
    v = sp.get("verdict")
    if v:
      lvl = int(round(100 * float(config.eval.ci)))
      out += [f"**Verdict** (Δ = m(K_R, K_ref) − avg(m(K_X, K_ref), m(K_Y, K_ref)); "
              f"{lvl}% bootstrap interval over test samples):", ""]
      hdr = ["metric", "R", "Δ", f"{lvl}% CI", "Δ > 0", "CI > 0"]
      rows = []
      for lab, per in v.items():
        for rp in ("mean", a, b):
          if rp in per:
            e = per[rp]
            rows.append([lab, rp, _f(e["delta"], 4),
                         f"[{_f(e['ci_low'], 4)}, {_f(e['ci_high'], 4)}]", _f(e["holds"]),
                         # no interval computed (eval.bootstrap_resample = 0): no claim
                         _f(e["significant"]) if e["ci_low"] is not None else "–"])
      out += [_table(hdr, rows), ""]
    ret = sp.get("retrieval", {})
    if ret:
      ks = [int(k) for k in config.eval.retrieval_ks]
      hdr = ["protocol", "direction"] + [f"R@{k}" for k in ks] + ["median rank", "queries"]
      rows = []
      for proto, dirs in ret.items():
        for d, s in dirs.items():
          rows.append([proto, "image→text" if d == "i2t" else "text→image"]
                      + [_f(100 * s[f"R@{k}"], 1) for k in ks]
                      + [_f(s["median_rank"], 1), s["num_queries"]])
      out += ["Retrieval (recall in %):", "", _table(hdr, rows), ""]
    tr = sp.get("transfer")
    if tr:
      rows = [[k, _f(100 * e["transfer_acc"], 1), _f(100 * e.get("within_acc", float("nan")), 1),
               _f(100 * e["chance"], 1)] for k, e in tr.items()]
      out += ["Cross-modal transfer (Gaussian classifier fit on the source side, accuracy %):",
              "", _table(["source→target", "transfer", "within source", "chance"], rows), ""]
    info = sp.get("info")
    if info:
      out += ["Fit: " + ", ".join(f"{k}={_short(v)}" for k, v in info.items()), ""]
  hist = results.get("train", {}).get("history") or []
  if hist:
    out += ["## Training", "",
            f"{len(hist)} logged steps; first loss {_f(hist[0].get('loss'), 4)}, last "
            f"{_f(hist[-1].get('loss'), 4)} (step {hist[-1].get('step')}). See "
            "`train_loss.png`.", ""]
  out += ["## Figures", "", "![alignment](alignment.png)", "",
          "![mutual kNN vs k](mutual_knn_vs_k.png)", "", "![recall](recall.png)", ""]
  if hist:
    out += ["![training loss](train_loss.png)", ""]
  return "\n".join(out)


def _short(v) -> str:
  if isinstance(v, float):
    return _f(v, 4)
  if isinstance(v, (list, tuple)) and len(v) > 6:
    return "[" + ", ".join(_short(x) for x in v[:6]) + ", …]"
  if isinstance(v, (list, tuple)):
    return "[" + ", ".join(_short(x) for x in v) + "]"
  if isinstance(v, Mapping):
    return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
  return str(v)


# ---------------------------------------------------------------------------------------
# Figures.


def _plt():
  import matplotlib
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt
  return plt


def fig_alignment(results: Mapping, config, path: str) -> None:
  """Grouped bars per metric: frozen modalities and their average (before) vs the trained
  representations and the baselines' mean representation (after)."""
  plt = _plt()
  mods = _mods(config)
  before = results.get("before", {})
  after = results.get("trained", {}).get("after", {})
  labels = [lab for lab in before if "@" not in lab] or list(before)
  series = [(f"{m} (frozen)", [before[l][f"{m}_ref"] for l in labels]) for m in mods]
  series.append(("avg frozen", [before[l]["avg"] for l in labels]))
  if after:
    series += [(f"trained: {mods[0]} side", [after[l][f"{mods[0]}_ref"] for l in labels]),
               ("trained: mean", [after[l]["mean_ref"] for l in labels])]
  for kind, sp in results.get("baselines", {}).items():
    series.append((f"{kind}: mean", [sp["after"][l]["mean_ref"] for l in labels]))
  fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels) + 2), 5.2))
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(labels))
  for i, (name, vals) in enumerate(series):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
  ax.set_xticks(x, labels, rotation=20, ha="right")
  ax.set_ylabel(f"alignment to {config.reference.name}")
  ax.set_title("Kernel alignment to the reference, before vs after")
  ax.axhline(0, color="k", lw=0.5)
  # Below the axes: inside, the legend would hide bars.
  ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _knn_by_k(table: Mapping, col: str, default_k: int) -> tuple[list[int], list[float]]:
  pts = []
  for lab, row in table.items():
    if lab == "mutual_knn":
      pts.append((default_k, row[col]))
    elif lab.startswith("mutual_knn@"):
      pts.append((int(lab.split("@")[1]), row[col]))
  pts.sort()
  return [p[0] for p in pts], [p[1] for p in pts]


def fig_mutual_knn_vs_k(results: Mapping, config, path: str) -> None:
  plt = _plt()
  mods = _mods(config)
  k0 = int(config.eval.k)
  fig, ax = plt.subplots(figsize=(5.5, 4))
  before = results.get("before", {})
  for m in mods:
    ks, v = _knn_by_k(before, f"{m}_ref", k0)
    ax.plot(ks, v, "o--", label=f"{m} (frozen)")
  ks, v = _knn_by_k(before, "avg", k0)
  ax.plot(ks, v, "k:", label="avg frozen")
  after = results.get("trained", {}).get("after", {})
  if after:
    for rep in (mods[0], "mean"):
      ks, v = _knn_by_k(after, f"{rep}_ref", k0)
      ax.plot(ks, v, "s-", label=f"trained: {rep}")
  ax.set_xscale("log")
  if ks:
    ax.set_xticks(ks, [str(k) for k in ks])  # plain k values, not 6x10^0 log labels
    ax.minorticks_off()
  ax.set_xlabel("k")
  ax.set_ylabel(f"mutual kNN with {config.reference.name}")
  ax.set_title("Mutual k-NN alignment vs k")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fig_train_loss(history, path: str) -> None:
  plt = _plt()
  steps = [h["step"] for h in history if "loss" in h]
  loss = [h["loss"] for h in history if "loss" in h]
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ax.plot(steps, loss, "-o", ms=3)
  ax.set_xlabel("step")
  ax.set_ylabel("contrastive loss")
  ax.set_title("Training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fig_recall(results: Mapping, config, path: str) -> None:
  plt = _plt()
  ks = [int(k) for k in config.eval.retrieval_ks]
  spaces = {"trained": results.get("trained", {})}
  spaces.update(results.get("baselines", {}))
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
  for ax, d, title in zip(axes, ("i2t", "t2i"), ("image → text", "text → image")):
    for name, sp in spaces.items():
      for proto, dirs in sp.get("retrieval", {}).items():
        ax.plot(ks, [100 * dirs[d][f"R@{k}"] for k in ks], "o-",
                label=f"{name} ({proto})")
    ax.set_xlabel("K")
    ax.set_xticks(ks)
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("recall@K (%)")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# Summary and the whole report.


def summary(results: Mapping, config) -> str:
  """A few lines for the console: the verdict per metric, retrieval, the best baseline."""
  mods = _mods(config)
  lines = ["== platonic_jax summary =="]
  v = results.get("trained", {}).get("verdict", {})
  if v:
    lvl = int(round(100 * float(config.eval.ci)))
    lines.append(f"hypothesis m(K_repr, K_{config.reference.name}) > avg(m(K_X, K_ref), "
                 f"m(K_Y, K_ref)), R = mean representation ({lvl}% CI):")
    for lab, per in v.items():
      e = per.get("mean")
      if e:
        tag = "HOLDS (significant)" if e["significant"] else ("holds" if e["holds"] else "fails")
        lines.append(f"  {lab:<18} Δ={e['delta']:+.4f} [{_f(e['ci_low'], 4)}, "
                     f"{_f(e['ci_high'], 4)}]  {tag}")
    n_sig = sum(bool(p.get("mean", {}).get("significant")) for p in v.values())
    lines.append(f"  -> significant for {n_sig}/{len(v)} metrics")
  ret = results.get("trained", {}).get("retrieval", {})
  for proto, dirs in ret.items():
    lines.append(f"retrieval {proto}: " + "; ".join(
        f"{d} R@1/5/10 = " + "/".join(_f(100 * s.get(f"R@{k}", float('nan')), 1)
                                      for k in (1, 5, 10))
        + f" medR {_f(s['median_rank'], 1)}" for d, s in dirs.items()))
  for kind, sp in results.get("baselines", {}).items():
    mk = sp.get("after", {}).get("mutual_knn", {}).get("mean_ref")
    r1 = sp.get("retrieval", {}).get("1:1", {}).get("i2t", {}).get("R@1")
    lines.append(f"baseline {kind}: mutual_knn(mean, ref)={_f(mk)}  i2t R@1="
                 f"{_f(None if r1 is None else 100 * r1, 1)}%")
  lines.append(f"modalities: {', '.join(mods)}; reference: {config.reference.name}")
  return "\n".join(lines)


def write_report(results: Mapping, config, workdir: str, *, print_summary: bool = True
                 ) -> dict[str, str]:
  """Writes report.json / report.md / figures under ``<workdir>/report``; returns paths.

  report.json and report.md are written atomically (a killed run never leaves half of
  either); the PNG figures are plain ``savefig`` writes. Raises ValueError if
  ``results`` lacks the "before" table.
  """
  if "before" not in results:
    raise ValueError("results has no 'before' table (evaluate.alignment_before); the report "
                     "needs at least that stage")
  out_dir = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "report.json"),
           "md": os.path.join(out_dir, "report.md"),
           "alignment": os.path.join(out_dir, "alignment.png"),
           "mutual_knn_vs_k": os.path.join(out_dir, "mutual_knn_vs_k.png"),
           "recall": os.path.join(out_dir, "recall.png")}
  cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  doc = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
         "results": _features.jsonable(results, nonfinite_to_none=True, sort_keys=False),
         "config": _features.jsonable(cfg, nonfinite_to_none=True),
         "environment": environment()}
  _features.atomic_write_bytes(paths["json"],
                                json.dumps(doc, indent=1, allow_nan=False).encode())
  _features.atomic_write_bytes(paths["md"], markdown(results, config).encode())
  fig_alignment(results, config, paths["alignment"])
  fig_mutual_knn_vs_k(results, config, paths["mutual_knn_vs_k"])
  if results.get("trained", {}).get("retrieval") or results.get("baselines"):
    fig_recall(results, config, paths["recall"])
  else:
    paths.pop("recall")
  hist = results.get("train", {}).get("history") or []
  if hist:
    paths["train_loss"] = os.path.join(out_dir, "train_loss.png")
    fig_train_loss(hist, paths["train_loss"])
  if print_summary:
    print(summary(results, config))
  return paths
