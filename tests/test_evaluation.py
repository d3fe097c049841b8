"""Evaluation stages: retrieval vs brute force, bootstrap coverage, tables, baselines."""

import os

import numpy as np
import pytest

from platonic_jax import evaluate
from test_metrics import ref_lcs, ref_lev  # the float64 references of the metrics tests



# ---------------------------------------------------------------------------------------
# Retrieval.


def _brute_ranks(queries, gallery, qids, gids):
  """Full argsort per query (the usual PyTorch eval loop): rank of the first correct item."""
  qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
  sim = qn.astype(np.float64) @ gn.T.astype(np.float64)
  ranks = []
  for i in range(len(qids)):
    order = np.argsort(-sim[i], kind="stable")
    ranks.append(1 + np.flatnonzero(gids[order] == qids[i])[0])
  return np.array(ranks)


def test_retrieval_ranks_match_brute_force_one_to_one_and_five_captions():
  rng = np.random.default_rng(0)
  n, d = 60, 8
  img = rng.normal(size=(n, d)).astype(np.float32)
  caps_image = np.repeat(np.arange(n), 5)
  rng.shuffle(caps_image)  # captions in any order: the index says whose they are
  caps = (img[caps_image] + 1.5 * rng.normal(size=(5 * n, d))).astype(np.float32)
  r = evaluate.retrieval_ranks(img, caps, np.arange(n), caps_image, block=7)
  np.testing.assert_array_equal(r, _brute_ranks(img, caps, np.arange(n), caps_image))
  r = evaluate.retrieval_ranks(caps, img, caps_image, np.arange(n), block=13)
  np.testing.assert_array_equal(r, _brute_ranks(caps, img, caps_image, np.arange(n)))

  res = evaluate.retrieval(img, caps, ks=(1, 5, 10), text_image=caps_image)
  i2t = _brute_ranks(img, caps, np.arange(n), caps_image)
  t2i = _brute_ranks(caps, img, caps_image, np.arange(n))
  for k in (1, 5, 10):
    assert res["i2t"][f"R@{k}"] == pytest.approx((i2t <= k).mean())
    assert res["t2i"][f"R@{k}"] == pytest.approx((t2i <= k).mean())
  assert res["i2t"]["median_rank"] == np.median(i2t)
  assert res["t2i"]["median_rank"] == np.median(t2i)
  assert res["t2i"]["num_queries"] == 5 * n
  # Partial information: between chance and perfect.
  assert 0.05 < res["i2t"]["R@1"] < 0.95

  txt = (img + 0.8 * rng.normal(size=img.shape)).astype(np.float32)
  res = evaluate.retrieval(img, txt)
  np.testing.assert_allclose(res["i2t"]["R@5"],
                             (_brute_ranks(img, txt, np.arange(n), np.arange(n)) <= 5).mean())
  perfect = evaluate.retrieval(img, img * 3.0)
  assert perfect["i2t"]["R@1"] == 1.0 and perfect["t2i"]["median_rank"] == 1.0


def test_retrieval_ties_count_against_the_query_and_bad_input():
  img = np.ones((4, 3), np.float32)  # collapsed: every text ties with every image
  res = evaluate.retrieval(img, img.copy())
  assert res["i2t"]["R@1"] == 0.0 and res["i2t"]["median_rank"] == 4.0
  with pytest.raises(ValueError, match="as many texts as images"):
    evaluate.retrieval(img, img[:3])
  with pytest.raises(ValueError, match="indexes images"):
    evaluate.retrieval(img, img, text_image=np.array([0, 1, 2, 9]))
  with pytest.raises(ValueError, match="all-zero"):
    evaluate.retrieval(np.zeros((4, 3)), img)
  with pytest.raises(ValueError, match="NaN/Inf"):
    evaluate.retrieval(np.full((4, 3), np.nan), img)


# ---------------------------------------------------------------------------------------
# Bootstrap.


def test_bootstrap_is_deterministic_and_paired():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=200), rng.normal(size=200)
  w = {"a": 1.0, "b": -1.0}
  x = evaluate.bootstrap_mean_diff({"a": a, "b": b}, w, 50, seed=3)
  np.testing.assert_array_equal(x, evaluate.bootstrap_mean_diff({"a": a, "b": b}, w, 50, 3))
  assert not np.array_equal(x, evaluate.bootstrap_mean_diff({"a": a, "b": b}, w, 50, 4))
  # Paired: identical per-sample arrays give a difference of exactly 0 in every resample.
  np.testing.assert_array_equal(evaluate.bootstrap_mean_diff({"a": a, "b": a}, w, 20, 0), 0)


def test_bootstrap_interval_coverage():
  """The 90% percentile interval covers the true mean difference in ~90% of data sets."""
  rng = np.random.default_rng(2)
  true, hits, reps = 0.3, 0, 150
  for r in range(reps):
    shared = rng.normal(size=80)
    a = shared + true + 0.5 * rng.normal(size=80)  # correlated with b: pairing matters
    b = shared + 0.5 * rng.normal(size=80)
    boots = evaluate.bootstrap_mean_diff({"a": a, "b": b}, {"a": 1.0, "b": -1.0}, 300, r)
    lo, hi = evaluate.percentile_interval(boots, 0.9)
    hits += lo <= true <= hi
  assert 0.82 <= hits / reps <= 0.97, hits / reps
  with pytest.raises(ValueError, match="must be in"):
    evaluate.percentile_interval(np.zeros(3), 1.5)


# ---------------------------------------------------------------------------------------
# Neighbour metrics per sample.


def test_per_sample_neighbour_scores_against_python_reference():
  rng = np.random.default_rng(3)
  n, k = 30, 5
  ia = np.stack([rng.permutation(12)[:k] for _ in range(n)])
  ib = np.stack([rng.permutation(12)[:k] for _ in range(n)])
  ref = {
      "mutual_knn": [len(set(x) & set(y)) / k for x, y in zip(ia, ib)],
      "lcs_knn": [ref_lcs(x, y) / k for x, y in zip(ia, ib)],
      "edit_distance_knn": [1 - ref_lev(x, y) / k for x, y in zip(ia, ib)],
  }
  for name, want in ref.items():
    np.testing.assert_allclose(evaluate._per_sample(name, ia, ib), want)
  ia2 = rng.integers(0, n, size=(n, k))
  ib2 = rng.integers(0, n, size=(n, k))
  want = [float(any(i in ia2[j] for j in ib2[i])) for i in range(n)]
  np.testing.assert_allclose(evaluate._per_sample("cycle_knn", ia2, ib2), want)


def test_per_sample_means_equal_the_metrics_module():
  from platonic_jax import metrics
  rng = np.random.default_rng(4)
  a = rng.normal(size=(90, 6)).astype(np.float32)
  b = (a @ rng.normal(size=(6, 6)) + rng.normal(size=(90, 6))).astype(np.float32)
  a, b = evaluate._l2n(a), evaluate._l2n(b)
  ia, ib = evaluate._neighbours(a, 7), evaluate._neighbours(b, 7)
  for name in metrics.NEIGHBOUR_METRICS:
    want = metrics.METRICS[name](a, b, k=7)
    assert evaluate._per_sample(name, ia, ib).mean() == pytest.approx(want, abs=1e-6), name


# ---------------------------------------------------------------------------------------
# The stages on the synthetic world.


def _tiny_config(same_width=True, **eval_overrides):
  from configs import synthetic
  c = synthetic.get_config("tiny")
  c.data.synthetic.num_train = 400
  c.data.synthetic.num_test = 120
  # One feature width everywhere (= latent_dim, the width of the z "adapter" below):
  # every metric program then compiles once per k instead of once per width.
  for m in ("image", "text", "reference"):
    if same_width:
      c.data.synthetic.dims[m] = c.data.synthetic.latent_dim
  # Each metric compiles once per input shape: a few metrics keep the test fast; the
  # metric-specific code paths of evaluate are the kNN/kernel split, both covered.
  c.eval.metrics = ("mutual_knn", "lcs_knn", "cka", "cknna", "svcca")
  c.eval.ks = (5, 10)
  c.eval.bootstrap = 100
  c.eval.bootstrap_resample = 4
  for k, v in eval_overrides.items():
    setattr(c.eval, k, v)
  return c


@pytest.fixture(scope="module")
def world():
  from platonic_jax.data import synthetic
  c = _tiny_config()
  return c, synthetic.make_world(c.data.synthetic, c.seed)


def test_alignment_before_matches_direct_metric_calls(world):
  from platonic_jax import metrics
  c, w = world
  test = w["test"]
  before = evaluate.alignment_before(test, c)
  assert set(before) == {"mutual_knn", "lcs_knn", "cka", "cknna", "svcca", "mutual_knn@5"}
  prep = lambda a: metrics.prepare(a, q=c.eval.q)  # noqa: E731
  for label, name, kw in (("mutual_knn", "mutual_knn", {"k": 10}),
                          ("mutual_knn@5", "mutual_knn", {"k": 5}),
                          ("cka", "cka", {})):
    want, _ = metrics.score(prep(test["image"]), prep(test["reference"]), name, **kw)
    assert before[label]["image_ref"] == pytest.approx(want, abs=1e-5)
    want, _ = metrics.score(prep(test["image"]), prep(test["text"]), name, **kw)
    assert before[label]["image_text"] == pytest.approx(want, abs=1e-5)
  row = before["cka"]
  assert row["avg"] == pytest.approx((row["image_ref"] + row["text_ref"]) / 2)


def test_verdict_point_estimates_equal_tables_and_intervals_contain_them(world):
  c, w = world
  test = w["test"]
  # An "adapter" that is the true latent z (what ideal training recovers) on both sides.
  emb = {"image": test["z"], "text": test["z"] + 0.1}
  before = evaluate.alignment_before(test, c)
  after = evaluate.alignment_after(test, emb, c)
  v = evaluate.verdict(test, emb, c)
  for label in before:
    for rep in ("image", "text", "mean"):
      e = v[label][rep]
      assert e["delta"] == pytest.approx(after[label][f"{rep}_ref"] - before[label]["avg"],
                                         abs=1e-5), (label, rep)
      assert e["ci_low"] <= e["ci_high"]
  # z is what the reference sees: the hypothesis holds, significantly, for the kNN metrics.
  for label in ("mutual_knn", "mutual_knn@5", "cknna"):
    assert v[label]["image"]["holds"], (label, v[label]["image"])
  assert v["mutual_knn"]["mean"]["significant"]
  assert v["cka"]["mean"]["num_bootstrap"] == c.eval.bootstrap_resample
  # And a useless "adapter" (noise) fails it.
  rng = np.random.default_rng(0)
  noise = {m: rng.normal(size=test["z"].shape) for m in ("image", "text")}
  v2 = evaluate.verdict(test, noise, c, resample=False)
  assert v2["cka"]["mean"]["ci_low"] is None and not v2["cka"]["mean"]["significant"]
  assert not v2["mutual_knn"]["mean"]["holds"] and v2["mutual_knn"]["mean"]["ci_high"] < 0


def test_mean_representation():
  u = np.array([[1.0, 0], [0, 2.0]])
  v = np.array([[0, 1.0], [0, -1.0]])
  r = evaluate.mean_representation(u, v)
  np.testing.assert_allclose(r[0], [2 ** -0.5, 2 ** -0.5])
  np.testing.assert_allclose(r[1], [0, 1.0])  # antipodal: falls back to û
  np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0)


def test_baselines_on_the_seed003_preset():
  from platonic_jax.data import synthetic
  c = _tiny_config(metrics=("mutual_knn", "cka"), ks=(10,), bootstrap=20,
                   bootstrap_resample=2, baseline_dim=2)
  c.data.synthetic.preset = "seed003"
  c.data.synthetic.dims.image = c.data.synthetic.dims.text = 4
  w = synthetic.make_world(c.data.synthetic, c.seed)
  res = evaluate.baselines(w["train"], w["test"], c)
  assert set(res) == {"procrustes", "cca", "perfect_alignment"}
  pa = res["perfect_alignment"]
  assert pa["info"]["dim"] == 2
  scale = np.linalg.norm(w["test"]["z"], axis=1).mean()
  assert pa["info"]["test_alignment_error"] < 1e-3 * scale
  assert pa["info"]["test_reconstruction_error"]["image"] > 0.1 * scale
  # Cross-modal transfer works in the aligned spaces (labels: two separated clusters).
  for kind in res:
    assert res[kind]["transfer"]["image->text"]["transfer_acc"] > 0.9, kind
  # Perfectly aligned sides: retrieval finds the partner far above chance (1/120).
  assert pa["retrieval"]["1:1"]["i2t"]["R@10"] > 0.5
  evaluate.finite_or_raise(res)


def test_evaluate_space_five_captions_and_errors(world):
  c, w = world
  test = w["test"]
  n = test["z"].shape[0]
  caps_image = np.repeat(np.arange(n), 5)
  caps = test["z"][caps_image] + 0.3 * np.random.default_rng(0).normal(
      size=(5 * n, test["z"].shape[1]))
  emb = {"image": test["z"], "text": test["z"]}
  res = evaluate.evaluate_space(test, emb, c, captions_emb=caps, caption_image=caps_image,
                                with_verdict=False)
  assert res["retrieval"]["1:1"]["i2t"]["R@1"] == 1.0
  assert res["retrieval"]["5captions"]["t2i"]["num_queries"] == 5 * n
  c.eval.metrics = ("mutual_knn", "not_a_metric")
  with pytest.raises(ValueError, match="not_a_metric"):
    evaluate.alignment_before(test, c)
  c.eval.metrics = ("mutual_knn",)
  c.eval.k = 500
  with pytest.raises(ValueError, match="smaller than the number of test samples"):
    evaluate.alignment_before(test, c)
  with pytest.raises(ValueError, match="is nan"):
    evaluate.finite_or_raise({"a": {"b": [1.0, float("nan")]}})


# ---------------------------------------------------------------------------------------
# The whole evaluation sequence on the synthetic world (what experiment.py runs).


def _pipeline(config, workdir):
  """The real stage sequence: ``experiment.train_and_evaluate`` (what run.py calls)."""
  from platonic_jax import experiment
  return experiment.train_and_evaluate(config, workdir)


def test_synthetic_pipeline_verdict_and_rerun_is_a_noop(tmp_path, monkeypatch, capsys):
  # The world's own widths (larger than latent + nuisance): the verdict's cause intact.
  c = _tiny_config(same_width=False, metrics=("mutual_knn", "cka"), ks=(5, 10),
                   bootstrap=200, bootstrap_resample=5)
  c.data.synthetic.num_train = 1024
  c.data.synthetic.num_test = 200
  c.train.num_steps = 60
  res = _pipeline(c, str(tmp_path))
  evaluate.finite_or_raise(res, "results")
  # The construction (shared z, private nuisance; docs/experiment.md) predicts the verdict.
  v = res["trained"]["verdict"]
  assert v["mutual_knn"]["mean"]["significant"], v["mutual_knn"]
  assert v["cka"]["mean"]["holds"]
  r = res["trained"]["retrieval"]["1:1"]
  assert r["i2t"]["R@10"] > 10 / 200  # far above chance
  tr = res["trained"]["transfer"]["image->text"]
  assert tr["transfer_acc"] > tr["chance"]  # 60 tiny steps: above chance, not more
  assert 0 < tr["transfer_acc"] <= tr["within_acc"] + 0.05
  assert os.path.exists(tmp_path / "report" / "report.md")
  # Re-running the same command recomputes nothing.
  calls = []
  for fn in ("alignment_before", "evaluate_space", "baselines"):
    orig = getattr(evaluate, fn)
    monkeypatch.setattr(evaluate, fn, lambda *a, _f=orig, _n=fn, **k: calls.append(_n) or _f(*a, **k))
  again = _pipeline(c, str(tmp_path))
  assert calls == []
  assert again["trained"]["verdict"] == res["trained"]["verdict"]
  # A changed eval setting recomputes the stages that depend on it.
  c.eval.bootstrap = 50
  _pipeline(c, str(tmp_path))
  assert "alignment_before" in calls and "evaluate_space" in calls
