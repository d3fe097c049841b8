"""The report: JSON with every number, markdown tables, readable PNG figures, rendered
from typed results built here (no pipeline run)."""

import json
import os

import numpy as np

from platonic_jax import report, typed_json
from platonic_jax.evaluation import records as r

PAIR = ("image", "text")


def _results(rng) -> r.Results:
  specs = [r.MetricSpec("mutual_knn", "mutual_knn", k=10), r.MetricSpec("cka", "cka"),
           r.MetricSpec("mutual_knn@5", "mutual_knn", k=5),
           r.MetricSpec("mutual_knn@20", "mutual_knn", k=20)]
  u = lambda: float(rng.uniform())  # noqa: E731

  def row(spec, sides, avg=False):
    to_ref = {s: u() for s in sides}
    return r.AlignmentRow(spec, to_ref, (r.CrossValue("image", "text", u()),),
                          (to_ref["image"] + to_ref["text"]) / 2 if avg else None)

  before = r.AlignmentTable(PAIR, PAIR, tuple(row(s, PAIR, True) for s in specs))

  def space(name, info=None, resample=True):
    sides = PAIR + ("mean",)
    entry = lambda: r.VerdictEntry(float(rng.normal()), r.Interval(-0.1, 0.2, 10))  # noqa
    off = r.VerdictEntry(0.05, None, "off (--config.eval.bootstrap_resample=100 turns it on)")
    verdict = r.Verdict(PAIR, 0.95, tuple(
        r.VerdictRow(s, {rep: entry() if s.metric != "cka" or resample else off
                         for rep in sides}) for s in specs))
    ranks = r.RankSummary({1: 0.2, 5: 0.5, 10: 0.7}, 5.0, 9.1, 100)
    ret = r.Retrieval((r.RetrievalProtocol("1:1", (
        r.RetrievalDirection("image", "text", ranks),
        r.RetrievalDirection("text", "image", ranks))),))
    return r.SpaceResult(name, r.AlignmentTable(sides, PAIR, tuple(row(s, sides) for s in specs)),
                         verdict, ret, r.Transfer((r.TransferEntry("image", "text", 0.8, 0.9,
                                                                   0.1),)), info)

  info = r.CCAInfo(4, (0.9, 0.5, 0.1))
  history = tuple(r.LogRecord(step=s, loss=3.0 / (1 + s), grad_norm=1.0, lr=1e-3,
                              steps_per_s=10.0) for s in range(0, 40, 5))
  return r.Results(PAIR, PAIR, before, (space("trained", resample=False), space("cca", info)),
                   history)


LABELS = report.Labels("dino", {"image": "synthetic", "text": "synthetic", "ref": "synthetic"},
                       "synthetic")


def test_write_report_from_typed_results(tmp_path, capsys):
  res = _results(np.random.default_rng(0))
  paths = report.write_report(res, LABELS, str(tmp_path), config={"eval": {"k": 10}},
                              keys={"before": "abc"})
  assert set(paths) == {"json", "md", "alignment", "mutual_knn_vs_k", "recall", "train_loss"}
  doc = json.load(open(paths["json"]))  # strict JSON
  back = typed_json.load(r.Results, doc["results"])
  assert back == res  # every number, losslessly
  assert doc["config"]["eval"]["k"] == 10 and doc["keys"] == {"before": "abc"}
  assert doc["environment"]["versions"]["jax"]
  assert len(doc["environment"]["devices"]) >= 1
  md = open(paths["md"]).read()
  assert "## Alignment before training" in md and "## After — trained" in md
  assert "## After — baseline: cca" in md and "Cross-modal transfer" in md
  assert "image↔dino" in md and "image→text" in md  # labels from the names
  # Table values are the numbers of the records; an interval that is off says so.
  assert f"{res.before.row('cka').to_ref['image']:.3f}" in md
  assert "off (--config.eval.bootstrap_resample=100 turns it on)" in md
  assert "[–, –]" not in md
  for key in ("alignment", "mutual_knn_vs_k", "recall", "train_loss"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(paths[key]) > 5000
  out = capsys.readouterr().out
  assert "hypothesis" in out and "baseline cca" in out and "interval off" in out
  # Re-writing (a re-run) overwrites cleanly; no temporary files are left.
  report.write_report(res, LABELS, str(tmp_path), print_summary=False)
  assert not [f for f in os.listdir(tmp_path / "report") if f.startswith(".tmp")]


def test_nonfinite_numbers_become_null_and_back():
  info = r.PerfectAlignmentInfo(2, float("nan"), 0.1, (1.0,), 1.0, 1.0)
  doc = json.loads(json.dumps(typed_json.dump(info), allow_nan=False))
  assert doc["train_alignment_error"] is None and doc["type"] == "PerfectAlignmentInfo"
  back = typed_json.load(r.SpaceInfo, doc)
  assert isinstance(back, r.PerfectAlignmentInfo) and np.isnan(back.train_alignment_error)


def test_calibrated_numbers_scale_curves_and_the_calibrated_verdict_are_reported(tmp_path,
                                                                                capsys):
  rng = np.random.default_rng(1)
  res = _results(rng)
  test = lambda: r.Calibrated(float(rng.uniform()), 0.02, 0.1, 49)  # noqa: E731

  def with_tests(t, curve_sides):
    rows = tuple(r.AlignmentRow(x.spec, x.to_ref, tuple(
        r.CrossValue(c.a, c.b, c.value, test()) for c in x.cross), x.avg,
        {s: test() for s in x.to_ref}) for x in t.rows)
    curve = r.ScaleCurve("mutual_knn", 10, tuple(
        r.CurvePoint(n, 10 / (n - 1), {s: float(rng.uniform()) for s in curve_sides})
        for n in (64, 128, 256)))
    return r.AlignmentTable(t.sides, t.pair, rows, (curve,))

  trained = res.spaces[0]
  verdict = r.Verdict(PAIR, 0.95, tuple(
      r.VerdictRow(v.spec, v.entries, {rep: float(rng.normal()) for rep in v.entries})
      for v in trained.verdict.rows))
  res = r.Results(PAIR, PAIR, with_tests(res.before, PAIR), (
      r.SpaceResult("trained", with_tests(trained.alignment, PAIR + ("mean",)), verdict,
                    trained.retrieval),), res.history)
  paths = report.write_report(res, LABELS, str(tmp_path))
  assert "scale_curve" in paths
  with open(paths["scale_curve"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  back = typed_json.load(r.Results, json.load(open(paths["json"]))["results"])
  assert back == res
  md = open(paths["md"]).read()
  row = res.before.row("cka")
  cell = f"{row.calibrated['image'].score:.3f} (p=0.020)"
  assert "Calibrated against 49 permutations" in md and cell in md
  assert "mutual_knn (k = 10) against N" in md and "| 128 | 0.079 |" in md
  v = res.space("trained").verdict.row("cka")
  assert "Δ calibrated" in md and f"{v.calibrated['mean']:.4f}" in md
  out = capsys.readouterr().out
  assert "calibrated Δ=" in out and "on calibrated scores it holds for" in out
