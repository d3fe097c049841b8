"""The k-NN metrics' accelerator paths, checked on CPU: tiles sized from device memory,
and the opt-in approximate block top-k (``approx_recall``) against the exact one."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from absl import logging

from platonic_jax import metrics
from platonic_jax.metrics import knn, tiling


@dataclasses.dataclass
class FakeDevice:
  """What ``device_tile`` reads of a device: its platform and memory stats."""
  platform: str
  bytes_limit: int | None = None

  def memory_stats(self):
    return None if self.bytes_limit is None else {"bytes_limit": self.bytes_limit}


GB = 1 << 30


def test_device_tile_keeps_the_cpu_sizing_where_no_memory_is_reported():
  assert tiling.device_tile(64_000, 768, 10, FakeDevice("cpu", 100 * GB)) == tiling.DEFAULT_TILE
  assert tiling.device_tile(64_000, 768, 10, FakeDevice("gpu")) == tiling.DEFAULT_TILE
  assert tiling.device_tile(64_000, 768) == tiling.DEFAULT_TILE   # this CPU's devices


@pytest.mark.parametrize("n,limit,want", [
    (64_000, 139 * GB, 8192),      # H200: capped at the largest tile
    (1_000_000, 139 * GB, 8192),   # 1M x 768 f32 = 3 GB of features: still room
    (1_000_000, 8 * GB, 4096),     # 3 GB features + 0.16 GB state in 4 GB: 5 x 4096^2 x 4 fits
    (1_000_000, int(6.6 * GB), 2048),
    (1_000_000, int(6.1 * GB), 1024),
    (1_000_000, int(6.05 * GB), 512),   # below MIN_DEVICE_TILE: smaller, logged
])
def test_device_tile_is_the_largest_power_of_two_within_the_memory_budget(n, limit, want):
  t = tiling.device_tile(n, 768, 10, FakeDevice("gpu", limit))
  assert t == want
  budget = tiling.MEMORY_FRACTION * limit
  if t > tiling.SMALLEST_TILE:
    assert tiling.sweep_bytes(n, 768, 10, t) <= budget   # what it picked fits ...
  if t < tiling.MAX_DEVICE_TILE:
    assert tiling.sweep_bytes(n, 768, 10, 2 * t) > budget   # ... and twice that does not


def test_device_tile_counts_the_bf16_operand_copy():
  dev = FakeDevice("tpu", 8 * GB)
  assert tiling.sweep_bytes(1_000_000, 768, 10, 1024, itemsize=2) == (
      tiling.sweep_bytes(1_000_000, 768, 10, 1024) + 1_000_000 * 768 * 2)
  assert tiling.device_tile(1_000_000, 768, 10, dev, itemsize=2) < tiling.device_tile(
      1_000_000, 768, 10, dev)


def test_resolve_tile_checks_an_explicit_tile_and_sizes_none():
  assert tiling.resolve_tile(None, 1000, 32) == tiling.DEFAULT_TILE
  assert tiling.resolve_tile(64, 1000, 32) == 64
  with pytest.raises(ValueError, match="positive integer"):
    tiling.resolve_tile(0, 1000, 32)


def _feats(n=300, d=24, seed=0):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_the_default_tile_gives_the_same_neighbours_as_an_explicit_one():
  x = _feats()
  v0, i0 = metrics.nearest_neighbors(x, 7)
  v1, i1 = metrics.nearest_neighbors(x, 7, tile=64)
  np.testing.assert_array_equal(np.asarray(i0), np.asarray(i1))
  # The similarities only up to fp32 rounding: another block shape, another GEMM kernel.
  np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=1e-5)


def test_approx_recall_runs_approx_max_k_and_is_exact_on_cpu(monkeypatch):
  """On CPU (and GPU) XLA lowers ``approx_max_k`` to an exact sort (jax/_src/lax/ann.py
  registers the fallback lowering for every platform but TPU), so the neighbours equal
  the exact top-k's bit for bit; what is checked here is that the option reaches the
  block top-k (a call of ``lax.approx_max_k`` with the recall target). Its recall on TPU
  is measured by ``python -m platonic_jax.benchmarks.device``."""
  calls = []
  real = jax.lax.approx_max_k

  def spy(operand, k, *args, **kwargs):
    calls.append(kwargs.get("recall_target"))
    return real(operand, k, *args, **kwargs)

  monkeypatch.setattr(knn.lax, "approx_max_k", spy)
  x = _feats(n=333)
  want_v, want_i = metrics.nearest_neighbors(x, 9, tile=64, select="xla")
  # A recall target no other test uses: the program is traced afresh (lru / jit caches).
  got_v, got_i = metrics.nearest_neighbors(x, 9, tile=64, select="xla", approx_recall=0.8125)
  assert calls and set(calls) == {0.8125}
  np.testing.assert_array_equal(np.asarray(got_i), np.asarray(want_i))
  np.testing.assert_array_equal(np.asarray(got_v), np.asarray(want_v))
  recall = knn.mutual_from_idx(want_i, got_i)   # the share of exact neighbours kept
  assert float(recall) == 1.0


def test_approx_recall_through_the_metric_and_its_checks(monkeypatch):
  a, b = _feats(seed=1), _feats(seed=2)
  exact = metrics.mutual_knn(a, b, k=5, tile=64)
  assert metrics.mutual_knn(a, b, k=5, tile=64, approx_recall=0.95) == exact
  assert "approx_recall" in metrics.registry.get("mutual_knn").options
  for bad in (0, 1.5, "high", True):
    with pytest.raises(ValueError, match=r"approx_recall must be None .* in \(0, 1\]"):
      metrics.mutual_knn(a, b, k=5, approx_recall=bad)
  with pytest.raises(ValueError, match="select='xla'"):
    metrics.nearest_neighbors(a, 5, select="host", approx_recall=0.9)


def test_each_top_k_path_is_logged_once(monkeypatch):
  seen = []
  monkeypatch.setattr(knn, "_LOGGED_PATHS", set())
  monkeypatch.setattr(logging, "info", lambda msg, *args: seen.append(msg % args))
  x = _feats(n=100)
  for _ in range(2):
    metrics.nearest_neighbors(x, 3, tile=32, select="xla")
  metrics.nearest_neighbors(x, 3, tile=32, select="xla", approx_recall=0.9)
  assert seen == ["k-NN block top-k: lax.top_k on cpu",
                  "k-NN block top-k: lax.approx_max_k(recall_target=0.9) on cpu"]
