"""The metrics benchmark's workers: ours and the dense PyTorch reference approach agree."""

import pytest

from platonic_jax.benchmarks import metrics as bench


@pytest.mark.parametrize("metric", ["mutual_knn", "cka"])
def test_benchmark_workers_agree_with_the_reference_approach(metric):
  ours = bench.run_one(metric, 96, tile=32)
  ref = bench.run_reference(metric, 96)
  assert ours["value"] == pytest.approx(ref["value"], abs=1e-5)
  assert ours["seconds"] > 0 and 0 < ours["efficiency"] and ours["peak_rss_mb"] > 0


def test_worker_rows_name_their_tile_and_recall():
  approx = bench.run_one("mutual_knn@approx", 96)
  assert approx["peak_dtype"] == "fp32" and approx["tile"] == 96   # the default, balanced
  # Off TPU approx_max_k is exact (and "auto" keeps the exact host kernel on CPU).
  assert approx["approx_recall_measured"] == 1.0 and approx["approx_recall_target"] == 0.95
  assert bench.run_one("cka", 96)["tile"] is None   # linear CKA is not tiled


def test_benchmark_table_and_targets():
  rows = [
      {"metric": "mutual_knn", "n": 16000, "seconds": 5.0, "peak_rss_mb": 600.0,
       "gram_gflop": 393.2, "efficiency": 0.85, "reference_seconds": 60.0},
      {"metric": "mutual_knn", "n": 64000, "seconds": 90.0, "peak_rss_mb": 1100.0,
       "gram_gflop": 6291.5, "efficiency": 0.7},
      {"metric": "cka", "n": 16000, "error": "timeout after 5 s"},
  ]
  table = bench._fmt_table(rows)
  assert "| mutual_knn | 16000 | 5.000 | 600 | 78.6 | 85% | 60.00 | 12x |" in table
  assert "error: timeout" in table
  targets = "\n".join(bench._targets(rows))
  assert "12.0x PASS" in targets and "1100 MB FAIL" in targets and "best 85% PASS" in targets


def test_calibration_workers_and_targets():
  from platonic_jax.benchmarks import calibration as cal  # noqa: PLC0415
  knn = cal.run_calibration("mutual_knn", 96, 8)
  cka = cal.run_calibration("cka", 96, 8)
  assert knn["null_seconds"] > 0 and "efficiency" not in knn
  assert cka["null_gflop"] == pytest.approx(8 * 2 * 96 * 768 * 768 / 1e9) and cka["efficiency"] > 0
  pk = cal.run_package("cka", 96, 2)
  table = cal.fmt_calibration([knn, cka], {("cka", 96): pk})
  assert "| cka | 96 | 8 |" in table and "x |" in table
  rows = [{"metric": "mutual_knn", "n": 16000, "K": 1000, "call_seconds": 2.0,
           "null_seconds": 3.0},
          {"metric": "cka", "n": 16000, "K": 200, "call_seconds": 0.3, "null_seconds": 20.0,
           "efficiency": 0.85}]
  lines = "\n".join(cal.calibration_targets(rows))
  assert "1.50x PASS" in lines and "85% PASS" in lines
