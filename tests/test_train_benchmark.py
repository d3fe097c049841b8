"""The training benchmark runs end to end at a tiny batch (numbers are not checked: tests
never time), with every variant's row, the same FLOP count as its matmuls term by term
(the benchmark asserts that itself), and the allocator setting that run.py uses."""

from __future__ import annotations

import json

import pytest

from platonic_jax.benchmarks import train as train_benchmark


def test_every_variant_reports_its_share_of_the_peak(tmp_path, capsys):
  out = tmp_path / "train.json"
  results = train_benchmark.main(["--batch_sizes=32", "--steps=1", f"--json={out}"])
  printed = capsys.readouterr().out
  assert [r["variant"] for r in results] == list(train_benchmark.VARIANTS)
  assert json.loads(out.read_text()) == results
  for r in results:
    assert 0 < r["share_of_matmul_peak"] and 0 < r["gemms_alone_share"]
    assert r["step_gflops"] * 1e9 * r["step_ms"] / 1e3 == \
        pytest.approx(train_benchmark.step_flops(32, r["variant"]), rel=1e-9)
  assert "freed host memory kept: yes" in printed
  assert printed.count("B=    32") == 3 and "loop" in printed
