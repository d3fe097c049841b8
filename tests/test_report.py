"""The report: JSON with every number, markdown tables, readable PNG figures."""

import json
import os

import numpy as np
import pytest

from platonic_jax import report



def _results(rng):
  labels = ["mutual_knn", "cka", "mutual_knn@5", "mutual_knn@20"]
  before = {l: {"image_ref": rng.uniform(), "text_ref": rng.uniform(),
                "image_text": rng.uniform()} for l in labels}
  for r in before.values():
    r["avg"] = (r["image_ref"] + r["text_ref"]) / 2

  def space():
    after = {l: {"image_ref": rng.uniform(), "text_ref": rng.uniform(),
                 "mean_ref": rng.uniform(), "image_text": rng.uniform()} for l in labels}
    verdict = {l: {rep: {"delta": rng.normal(), "ci_low": -0.1, "ci_high": 0.2,
                         "holds": True, "significant": False, "num_bootstrap": 10}
                       for rep in ("image", "text", "mean")} for l in labels}
    ret = {"1:1": {d: {"R@1": 0.2, "R@5": 0.5, "R@10": 0.7, "median_rank": 5.0,
                       "mean_rank": 9.1, "num_queries": 100} for d in ("i2t", "t2i")}}
    return {"after": after, "verdict": verdict, "retrieval": ret,
            "transfer": {"image->text": {"transfer_acc": 0.8, "within_acc": 0.9,
                                         "chance": 0.1}}}

  base = space()
  base["info"] = {"dim": 4, "correlations": [0.9, 0.5, np.float32(0.1)],
                  "train_alignment_error": float("nan")}
  return {"before": before, "trained": space(), "baselines": {"cca": base},
          "train": {"history": [{"step": s, "loss": 3.0 / (1 + s)} for s in range(0, 40, 5)]}}


def test_write_report_from_a_small_result_dict(tmp_path, capsys):
  from configs import synthetic
  c = synthetic.get_config("tiny")
  res = _results(np.random.default_rng(0))
  paths = report.write_report(res, c, str(tmp_path))
  assert set(paths) == {"json", "md", "alignment", "mutual_knn_vs_k", "recall", "train_loss"}
  doc = json.load(open(paths["json"]))  # strict JSON: NaN became null
  assert doc["results"]["before"]["cka"]["avg"] == pytest.approx(res["before"]["cka"]["avg"])
  assert doc["results"]["baselines"]["cca"]["info"]["train_alignment_error"] is None
  assert doc["config"]["eval"]["k"] == c.eval.k
  assert doc["environment"]["versions"]["jax"]
  assert len(doc["environment"]["devices"]) >= 1
  md = open(paths["md"]).read()
  assert "## Alignment before training" in md and "## After — trained" in md
  assert "## After — baseline: cca" in md and "Cross-modal transfer" in md
  # Table values are the numbers of the dict.
  assert f"{res['before']['cka']['image_ref']:.3f}" in md
  for key in ("alignment", "mutual_knn_vs_k", "recall", "train_loss"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(paths[key]) > 5000
  out = capsys.readouterr().out
  assert "hypothesis" in out and "baseline cca" in out
  # Re-writing (a re-run) overwrites cleanly; no temporary files are left.
  report.write_report(res, c, str(tmp_path), print_summary=False)
  assert not [f for f in os.listdir(tmp_path / "report") if f.startswith(".tmp")]


def test_report_needs_before(tmp_path):
  from configs import synthetic
  with pytest.raises(ValueError, match="no 'before' table"):
    report.write_report({}, synthetic.get_config("tiny"), str(tmp_path))
