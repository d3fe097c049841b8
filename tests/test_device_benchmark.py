"""``python -m platonic_jax.benchmarks.device --quick`` on this CPU: every section of the
JSON is measured or skipped with its reason, nothing fails, and the markdown has the
tables. Three runs of a few sections each, so each test stays short (the suite's 8 CPU
devices make every program compile for 8: the metrics run at one N here)."""

from __future__ import annotations

import json

import pytest

from platonic_jax.benchmarks import device

pytest.importorskip("torch")


def _run(tmp_path, sections: str, *extra: str) -> tuple[dict, str]:
  out = tmp_path / "out"
  device.main(["--quick", f"--out={out}", f"--sections={sections}", *extra])
  with open(out / "device_benchmark.json") as f:
    result = json.load(f)
  return result, (out / "device_benchmark.md").read_text()


def _check_every_section(result: dict, measured: set[str]) -> None:
  assert set(result["sections"]) == set(device.SECTIONS)
  for name, sec in result["sections"].items():
    fails = [s for s in sec["skipped"] if s["failed"]]
    assert not fails, f"{name}: {fails}"
    assert all(s["why"] for s in sec["skipped"])
    if name in measured:
      assert sec["rows"] and sec["status"] in ("measured", "partial"), (name, sec)
    else:
      assert sec["status"] == "skipped" and sec["skipped"][0]["why"] == "not in --sections"
  assert result["machine"]["backend"] == "cpu" and result["machine"]["cpu_model"]
  assert result["quick"] and len(result["skipped"]) == sum(
      len(s["skipped"]) for s in result["sections"].values())


def test_quick_encoders_against_pytorch(tmp_path):
  result, md = _run(tmp_path, "encoders")
  _check_every_section(result, {"encoders"})
  rows = result["sections"]["encoders"]["rows"]
  ours = {(r["model"], r["dtype"]) for r in rows if r["impl"] == "platonic_jax"}
  assert ours == {(m, d) for m in device.ENCODERS for d in device.DTYPES}
  assert all(r["ratio"] > 0 for r in rows if r["impl"] == "platonic_jax")
  assert "| vit-l14 | bf16 | platonic_jax |" in md and "encoders >= 1.5x" in md


def test_quick_metrics(tmp_path):
  result, md = _run(tmp_path, "metrics", "--metric-sizes=256")
  _check_every_section(result, {"metrics"})
  metrics = result["sections"]["metrics"]
  got = {(r["metric"], r["n"]) for r in metrics["rows"]}
  assert got == {(m, 256) for m in device.KNN_METRICS}
  assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in metrics["rows"])
  # approx_max_k's recall is a TPU measurement: on CPU the row says why it is absent.
  assert any(s["what"] == "mutual_knn@approx" and "TPU" in s["why"] for s in metrics["skipped"])
  for title in ("## metrics", "## skipped", "## targets", "Gram work >= 60%"):
    assert title in md


def test_quick_train_decoder_and_loader(tmp_path):
  result, md = _run(tmp_path, "train,decoder,loader")
  _check_every_section(result, {"train", "decoder", "loader"})
  train = result["sections"]["train"]["rows"]
  assert [r["batch_size"] for r in train] == list(device.QUICK.train_batches)
  assert all(r["step_pairs_per_s"] > 0 for r in train)
  loader = result["sections"]["loader"]["rows"]
  assert any(r.get("encoder") for r in loader) and all("x_encoder" in r for r in loader)
  assert {r["dtype"] for r in result["sections"]["decoder"]["rows"]} == set(device.DTYPES)
  for title in ("## train", "## loader", "## decoder", "## skipped", "training step >= 1M"):
    assert title in md


def test_full_sizes_on_a_cpu_backend_are_skipped_with_the_reason(tmp_path):
  result, _ = _run_full(tmp_path)
  for name, sec in result["sections"].items():
    assert sec["status"] == "skipped" and not sec["rows"]
    assert "no GPU / TPU" in sec["skipped"][0]["why"], name


def _run_full(tmp_path):
  out = tmp_path / "full"
  device.main([f"--out={out}"])
  with open(out / "device_benchmark.json") as f:
    return json.load(f), None


def test_out_of_memory_is_a_skip_and_other_errors_are_failures():
  assert device.classify(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                      "allocate 8.00GiB"))[1] is False
  why, failed = device.classify(KeyError("x"))
  assert failed and why.startswith("failed: KeyError")
  why, failed = device.classify(ModuleNotFoundError("No module named 'timm'"))
  assert not failed and "missing" in why and "timm" in why


def test_the_full_runs_metrics_path_each_row_in_a_fresh_process(monkeypatch):
  """What a GPU run takes for the metrics (a worker process per row, its JSON line read
  back), here on CPU at a small N for one row; an approx row off TPU is a skip with the
  reason."""
  import dataclasses
  monkeypatch.setattr(device, "KNN_METRICS", ("mutual_knn@bf16",))
  rep = device.Report(budget=300)
  sizes = dataclasses.replace(device.QUICK, in_process=False, metric_sizes=(200,))
  device.run_metrics(rep, sizes, "cpu")
  sec = rep.sections["metrics"]
  [row] = sec["rows"]
  assert (row["metric"], row["n"], row["peak_dtype"], row["tile"]) == ("mutual_knn@bf16", 200,
                                                                       "bf16", 200)
  assert row["seconds"] > 0 and row["peak_device_mb"] is None   # XLA:CPU: see peak RSS
  assert [s["what"] for s in sec["skipped"]] == ["mutual_knn@approx"]
