"""The sweep's numbers: the matrix equals the release's ``measure_alignment.py`` logic
(``prepare_features`` + ``compute_score``, run here with torch on the same ``.pt`` files,
``tests/release_reference.py``) per pair, best layer pair included; the batched layer-pair
programs equal ``metrics.score`` / ``metrics.calibrate_layers`` pair by pair.

Where a number differs from the release on purpose (docs/prh.md), the test says which
difference and checks its size: ``lcs_knn`` is the release's / k; unbiased CKA and CKNNA
have no +1e-6 in the denominator (compared with the release's formula without it, and
the gap bounded); CKNNA gets ``k`` (the release's ``compute_score`` passes it no topk and
raises); SVCCA is exact (compared with the float64 definition; the release's randomised
SVD gives another value each run).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import prh_fixtures as pfx
import release_reference as rel
from platonic_jax import metrics
from platonic_jax.metrics import calibration
from platonic_jax.prh import layer_stats, pair_scores, scoring, sweep
from platonic_jax.prh.release_files import LayerFeatures
from references import ref_svcca

N, K_NN, CAL_K = 120, 10, 19
METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka",
           "cknna", "svcca")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  return pfx.release_files(str(tmp_path_factory.mktemp("release")), n=N)


def _config(files, **over):
  source = {"features.source": str(next(iter(files.values())).rsplit("/", 1)[0]),
            "models.set": "", "models.language": tuple(pfx.LANGUAGE_PT),
            "models.vision": tuple(pfx.VISION_PT), "data.num_samples": N, "scores.k": K_NN,
            "scores.calibration_K": CAL_K}
  return pfx.sweep_config(source, **over)


@pytest.fixture(scope="module")
def result(files, tmp_path_factory):
  return sweep.run(_config(files), str(tmp_path_factory.mktemp("sweep")))


def _release_layers(path, precise):
  """The release's per-model step, then the layer list its compute_score iterates."""
  feats = rel.load_prepared(path, precise)
  if isinstance(feats, torch.Tensor):
    feats = [feats[:, i, :] for i in range(feats.shape[1])]
  return [F.normalize(x, p=2, dim=-1) for x in feats]


def _release_matrix(metric, vis, lang):
  """AlignmentMetrics.measure(metric, vision layer i, language layer j) for every pair,
  as compute_score loops (vision outer)."""
  kw = {"topk": K_NN} if "knn" in metric or metric == "cknna" else {}
  return np.array([[float(rel.AlignmentMetrics.measure(metric, x, y, **kw)) for y in lang]
                   for x in vis])


def _no_eps(metric, vis, lang):
  """The release's unbiased CKA / CKNNA ratio without its + 1e-6 (its own HSIC code)."""
  out = np.empty((len(vis), len(lang)))
  for i, x in enumerate(vis):
    for j, y in enumerate(lang):
      K, L = x @ x.T, y @ y.T
      if metric == "unbiased_cka":
        kl, kk, ll = rel.hsic_unbiased(K, L), rel.hsic_unbiased(K, K), rel.hsic_unbiased(L, L)
      else:
        kl, kk, ll = (rel.cknna_similarity(P, Q, K_NN) for P, Q in ((K, L), (K, K), (L, L)))
      out[i, j] = float(kl) / float(torch.sqrt(kk * ll))
  return out


def _assert_best(ours, ref_matrix, atol, what):
  """Our best value equals the reference's max and our best pair is where the reference
  has it (the first maximum in vision-major order, unless two pairs tie within atol)."""
  i, j = ours.vision_layer, ours.language_layer
  assert ours.score == pytest.approx(ref_matrix.max(), abs=atol), what
  ri, rj = np.unravel_index(np.argmax(ref_matrix), ref_matrix.shape)
  ties = np.sum(ref_matrix >= ref_matrix.max() - atol)
  if ties == 1:
    assert (i, j) == (ri, rj), (what, (i, j), (ri, rj))
  else:
    assert ref_matrix[i, j] >= ref_matrix.max() - atol, what
  np.testing.assert_allclose(np.asarray(ours.layer_scores), ref_matrix, atol=atol, err_msg=what)


@pytest.mark.parametrize("metric", METRICS)
def test_matrix_equals_the_release_per_pair_with_best_layers(result, files, metric):
  for lang_name in pfx.LANGUAGE_PT:
    lang = _release_layers(files[lang_name], precise=True)
    for vis_name in pfx.VISION_PT:
      vis = _release_layers(files[vis_name], precise=True)
      ours = result.get(metric, lang_name, vis_name)
      what = (metric, lang_name, vis_name)
      if metric in ("mutual_knn", "cycle_knn", "edit_distance_knn", "cka"):
        ref = _release_matrix(metric, vis, lang)
        _assert_best(ours, ref, 1e-5, what)
        best, pair = rel.compute_score(vis, lang, metric=metric, topk=K_NN)
        assert ours.score == pytest.approx(float(best), abs=1e-5)
        assert (ours.vision_layer, ours.language_layer) == pair
      elif metric == "lcs_knn":  # documented: the release's mean LCS length, ours / k
        _assert_best(ours, _release_matrix(metric, vis, lang) / K_NN, 1e-5, what)
      elif metric in ("unbiased_cka", "cknna"):  # documented: no + 1e-6
        _assert_best(ours, _no_eps(metric, vis, lang), 1e-5, what)
        gap = ours.score - _release_matrix(metric, vis, lang)[ours.vision_layer,
                                                              ours.language_layer]
        assert 0 <= gap < 2e-3, (what, gap)
      else:  # svcca: documented exact SVD; the float64 definition
        ref = np.array([[ref_svcca(x.numpy(), y.numpy(), 10) for y in lang] for x in vis])
        _assert_best(ours, ref, 1e-5, what)


def test_calibration_is_calibrate_layers_of_the_release_protocol(result, files):
  """The calibrated score, p and tau of every metric equal metrics.calibrate_layers on
  the same prepared layers with the sweep's permutations (one for every layer)."""
  lang_name, vis_name = next(iter(pfx.LANGUAGE_PT)), list(pfx.VISION_PT)[1]
  lang = [x.numpy() for x in _release_layers(files[lang_name], precise=True)]
  vis = [x.numpy() for x in _release_layers(files[vis_name], precise=True)]
  perms = calibration.permutations(CAL_K, N, 0)
  for metric in METRICS:
    ours = result.get(metric, lang_name, vis_name)
    kw = {"k": K_NN} if metrics.registry.get(metric).takes_k else {}
    if metric == "svcca":
      kw = {"cca_dim": 10, "cap_rank": True}
    cal = metrics.calibrate_layers(vis, lang, metric, perms=perms, K=CAL_K, **kw)
    assert ours.K == CAL_K
    assert ours.calibrated == pytest.approx(cal.score, abs=1e-5), metric
    assert ours.p_value == pytest.approx(cal.p_value, abs=1e-6), metric
    assert ours.tau == pytest.approx(cal.tau, abs=1e-5), metric


def test_release_default_clamp_is_exact_false(files, tmp_path):
  """scores.exact=False is the release's default (no --precise): per-sample quantiles
  averaged; a per-layer list is clamped layer by layer."""
  res = sweep.run(_config(files, **{"scores.metrics": ("mutual_knn", "cka"),
                                    "scores.exact": False, "scores.calibration_K": 0}),
                  str(tmp_path))
  lang_name = list(pfx.LANGUAGE_PT)[1]
  lang = _release_layers(files[lang_name], precise=False)
  for vis_name in pfx.VISION_PT:
    vis = _release_layers(files[vis_name], precise=False)
    for metric in ("mutual_knn", "cka"):
      ours = res.get(metric, lang_name, vis_name)
      best, pair = rel.compute_score(vis, lang, metric=metric, topk=K_NN)
      assert ours.score == pytest.approx(float(best), abs=1e-5)
      assert (ours.vision_layer, ours.language_layer) == pair
      assert ours.calibrated is None and ours.K == 0


def _random_layers(num, d, seed, n=50):
  rng = np.random.default_rng(seed)
  z = np.random.default_rng(99).standard_normal((n, 4))
  return [metrics._l2_normalize(metrics.prepare(
      (z @ rng.standard_normal((4, d)) + (0.5 + 0.4 * l) * rng.standard_normal((n, d))
       ).astype(np.float32), 0.95, True)) for l in range(num)]


@pytest.mark.parametrize("metric", METRICS)
def test_batched_layer_pairs_equal_the_library_pair_by_pair(metric):
  """PairScorer (all layer pairs and all nulls in one program) == metrics.score's loop and
  metrics.calibrate_layers' per-pair nulls, with layer counts that need padding."""
  a, b = _random_layers(3, 12, 1), _random_layers(9, 7, 2)
  kw = {"k": 5} if metrics.registry.get(metric).takes_k else {}
  if metric == "svcca":
    kw = {"cca_dim": 4, "cap_rank": True}
  sa = layer_stats.compute(a, [metric], k=5, cca_dim=4)
  sb = layer_stats.compute(b, [metric], k=5, cca_dim=4)
  scorer = pair_scores.PairScorer(sa, sb)
  values = scorer.values(metric)
  ref = np.array([[metrics.METRICS[metric](x, y, **kw) for y in b] for x in a])
  np.testing.assert_allclose(values, ref, atol=2e-6)
  best, pair = metrics.score(a, b, metric, normalize=False, **kw)
  assert np.unravel_index(np.argmax(values), values.shape) == pair
  perms = calibration.permutations(11, 50, 3)
  null = scorer.null(metric, perms)
  assert null.shape == (11, 3, 9)
  cal = metrics.calibrate_layers(a, b, metric, perms=perms, K=11, **kw)
  np.testing.assert_allclose(null.max(axis=(1, 2)), cal.null, atol=2e-6)


def test_score_pair_falls_back_to_the_library_for_other_metrics():
  """A registry metric without a batched form (rv) is scored pair by pair, calibrated by
  calibrate_layers: the same record fields."""
  a, b = _random_layers(2, 6, 4), _random_layers(3, 5, 5)
  feats = lambda x: LayerFeatures(np.stack(x), None, None, None, "test")  # noqa: E731
  from platonic_jax.prh import plan as plan_lib
  p = plan_lib.ScoreParams("rv", (), 1.0, True, plan_lib.CalibrationParams(9, 0.05, 0))
  va, vb = scoring.prepare_model("a", feats(a), [p]), scoring.prepare_model("b", feats(b), [p])
  perms = calibration.permutations(9, 50, 0)
  rec = scoring.score_pair(p, va, vb, scorer=None, perms=perms, language_name="b",
                           vision_name="a")
  cal = metrics.calibrate_layers(a, b, "rv", perms=perms, K=9)
  assert rec.score == pytest.approx(cal.observed, abs=1e-6)
  assert (rec.vision_layer, rec.language_layer) == cal.pair
  assert rec.p_value == pytest.approx(cal.p_value)
