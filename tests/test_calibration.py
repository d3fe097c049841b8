"""metrics.calibrate / calibrate_layers against the paper's package (calibrated-similarity
0.1.1, torch) given the same permutations; the cheap nulls against recomputing the metric
on the permuted b; the p-values' distribution under a true null; determinism."""

import calibrated_similarity as cs
import numpy as np
import pytest
import scipy.stats
import torch

import jax
from platonic_jax import errors, metrics, sharding
from platonic_jax.metrics import calibration, nulls, registry


def data(n, da, db, seed=0, shared=0.5):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 4))
  a = z @ rng.standard_normal((4, da)) + rng.standard_normal((n, da))
  b = z @ rng.standard_normal((4, db)) * shared + rng.standard_normal((n, db))
  return a.astype(np.float32), b.astype(np.float32)


OPTIONS = {"mutual_knn": {"k": 5}, "cycle_knn": {"k": 5}, "lcs_knn": {"k": 5},
           "edit_distance_knn": {"k": 5}, "knn_jaccard": {"k": 5}, "rank_similarity": {"k": 5},
           "second_order_cosine": {"k": 5}, "cknna": {"k": 5}, "svcca": {"cca_dim": 4},
           "cka@rbf": {"kernel": "rbf", "sigma": 4.0}, "rv@adjusted": {"adjusted": True},
           "shape_metric@0.5": {"alpha": 0.5}, "rsa@euclidean": {"rdm": "euclidean"},
           "rsa@spearman": {"compare": "spearman", "max_pairs": 1000}}
ALL = sorted(set(registry.REGISTRY) | set(OPTIONS))


def _metric(name):
  return name.partition("@")[0], OPTIONS.get(name, {})


def _package(a, b, fn, perms, **kw):
  """calibrated_similarity.calibrate with sim = the metric recomputed on b[π]."""
  rows = iter(perms)
  s, p, tau = cs.calibrate(torch.from_numpy(a), torch.from_numpy(b),
                           lambda x, y: fn(x.numpy(), y.numpy()),
                           perm_fn=lambda n, device: torch.as_tensor(next(rows)).long(), **kw)
  return float(s), float(p), float(tau)


@pytest.mark.parametrize("name", ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn",
                                  "cka", "unbiased_cka", "cknna", "svcca", "rsa", "procrustes"])
def test_calibrate_equals_the_papers_package_given_the_same_permutations(name):
  metric, kw = _metric(name)
  a, b = data(64, 10, 7)
  K = 39  # noqa: N806
  perms = metrics.permutations(K, 64, seed=3)
  fn = lambda x, y: metrics.METRICS[metric](x, y, **kw)
  for alpha, smax in ((0.05, 1.0), (0.2, None)):
    got = metrics.calibrate(a, b, metric, K=K, alpha=alpha, smax=smax, perms=perms, **kw)
    want = _package(a, b, fn, perms, K=K, alpha=alpha, smax=smax)
    assert (got.score, got.p_value, got.tau) == pytest.approx(want, abs=1e-6)
    assert got.observed == pytest.approx(fn(a, b), abs=1e-7)


@pytest.mark.parametrize("name,agg", [("mutual_knn", "max"), ("mutual_knn", "mean"),
                                      ("cka", "max"), ("cka", "mean"), ("cknna", "max")])
def test_calibrate_layers_equals_the_papers_package(name, agg):
  metric, kw = _metric(name)
  rng = np.random.default_rng(1)
  base = data(48, 6, 5, seed=2)
  la = [base[0] + 0.3 * rng.standard_normal(base[0].shape).astype(np.float32) for _ in range(3)]
  lb = [base[1], rng.standard_normal((48, 9)).astype(np.float32)]  # widths may differ
  K = 29  # noqa: N806
  perms = metrics.permutations(K, 48, seed=5)
  got = metrics.calibrate_layers(la, lb, metric, agg=agg, K=K, perms=perms, **kw)
  rows = iter(perms)
  s, p, tau = cs.calibrate_layers(
      [torch.from_numpy(x) for x in la], [torch.from_numpy(x) for x in lb],
      lambda x, y: metrics.METRICS[metric](x.numpy(), y.numpy(), **kw), agg=agg, K=K,
      perm_fn=lambda n, device: torch.as_tensor(next(rows)).long())
  assert (got.score, got.p_value, got.tau) == pytest.approx(
      (float(s), float(p), float(tau)), abs=1e-6)
  s_obs = np.array([[metrics.METRICS[metric](x, y, **kw) for y in lb] for x in la])
  np.testing.assert_allclose(got.values, s_obs, atol=1e-6)
  if agg == "max":
    assert got.pair == np.unravel_index(np.argmax(s_obs), s_obs.shape)


@pytest.mark.parametrize("name", ALL)
def test_cheap_nulls_equal_the_metric_recomputed_on_the_permuted_b(name):
  metric, kw = _metric(name)
  a, b = data(72, 9, 6, seed=4)
  if metric in ("second_order_cosine",):
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
  perms = metrics.permutations(6, 72, seed=9)
  record = registry.get(metric)
  model = calibration.null_model(record, a, b, kw)
  brute = np.array([record.fn(a, b[p], **kw) for p in perms])
  np.testing.assert_allclose(model.values(perms), brute, atol=1e-6, rtol=0, err_msg=name)


def test_relabelled_neighbour_lists_are_those_of_the_permuted_b():
  _, b = data(90, 3, 8, seed=6)
  perm = metrics.permutations(1, 90, seed=1)[0]
  _, idx = metrics.nearest_neighbors(b, 7)
  _, want = metrics.nearest_neighbors(b[perm], 7)
  np.testing.assert_array_equal(np.asarray(nulls.relabel(idx, perm)), np.asarray(want))


@pytest.mark.parametrize("name", ["cka", "mutual_knn"])
def test_p_values_are_uniform_under_a_true_null(name):
  # 120 independent (a, b) pairs: p = (1 + #{null >= obs}) / (K + 1) is uniform on the
  # grid {1, ..., K + 1} / (K + 1); jittered within its cell it is uniform on [0, 1].
  metric, kw = _metric(name)
  rng = np.random.default_rng(11)
  K = 19  # noqa: N806
  ps = []
  for i in range(120):
    a = rng.standard_normal((30, 5)).astype(np.float32)
    b = rng.standard_normal((30, 4)).astype(np.float32)
    ps.append(metrics.calibrate(a, b, metric, K=K, seed=i, **kw).p_value)
  u = np.asarray(ps) - rng.uniform(0, 1, len(ps)) / (K + 1)
  assert scipy.stats.kstest(u, "uniform").pvalue > 0.01
  assert min(ps) >= 1 / (K + 1)


@pytest.mark.parametrize("name", ["mutual_knn", "cka", "unbiased_cka", "svcca", "procrustes"])
def test_strongly_aligned_pairs_get_the_smallest_p_value(name):
  metric, kw = _metric(name)
  a, _ = data(80, 8, 8, seed=7)
  q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))
  b = (a @ q + 0.05 * np.random.default_rng(1).standard_normal(a.shape)).astype(np.float32)
  r = metrics.calibrate(a, b, metric, K=99, **kw)
  assert r.p_value == pytest.approx(1 / 100)
  assert r.observed > r.tau and 0 < r.score <= 1 and r.significant
  assert r.null.shape == (99,) and r.K == 99


def test_threshold_is_the_order_statistic_of_the_pooled_values():
  null = np.array([0.1, 0.5, 0.3, 0.2])
  # pooled sorted [0.1, 0.2, 0.3, 0.4, 0.5]; ceil(0.75 * 5) = 4 -> 0.4 (the observed)
  score, p, tau = calibration.threshold(0.4, null, alpha=0.25, smax=1.0)
  assert tau == pytest.approx(0.4) and score == 0.0 and p == pytest.approx(2 / 5)
  score, p, tau = calibration.threshold(0.9, null, alpha=0.25, smax=1.0)
  assert tau == pytest.approx(0.5) and score == pytest.approx(0.8) and p == pytest.approx(0.2)
  assert calibration.threshold(0.9, null, alpha=0.25, smax=None)[0] == pytest.approx(0.4)


@pytest.mark.parametrize("name", ["mutual_knn", "cka", "cknna", "svcca"])
def test_deterministic_for_a_seed_on_any_number_of_devices(name, num_devices):
  metric, kw = _metric(name)
  a, b = data(70, 6, 6, seed=8)
  one = sharding.data_mesh(jax.devices()[:1])
  r8 = metrics.calibrate(a, b, metric, K=21, seed=4, **kw)
  r1 = metrics.calibrate(a, b, metric, K=21, seed=4, mesh=one, **kw)
  if registry.get(metric).is_neighbour:  # the same lists, the same programs: bit for bit
    np.testing.assert_array_equal(r8.null, r1.null)
    assert (r8.score, r8.p_value, r8.tau) == (r1.score, r1.p_value, r1.tau)
  else:  # each null's cross product is one device's; the shared Grams are row-sharded sums
    np.testing.assert_allclose(r8.null, r1.null, atol=2e-7, rtol=0)
    assert r8.p_value == r1.p_value
    assert (r8.score, r8.tau) == pytest.approx((r1.score, r1.tau), abs=2e-7)
  again = metrics.calibrate(a, b, metric, K=21, seed=4, **kw)
  np.testing.assert_array_equal(again.null, r8.null)
  other = metrics.calibrate(a, b, metric, K=21, seed=5, **kw)
  assert not np.array_equal(other.null, r8.null)


def test_score_calibrate_is_the_layer_aware_form():
  rng = np.random.default_rng(3)
  base, _ = data(50, 6, 6, seed=9)
  fa = np.stack([base + 0.2 * rng.standard_normal(base.shape) for _ in range(3)])
  fb = np.stack([base @ rng.standard_normal((6, 5)) for _ in range(2)]).astype(np.float32)
  best, pair = metrics.score(fa, fb, "cka")
  r = metrics.score(fa, fb, "cka", calibrate=True, K=19, seed=2)
  assert r.observed == pytest.approx(best, abs=1e-6) and r.pair == pair
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  same = metrics.calibrate_layers(unit(fa), unit(fb), "cka", K=19, seed=2)
  np.testing.assert_allclose(r.null, same.null, atol=1e-7)
  with pytest.raises(ValueError, match="calibrate=True"):
    metrics.score(fa, fb, "cka", K=19)


def test_shape_metric_alpha_goes_through_options():
  a, b = data(60, 5, 5, seed=10)
  r = metrics.calibrate(a, b, "shape_metric", K=9, options={"alpha": 0.5})
  assert r.observed == pytest.approx(metrics.shape_metric(a, b, 0.5))
  with pytest.raises(errors.InputError, match="distance"):
    metrics.calibrate(a, b, "procrustes", K=9, angular=True)


def test_bad_inputs_name_the_problem():
  a, b = data(20, 3, 3)
  with pytest.raises(errors.InputError, match="K must be a positive integer"):
    metrics.calibrate(a, b, "cka", K=0)
  with pytest.raises(errors.InputError, match=r"alpha must be .* \(0, 1\)"):
    metrics.calibrate(a, b, "cka", alpha=1.5)
  with pytest.raises(errors.InputError, match="smax must be positive"):
    metrics.calibrate(a, b, "cka", smax=0)
  with pytest.raises(errors.InputError, match="unknown metric"):
    metrics.calibrate(a, b, "ckaa")
  with pytest.raises(errors.InputError, match="unexpected arguments"):
    metrics.calibrate(a, b, "cka", k=3)
  with pytest.raises(errors.InputError, match=r"\[K, N\] array with N = 20"):
    metrics.calibrate(a, b, "cka", K=2, perms=np.zeros((2, 19), int))
  bad = metrics.permutations(3, 20)
  bad[1, 0] = bad[1, 1]
  with pytest.raises(errors.InputError, match="perms row 1 repeats an index"):
    metrics.calibrate(a, b, "cka", K=3, perms=bad)
  with pytest.raises(errors.InputError, match="pass K=3"):
    metrics.calibrate(a, b, "cka", perms=metrics.permutations(3, 20))
  with pytest.raises(errors.InputError, match="agg must be"):
    metrics.calibrate_layers([a], [b], "cka", agg="median", K=3)
  with pytest.raises(errors.InputError, match="same number of samples"):
    metrics.calibrate_layers([a], [b[:10]], "cka", K=3)


def test_cli_calibrates_the_best_layer_pair(tmp_path, capsys):
  import json  # noqa: PLC0415
  from platonic_jax.metrics import __main__ as cli  # noqa: PLC0415
  a, b = data(60, 6, 5, seed=12)
  np.save(tmp_path / "a.npy", np.stack([a, a[:, ::-1] + 1]))
  np.save(tmp_path / "b.npy", b)
  assert cli.main([str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metric=cka",
                   "--calibrate=19", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  want = metrics.score(metrics.prepare(np.stack([a, a[:, ::-1] + 1])), metrics.prepare(b),
                       "cka", calibrate=True, K=19)
  assert out["p_value"] == pytest.approx(want.p_value) and out["K"] == 19
  assert out["calibrated"] == pytest.approx(want.score) and out["layers"] == list(want.pair)


def test_the_tile_never_changes_a_calibration():
  a, b = data(70, 6, 6, seed=13)
  small = metrics.calibrate(a, b, "mutual_knn", K=9, k=5, tile=16)
  big = metrics.calibrate(a, b, "mutual_knn", K=9, k=5, tile=1000)
  np.testing.assert_array_equal(small.null, big.null)  # the same lists
  assert (small.score, small.p_value, small.tau) == (big.score, big.p_value, big.tau)
  # CKNNA's masks are the same lists; its kernel values are block matmuls of another
  # shape, so they agree to float rounding
  small = metrics.calibrate(a, b, "cknna", K=9, k=5, tile=16)
  big = metrics.calibrate(a, b, "cknna", K=9, k=5, tile=1000)
  np.testing.assert_allclose(small.null, big.null, atol=1e-7, rtol=0)
  assert small.p_value == big.p_value
