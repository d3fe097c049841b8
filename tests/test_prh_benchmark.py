"""The sweep's scoring benchmark on tiny shapes: it runs, ours gives the release's numbers
on the layer pairs the release ran, and bad options or a missing torch are one line."""

import importlib.util

import pytest

from platonic_jax.benchmarks import prh as bench


def test_quick_benchmark_matches_the_release_and_prints_the_table(capsys):
  out = bench.main(["--quick", "--metrics=mutual_knn,cka,svcca", "--calibration-K=2"])
  text = capsys.readouterr().out
  for m in ("mutual_knn", "cka"):
    assert out["max_diff"][m] < 1e-5, (m, out["max_diff"])
    assert out["cold"][m] > 0 and out["warm"][m] > 0 and out["release"][m] > 0
    assert f"| {m} |" in text
  assert "| svcca |" in text and "documented difference" in text
  assert set(out["calibration"]) == {"mutual_knn", "cka", "svcca"}
  assert "N = 96, language 3x48,4x64" in text and "speed-up" in text and "machine: " in text
  assert "the release's loop (cold, compilation included)" in text


@pytest.mark.parametrize("flag,allowed", [
    ("--metrics=mutual_knn,knn", "'knn' is not one of mutual_knn, cycle_knn"),
    ("--language=25x", "give a comma-separated list of LxD"),
    ("--vision=13*768", "give a comma-separated list of LxD"),
    ("--n=8", "give an integer above --k + 1"),
    ("--release-pairs=-1", "give 0 or a positive integer"),
])
def test_bad_options_are_one_line_naming_the_allowed_values(capsys, flag, allowed):
  with pytest.raises(SystemExit) as e:
    bench.parse([flag])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"argument {flag.split('=')[0]}" in err and allowed in err


def test_a_missing_torch_says_what_to_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "torch" else real(name, *a))
  with pytest.raises(SystemExit) as e:
    bench._release_module()
  assert "needs torch, which is not installed" in str(e.value) and "pip install torch" in str(
      e.value)
