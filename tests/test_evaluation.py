"""The evaluators: retrieval vs brute force, bootstrap coverage, tables, verdict,
baselines as fitted spaces — each through its public module."""

import dataclasses

import numpy as np
import pytest

from platonic_jax import features, metrics
from platonic_jax.data import synthetic
from platonic_jax.evaluation import (alignment, baselines, evaluators, retrieval, verdict,
                                     views)
from references import ref_lcs, ref_lev  # float64 references of the metrics



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
  r = retrieval.retrieval_ranks(img, caps, np.arange(n), caps_image, block=7)
  np.testing.assert_array_equal(r, _brute_ranks(img, caps, np.arange(n), caps_image))
  r = retrieval.retrieval_ranks(caps, img, caps_image, np.arange(n), block=13)
  np.testing.assert_array_equal(r, _brute_ranks(caps, img, caps_image, np.arange(n)))

  res = retrieval.protocol("all_captions", ("image", "text"), img, caps, ks=(1, 5, 10),
                           b_to_a=caps_image)
  i2t, t2i = (d.ranks for d in res.directions)
  assert res.directions[0].query == "image" and res.directions[1].query == "text"
  want_i2t = _brute_ranks(img, caps, np.arange(n), caps_image)
  want_t2i = _brute_ranks(caps, img, caps_image, np.arange(n))
  for k in (1, 5, 10):
    assert i2t.recall[k] == pytest.approx((want_i2t <= k).mean())
    assert t2i.recall[k] == pytest.approx((want_t2i <= k).mean())
  assert i2t.median_rank == np.median(want_i2t)
  assert t2i.median_rank == np.median(want_t2i)
  assert t2i.num_queries == 5 * n
  # Partial information: between chance and perfect.
  assert 0.05 < i2t.recall[1] < 0.95

  txt = (img + 0.8 * rng.normal(size=img.shape)).astype(np.float32)
  res = retrieval.protocol("1:1", ("image", "text"), img, txt)
  np.testing.assert_allclose(res.directions[0].ranks.recall[5],
                             (_brute_ranks(img, txt, np.arange(n), np.arange(n)) <= 5).mean())
  perfect = retrieval.protocol("1:1", ("image", "text"), img, img * 3.0)
  assert perfect.directions[0].ranks.recall[1] == 1.0
  assert perfect.directions[1].ranks.median_rank == 1.0


def test_retrieval_ties_count_against_the_query_and_bad_input():
  img = np.ones((4, 3), np.float32)  # collapsed: every text ties with every image
  pair = ("image", "text")
  res = retrieval.protocol("1:1", pair, img, img.copy()).directions[0].ranks
  assert res.recall[1] == 0.0 and res.median_rank == 4.0
  with pytest.raises(ValueError, match="as many text rows as image rows"):
    retrieval.protocol("1:1", pair, img, img[:3])
  with pytest.raises(ValueError, match="indexes rows"):
    retrieval.protocol("x", pair, img, img, b_to_a=np.array([0, 1, 2, 9]))
  with pytest.raises(ValueError, match="all-zero"):
    retrieval.protocol("1:1", pair, np.zeros((4, 3)), img)
  with pytest.raises(ValueError, match="NaN/Inf"):
    retrieval.protocol("1:1", pair, np.full((4, 3), np.nan), img)


# ---------------------------------------------------------------------------------------
# Bootstrap.


def test_bootstrap_is_deterministic_and_paired():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=200), rng.normal(size=200)
  w = {"a": 1.0, "b": -1.0}
  x = verdict.bootstrap_mean_diff({"a": a, "b": b}, w, 50, seed=3)
  np.testing.assert_array_equal(x, verdict.bootstrap_mean_diff({"a": a, "b": b}, w, 50, 3))
  assert not np.array_equal(x, verdict.bootstrap_mean_diff({"a": a, "b": b}, w, 50, 4))
  # Paired: identical per-sample arrays give a difference of exactly 0 in every resample.
  np.testing.assert_array_equal(verdict.bootstrap_mean_diff({"a": a, "b": a}, w, 20, 0), 0)


def test_bootstrap_interval_coverage():
  """The 90% percentile interval covers the true mean difference in ~90% of data sets."""
  rng = np.random.default_rng(2)
  true, hits, reps = 0.3, 0, 150
  for r in range(reps):
    shared = rng.normal(size=80)
    a = shared + true + 0.5 * rng.normal(size=80)  # correlated with b: pairing matters
    b = shared + 0.5 * rng.normal(size=80)
    boots = verdict.bootstrap_mean_diff({"a": a, "b": b}, {"a": 1.0, "b": -1.0}, 300, r)
    lo, hi = verdict.percentile_interval(boots, 0.9)
    hits += lo <= true <= hi
  assert 0.82 <= hits / reps <= 0.97, hits / reps
  with pytest.raises(ValueError, match="must be in"):
    verdict.percentile_interval(np.zeros(3), 1.5)



# ---------------------------------------------------------------------------------------
# Neighbour metrics per sample (the records' per_sample forms).


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
    np.testing.assert_allclose(metrics.registry.get(name).per_sample(ia, ib), want)
  ia2 = rng.integers(0, n, size=(n, k))
  ib2 = rng.integers(0, n, size=(n, k))
  want = [float(any(i in ia2[j] for j in ib2[i])) for i in range(n)]
  np.testing.assert_allclose(metrics.registry.get("cycle_knn").per_sample(ia2, ib2), want)


def test_per_sample_means_equal_the_metrics():
  rng = np.random.default_rng(4)
  a = rng.normal(size=(90, 6)).astype(np.float32)
  b = (a @ rng.normal(size=(6, 6)) + rng.normal(size=(90, 6))).astype(np.float32)
  a, b = views.l2n(a), views.l2n(b)
  ia, ib = (np.asarray(metrics.nearest_neighbors(x, 7)[1]) for x in (a, b))
  for name in metrics.NEIGHBOUR_METRICS:
    record = metrics.registry.get(name)
    want = record.fn(a, b, k=7)
    assert record.per_sample(ia, ib).mean() == pytest.approx(want, abs=1e-6), name
    assert float(record.neighbour_score(ia, ib)) == pytest.approx(want, abs=1e-6), name


# ---------------------------------------------------------------------------------------
# Tables and the verdict on the synthetic world.

SPECS = alignment.metric_specs(("mutual_knn", "lcs_knn", "cka", "cknna", "svcca"), k=10,
                               ks=(5, 10), cca_dim=10)
VIEWS = views.ViewParams(q=0.95, max_samples=0)
PAIR = ("image", "text")


def _world(num_train=400, num_test=120, width=None, **over):
  from configs import synthetic as synthetic_config
  c = synthetic_config.get_config("tiny")
  s = c.data.synthetic
  s.num_train, s.num_test = num_train, num_test
  if width:  # one width everywhere: every metric program compiles once per k
    for m in ("image", "text", "reference"):
      s.dims[m] = width
  for k, v in over.items():
    setattr(s, k, v)
  w = synthetic.make_world(synthetic.WorldParams.from_config(s, seed=0))
  as_split = lambda a: features.Split(  # noqa: E731
      views={"image": a["image"], "text": a["text"], "ref": a["reference"]},
      labels=a["labels"], z=a["z"])
  return as_split(w["train"]), as_split(w["test"])


@pytest.fixture(scope="module")
def world():
  return _world(width=16)


def test_frozen_table_matches_direct_metric_calls(world):
  _, test = world
  table = alignment.frozen_table(alignment.AlignmentParams(SPECS, VIEWS, PAIR),
                                 views.Frozen(test.views), PAIR)
  assert [r.spec.label for r in table.rows] == ["mutual_knn", "lcs_knn", "cka", "cknna",
                                                "svcca", "mutual_knn@5"]
  prep = lambda a: metrics.prepare(a, q=0.95)  # noqa: E731
  for label, name, kw in (("mutual_knn", "mutual_knn", {"k": 10}),
                          ("mutual_knn@5", "mutual_knn", {"k": 5}), ("cka", "cka", {})):
    row = table.row(label)
    want, _ = metrics.score(prep(test.views["image"]), prep(test.views["ref"]), name, **kw)
    assert row.to_ref["image"] == pytest.approx(want, abs=1e-5)
    want, _ = metrics.score(prep(test.views["image"]), prep(test.views["text"]), name, **kw)
    assert row.cross[0].value == pytest.approx(want, abs=1e-5)
    assert (row.cross[0].a, row.cross[0].b) == PAIR
  row = table.row("cka")
  assert row.avg == pytest.approx((row.to_ref["image"] + row.to_ref["text"]) / 2)


def test_verdict_point_estimates_equal_tables_and_intervals_contain_them(world):
  _, test = world
  frozen = views.Frozen(test.views)
  params = alignment.AlignmentParams(SPECS, VIEWS, PAIR)
  # An "adapter" that is the true latent z (what ideal training recovers) on both sides.
  emb = {"image": test.z, "text": test.z + 0.1}
  before = alignment.frozen_table(params, frozen, PAIR)
  after = alignment.adapted_table(params, frozen, emb, PAIR)
  vp = verdict.VerdictParams(SPECS, VIEWS, PAIR, bootstrap=100, resample=4,
                             resample_field="eval.bootstrap_resample=100", ci=0.95, seed=0)
  v = verdict.verdict(vp, frozen, emb)
  for r in v.rows:
    for rep in ("image", "text", "mean"):
      e = r.entries[rep]
      want = after.row(r.spec.label).to_ref[rep] - before.row(r.spec.label).avg
      assert e.delta == pytest.approx(want, abs=1e-5), (r.spec.label, rep)
      assert e.interval.low <= e.interval.high
  # The tables' values, when given, are reused: the same verdict.
  assert verdict.verdict(vp, frozen, emb, before=before, after=after) == v
  # z is what the reference sees: the hypothesis holds, significantly, for the kNN metrics.
  for label in ("mutual_knn", "mutual_knn@5", "cknna"):
    assert v.row(label).entries["image"].holds, label
  assert v.row("mutual_knn").entries["mean"].significant
  assert v.row("cka").entries["mean"].interval.num_bootstrap == 4
  # A useless "adapter" (noise) fails it; kernel intervals off say which field turns them on.
  rng = np.random.default_rng(0)
  noise = {m: rng.normal(size=test.z.shape) for m in PAIR}
  off = dataclasses.replace(vp, resample=0)
  v2 = verdict.verdict(off, frozen, noise)
  e = v2.row("cka").entries["mean"]
  assert e.interval is None and e.significant is None
  assert "--config.eval.bootstrap_resample=100" in e.off
  e = v2.row("mutual_knn").entries["mean"]
  assert not e.holds and e.interval.high < 0


def test_mean_representation():
  u = np.array([[1.0, 0], [0, 2.0]])
  v = np.array([[0, 1.0], [0, -1.0]])
  r = views.mean_representation(u, v)
  np.testing.assert_allclose(r[0], [2 ** -0.5, 2 ** -0.5])
  np.testing.assert_allclose(r[1], [0, 1.0])  # antipodal: falls back to û
  np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0)


def test_baselines_as_fitted_spaces_on_the_seed003_preset():
  train, test = _world(preset="seed003", dims={"image": 4, "text": 4, "reference": 2})
  assert test.views["ref"].shape[1] == 2
  frozen = views.Frozen(test.views)
  for kind in baselines.CLOSED_FORM:  # (asif has no fit: tests/test_recipes.py)
    # 128 requested: capped at the features' rank (2), as documented.
    space = baselines.BASELINES[kind](baselines.BaselineParams(kind, 128, PAIR), train)
    info = space.info(test, test.num_rows)
    assert info.dim == 2, kind
    emb = {m: space.embed(m, test.views[m]) for m in PAIR}
    assert all(e.shape == (test.num_rows, 2) for e in emb.values())
    t = transfer_accuracy(space, train, test)
    assert t > 0.9, (kind, t)  # two separated clusters
  pa = baselines.fit_perfect_alignment(baselines.BaselineParams("perfect_alignment", 2, PAIR),
                                       train)
  info = pa.info(test, test.num_rows)
  scale = np.linalg.norm(test.z, axis=1).mean()
  assert info.test_alignment_error < 1e-3 * scale
  assert info.test_reconstruction_error["image"] > 0.1 * scale
  # Perfectly aligned sides: retrieval finds the partner far above chance (1/120).
  ret = retrieval.retrieval(retrieval.RetrievalParams((1, 10), 0, PAIR), pa.embed, test)
  assert ret.protocols[0].directions[0].ranks.recall[10] > 0.5
  # SVCCA on the rank-2 views: capped at the rank by the experiment's options.
  table = alignment.frozen_table(alignment.AlignmentParams(
      alignment.metric_specs(("svcca",), 10, (), 10), VIEWS, PAIR), frozen, PAIR)
  assert 0 < table.row("svcca").to_ref["image"] <= 1


def transfer_accuracy(space, train, test):
  from platonic_jax.evaluation import transfer
  t = transfer.transfer(transfer.TransferParams(0, PAIR), space.embed, train, test)
  return min(e.transfer_acc for e in t.entries)


def test_numerical_rank_and_shared_dim():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(200, 3)) @ rng.normal(size=(3, 12))).astype(np.float32)
  assert baselines.numerical_rank(x.astype(np.float64)) == 3
  assert baselines.shared_dim(64, x.astype(np.float64), rng.normal(size=(200, 9))) == 3
  assert baselines.shared_dim(2, x.astype(np.float64), rng.normal(size=(200, 9))) == 2


def test_retrieval_all_captions_and_trained_space_interface(world):
  _, test = world
  n = test.num_rows
  caps_image = np.repeat(np.arange(n), 5)
  caps = test.z[caps_image] + 0.3 * np.random.default_rng(0).normal(size=(5 * n, test.z.shape[1]))
  split = features.Split(views={"image": test.z, "text": test.z, "ref": test.views["ref"]},
                         captions={"text": caps}, caption_image=caps_image)
  ret = retrieval.retrieval(retrieval.RetrievalParams((1, 5), 0, PAIR), lambda m, x: x, split)
  assert [p.name for p in ret.protocols] == ["1:1", "all_captions"]
  assert ret.protocols[0].directions[0].ranks.recall[1] == 1.0
  assert ret.protocols[1].directions[1].ranks.num_queries == 5 * n
  # A space built from any embed function goes through the evaluator registry.
  assert set(evaluators.EVALUATORS) == {"alignment", "verdict", "retrieval", "transfer", "info",
                                        "gap", "cycle"}
  with pytest.raises(ValueError, match="smaller than the number of test samples"):
    alignment.check_k(alignment.metric_specs(("mutual_knn",), 500, (), 10), n)


# ---------------------------------------------------------------------------------------
# Calibration and the scale curve in the tables and the verdict.

CAL = alignment.CalibrationParams(K=19, alpha=0.05, seed=3)
CAL_SPECS = alignment.metric_specs(("mutual_knn", "cka"), k=10, ks=(), cca_dim=10)


def test_every_table_number_gets_its_permutation_test(world):
  _, test = world
  frozen = views.Frozen(test.views)
  params = alignment.AlignmentParams(CAL_SPECS, VIEWS, PAIR, CAL, curve=(40, 80, 500))
  table = alignment.frozen_table(params, frozen, PAIR)
  plain = alignment.frozen_table(alignment.AlignmentParams(CAL_SPECS, VIEWS, PAIR), frozen, PAIR)
  ref = frozen.get(views.REF, VIEWS)
  for row, raw in zip(table.rows, plain.rows):
    assert row.to_ref == raw.to_ref  # the same calls: the same numbers
    kw = {"k": 10} if row.spec.metric == "mutual_knn" else {}
    for side in PAIR:
      want = metrics.calibrate(frozen.get(side, VIEWS), ref, row.spec.metric, K=19, seed=3, **kw)
      got = row.calibrated[side]
      assert (got.score, got.p_value, got.tau, got.K) == (want.score, want.p_value, want.tau, 19)
    assert row.cross[0].calibrated.p_value == metrics.calibrate(
        frozen.get("image", VIEWS), frozen.get("text", VIEWS), row.spec.metric, K=19, seed=3,
        **kw).p_value
  # One curve, for the neighbour metric: sizes below the 120 rows, then all of them.
  (curve,) = table.curves
  assert curve.label == "mutual_knn" and [p.n for p in curve.points] == [40, 80, 120]
  # all rows, in another order: the same neighbour sets, the mean summed in another order
  assert curve.points[-1].to_ref == pytest.approx(plain.row("mutual_knn").to_ref, abs=1e-6)
  for p in curve.points:
    assert p.chance == pytest.approx(10 / (p.n - 1))
  want = metrics.scale_curve(frozen.get("image", VIEWS), ref, "mutual_knn", (40, 80, 120),
                             k=10, seed=3)
  assert [p.to_ref["image"] for p in curve.points] == [v for _, v, _ in want]


def test_the_verdict_is_also_stated_on_calibrated_scores(world):
  _, test = world
  frozen = views.Frozen(test.views)
  params = alignment.AlignmentParams(CAL_SPECS, VIEWS, PAIR, CAL)
  emb = {"image": test.z, "text": test.z + 0.1}
  before = alignment.frozen_table(params, frozen, PAIR)
  after = alignment.adapted_table(params, frozen, emb, PAIR)
  vp = verdict.VerdictParams(CAL_SPECS, VIEWS, PAIR, bootstrap=50, resample=0,
                             resample_field="eval.bootstrap_resample=100", ci=0.95, seed=0,
                             calibration=CAL)
  fresh = verdict.verdict(vp, frozen, emb)  # computes its own tests
  known = verdict.verdict(vp, frozen, emb, before=before, after=after)  # reads the tables'
  for rf, rk in zip(fresh.rows, known.rows):
    b, a = before.row(rf.spec.label), after.row(rf.spec.label)
    base = (b.calibrated["image"].score + b.calibrated["text"].score) / 2
    for rep in ("image", "text", "mean"):
      assert rf.calibrated[rep] == pytest.approx(a.calibrated[rep].score - base, abs=1e-12)
      assert rk.calibrated[rep] == rf.calibrated[rep]
  off = verdict.verdict(dataclasses.replace(vp, calibration=alignment.OFF), frozen, emb)
  assert all(r.calibrated is None for r in off.rows)
  assert [r.entries for r in off.rows] == [r.entries for r in fresh.rows]


def test_scale_curve_checks_its_sizes_and_metric():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((50, 4)).astype(np.float32)
  with pytest.raises(ValueError, match=r"= \(11, 50\], got \[10, 40\]"):
    metrics.scale_curve(a, a, "mutual_knn", (10, 40), k=10)
  with pytest.raises(ValueError, match="neighbour metrics"):
    metrics.scale_curve(a, a, "cka", (20,), k=10)
  out = metrics.scale_curve(a, a, "mutual_knn", (50, 20), k=3, seed=1)
  assert [n for n, _, _ in out] == [20, 50] and out[1][1] == 1.0  # a vs a: identical lists


@pytest.mark.parametrize("field,value,message", [
    ("calibration_K", -1, "eval.calibration_K=-1: must be >= 0"),
    ("calibration_alpha", 1.0, "eval.calibration_alpha=1.0: must be a level in (0, 1)"),
    ("n_curve", (30, 51), "eval.n_curve=(30, 51): every size must be >= 52"),
    ("approx_recall", 1.5, "eval.approx_recall=1.5: must be 0 (exact top-k) or a recall"),
    ("approx_recall", -0.1, "eval.approx_recall=-0.1: must be 0"),
])
def test_the_calibration_and_curve_fields_are_checked_before_any_work(field, value, message):
  from helpers import load_config  # noqa: PLC0415
  from platonic_jax import validate  # noqa: PLC0415
  c = load_config("synthetic")
  c.eval[field] = value
  assert any(message in p for p in validate.problems(c)), validate.problems(c)


def test_eval_approx_recall_reaches_every_neighbour_top_k_and_only_those(world, monkeypatch):
  """``eval.approx_recall`` goes to the k-NN metrics' top-k in the tables, their nulls and
  the verdict's neighbour lists; on CPU the top-k stays exact, so the numbers equal the
  exact run's. An exact spec stores no such field (exact runs keep their old keys)."""
  from helpers import load_config  # noqa: PLC0415
  from platonic_jax import plan, typed_json  # noqa: PLC0415
  from platonic_jax.metrics import knn  # noqa: PLC0415
  cfg = load_config()
  cfg.eval.approx_recall = 0.875
  specs = plan._specs(cfg.eval)
  by_label = {s.label: s for s in specs}
  assert by_label["mutual_knn"].approx_recall == 0.875
  assert by_label["cka"].approx_recall is None and by_label["svcca"].approx_recall is None
  assert "approx_recall" not in typed_json.dump(SPECS[0])

  seen = []
  real = knn._knn_checked
  monkeypatch.setattr(knn, "_knn_checked",
                      lambda *a, **kw: (seen.append(kw.get("approx_recall")), real(*a, **kw))[1])
  _, test = world
  frozen = views.Frozen(test.views)
  approx = alignment.metric_specs(("mutual_knn", "lcs_knn", "cka"), k=10, ks=(5,), cca_dim=10,
                                  approx_recall=0.875)
  exact = alignment.metric_specs(("mutual_knn", "lcs_knn", "cka"), k=10, ks=(5,), cca_dim=10)
  cal = alignment.CalibrationParams(K=5, alpha=0.05, seed=0)
  got = alignment.frozen_table(alignment.AlignmentParams(approx, VIEWS, PAIR, cal), frozen, PAIR)
  assert 0.875 in seen
  seen.clear()
  want = alignment.frozen_table(alignment.AlignmentParams(exact, VIEWS, PAIR, cal), frozen, PAIR)
  assert 0.875 not in seen
  for g, w in zip(got.rows, want.rows):
    assert g.to_ref == w.to_ref and g.cross == w.cross and g.calibrated == w.calibrated
  seen.clear()
  emb = {"image": test.z, "text": test.z + 0.1}
  vp = verdict.VerdictParams(approx, VIEWS, PAIR, bootstrap=20, resample=0,
                             resample_field="eval.bootstrap_resample=100", ci=0.95, seed=0)
  v = verdict.verdict(vp, frozen, emb)
  assert seen and set(seen) == {0.875}  # every neighbour list of the verdict: approx
  v_exact = verdict.verdict(dataclasses.replace(vp, metrics=exact), frozen, emb)
  assert [r.entries for r in v.rows] == [r.entries for r in v_exact.rows]
