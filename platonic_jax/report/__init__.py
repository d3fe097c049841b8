"""The report: ``report.json``, ``report.md``, PNG figures and a printed summary.

    write_report(results, labels, workdir, config=..., keys=...)

``results``: ``evaluation.records.Results`` (what the stages produced); ``labels``: the
display names (``Labels``: the reference's name, what made each source, the data).
Writes into ``<workdir>/report/``: ``report.json`` (every number, the config, the stage
keys, package versions, devices), ``report.md`` (tables), ``alignment.png``,
``mutual_knn_vs_k.png``, ``scale_curve.png`` (when there are scale curves),
``recall.png`` (when there is retrieval) and ``train_loss.png`` (when there is a
training log). report.json and report.md are written atomically.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from typing import Mapping

from platonic_jax import typed_json
from platonic_jax import workdir as workdir_lib
from platonic_jax.evaluation.records import Results
from platonic_jax.report import figures
from platonic_jax.report.labels import Labels
from platonic_jax.report.markdown import markdown
from platonic_jax.report.summary import summary

REPORT_DIR = "report"
PACKAGES = ("platonic_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "scipy", "transformers", "tokenizers", "tensorflow-datasets", "grain",
            "ml_collections", "matplotlib")

__all__ = ["Labels", "environment", "markdown", "summary", "write_report"]


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
    import jax  # noqa: PLC0415
    env["devices"] = [str(d) for d in jax.devices()]
    env["device_kind"] = jax.devices()[0].device_kind
    env["process_count"] = jax.process_count()
  except Exception as e:  # noqa: BLE001 - a report must still be written without a backend
    env["devices"] = f"unavailable: {e}"
  return env


def write_report(results: Results, labels: Labels, workdir: str, *,
                 config: Mapping | None = None, keys: Mapping[str, str] | None = None,
                 print_summary: bool = True) -> dict[str, str]:
  """Writes the report under ``<workdir>/report``; returns {what: path}."""
  out_dir = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, file) for name, file in (
      ("json", "report.json"), ("md", "report.md"), ("alignment", "alignment.png"),
      ("mutual_knn_vs_k", "mutual_knn_vs_k.png"))}
  doc = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
         "results": typed_json.dump(results), "labels": typed_json.dump(labels),
         "config": typed_json.dump(dict(config or {})), "keys": dict(keys or {}),
         "environment": environment()}
  workdir_lib.atomic_write_json(paths["json"], doc)
  workdir_lib.atomic_write_bytes(paths["md"], markdown(results, labels).encode())
  figures.alignment(results, labels, paths["alignment"])
  figures.mutual_knn_vs_k(results, labels, paths["mutual_knn_vs_k"])
  if results.before.curves:
    paths["scale_curve"] = os.path.join(out_dir, "scale_curve.png")
    figures.scale_curve(results, labels, paths["scale_curve"])
  if any(sp.retrieval for sp in results.spaces):
    paths["recall"] = os.path.join(out_dir, "recall.png")
    figures.recall(results, paths["recall"])
  if results.history:
    paths["train_loss"] = os.path.join(out_dir, "train_loss.png")
    figures.train_loss(results, paths["train_loss"])
  if print_summary:
    print(summary(results, labels))
  return paths
