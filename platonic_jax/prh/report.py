"""The sweep's report in ``<workdir>/report/``, rendered from ``records.Sweep``:

    matrix.json        every model (info) and every (metric, language, vision) score:
                       score, best layers, calibrated score, p-value, tau, K; the config,
                       the stage keys, package versions, devices
    matrix.csv         one row per (metric, language, vision), the same numbers
    report.md          per metric, the language x vision tables (raw; calibrated and p)
    <metric>_heatmap.png, <metric>_vs_bpb.png, <metric>_vs_params.png   (prh.figures)

and a console summary: the strongest pairs of the first metric. Written atomically.
"""

from __future__ import annotations

import csv
import datetime
import io
import os

from platonic_jax import report as report_lib
from platonic_jax import typed_json
from platonic_jax import workdir as workdir_lib
from platonic_jax.prh import figures
from platonic_jax.prh import models as models_lib
from platonic_jax.prh.records import PairScore, Sweep

REPORT_DIR = "report"
CSV_COLUMNS = ("metric", "language", "vision", "score", "language_layer", "vision_layer",
               "calibrated", "p_value", "tau", "K", "language_family", "language_params",
               "language_bpb", "vision_family", "vision_params")


def _fmt(x, digits: int = 4) -> str:
  if x is None:
    return "–"
  if isinstance(x, float):
    return f"{x:.{digits}f}"
  return str(x)


def _params(n) -> str:
  if not n:
    return "–"
  for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return str(n)


def matrix_csv(sweep: Sweep) -> str:
  info = {m.name: m for m in sweep.language + sweep.vision}
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(CSV_COLUMNS)
  for s in sweep.scores:
    lm, vm = info[s.language], info[s.vision]
    w.writerow([s.metric, s.language, s.vision, repr(s.score), s.language_layer,
                s.vision_layer, "" if s.calibrated is None else repr(s.calibrated),
                "" if s.p_value is None else repr(s.p_value),
                "" if s.tau is None else repr(s.tau), s.K, lm.family, lm.num_params or "",
                "" if lm.bpb is None else repr(lm.bpb), vm.family, vm.num_params or ""])
  return buf.getvalue()


def _table(sweep: Sweep, metric: str, cell) -> list[str]:
  vis = [models_lib.display(m.name) for m in sweep.vision]
  lines = ["| language model | params | bpb | " + " | ".join(vis) + " |",
           "| --- | --- | --- |" + " --- |" * len(vis)]
  for lm in sweep.language:
    cells = [cell(sweep.get(metric, lm.name, vm.name)) for vm in sweep.vision]
    lines.append(f"| {models_lib.display(lm.name)} | {_params(lm.num_params)} | "
                 f"{_fmt(lm.bpb, 3)} | " + " | ".join(cells) + " |")
  return lines


def strongest(sweep: Sweep, metric: str, top: int) -> list[PairScore]:
  rows = [s for s in sweep.scores if s.metric == metric]
  return sorted(rows, key=lambda s: -s.score)[:top]


def markdown(sweep: Sweep, top: int = 10) -> str:
  out = ["# The Platonic study's alignment matrix", "",
         f"{len(sweep.language)} language x {len(sweep.vision)} vision models, metrics "
         f"{', '.join(sweep.metrics)}. Each cell: the best value over every (vision layer, "
         "language layer) pair of the clamped, l2-normalised features (the release's "
         "`compute_score`) and, below, that maximum calibrated against row permutations of "
         "the language features applied to every layer (Gröger et al. 2026, Algorithm 2) with "
         "its p-value. docs/prh.md says how each number is computed.", "",
         "## Models", "", "| model | modality | family | params | layers | width | bpb | loss |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for m in sweep.language + sweep.vision:
    widths = sorted(set(m.dims))
    out.append(f"| {m.name} | {m.modality} | {m.family} | {_params(m.num_params)} | "
               f"{m.num_layers} | {'/'.join(map(str, widths))} | {_fmt(m.bpb, 4)} | "
               f"{_fmt(m.loss, 4)} |")
  for metric in sweep.metrics:
    out += ["", f"## {metric}", "", "Raw (best layer pair: language layer, vision layer):", ""]
    out += _table(sweep, metric, lambda s: f"{s.score:.4f} ({s.language_layer}, "
                                           f"{s.vision_layer})")
    if any(s.calibrated is not None for s in sweep.scores if s.metric == metric):
      out += ["", "Calibrated (p-value):", ""]
      out += _table(sweep, metric, lambda s: f"{_fmt(s.calibrated)} (p {_fmt(s.p_value, 3)})")
    out += ["", f"Strongest pairs ({metric}):", "",
            "| language | vision | score | layers (language, vision) | calibrated | p |",
            "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {s.language} | {s.vision} | {s.score:.4f} | ({s.language_layer}, "
            f"{s.vision_layer}) | {_fmt(s.calibrated)} | {_fmt(s.p_value, 3)} |"
            for s in strongest(sweep, metric, top)]
  return "\n".join(out) + "\n"


def summary(sweep: Sweep, top: int = 10) -> str:
  metric = sweep.metrics[0]
  lines = [f"Platonic sweep: {len(sweep.language)} language x {len(sweep.vision)} vision "
           f"models, {len(sweep.metrics)} metric(s). Strongest pairs by {metric}:"]
  for s in strongest(sweep, metric, top):
    cal = ("" if s.calibrated is None else
           f"  calibrated {s.calibrated:.4f} (p = {s.p_value:.3g}, K = {s.K})")
    lines.append(f"  {s.score:.4f}  {models_lib.display(s.language)} x "
                 f"{models_lib.display(s.vision)}  (layers {s.language_layer}, "
                 f"{s.vision_layer}){cal}")
  return "\n".join(lines)


def write(sweep: Sweep, workdir: str, *, config=None, keys=None, top: int = 10,
          print_summary: bool = True) -> dict[str, str]:
  """Writes ``<workdir>/report/``; returns {what: path}."""
  out = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out, exist_ok=True)
  paths = {"json": os.path.join(out, "matrix.json"), "csv": os.path.join(out, "matrix.csv"),
           "md": os.path.join(out, "report.md")}
  doc = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
         "language": typed_json.dump(sweep.language), "vision": typed_json.dump(sweep.vision),
         "metrics": list(sweep.metrics),
         "scores": [{k: v for k, v in typed_json.dump(s).items() if k != "layer_scores"}
                    for s in sweep.scores],
         "config": typed_json.dump(dict(config or {})), "keys": dict(keys or {}),
         "environment": report_lib.environment()}
  workdir_lib.atomic_write_json(paths["json"], doc)
  workdir_lib.atomic_write_bytes(paths["csv"], matrix_csv(sweep).encode())
  workdir_lib.atomic_write_bytes(paths["md"], markdown(sweep, top).encode())
  for metric in sweep.metrics:
    for kind, draw in (("heatmap", figures.heatmap), ("vs_bpb", figures.vs_bpb),
                       ("vs_params", figures.vs_params)):
      path = os.path.join(out, f"{metric}_{kind}.png")
      draw(sweep, metric, path)
      paths[f"{metric}_{kind}"] = path
  if print_summary:
    print(summary(sweep, top))
  return paths
