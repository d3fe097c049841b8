"""The measures of netrep, ReSi and rsatoolbox in platonic_jax.metrics, each against an
independent reference (tests/references.py: netrep and ReSi transcribed to float64 NumPy
from their source, scipy's pdist / pearsonr / spearmanr / subspace_angles, scikit-learn's
NearestNeighbors and r2_score), on widths from 3 to 2048; and the input checks every
kernel metric shares (constant / collapsed features, all-tied similarities)."""

import numpy as np
import pytest
import sklearn.linear_model
import sklearn.metrics

import jax
from platonic_jax import metrics, sharding
from platonic_jax.metrics import rdms

import references as R


def data(n, da, db, seed=0, shared=0.7):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 3))
  a = z @ rng.standard_normal((3, da)) + 0.7 * rng.standard_normal((n, da)) + 2.0
  b = z @ rng.standard_normal((3, db)) * shared + rng.standard_normal((n, db)) - 1.0
  return a.astype(np.float32), b.astype(np.float32)


def unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# (N, Da, Db): narrow, unequal, and one side 2048 wide (more columns than rows).
WIDE = [(50, 3, 7), (160, 64, 40), (240, 2048, 12)]


@pytest.mark.parametrize("n,da,db", WIDE)
def test_procrustes_is_netreps_rotation_metric(n, da, db):
  a, b = data(n, da, db)
  theta = R.netrep_linear_metric(a, b, 1.0)
  assert metrics.procrustes(a, b, angular=True) == pytest.approx(theta, abs=2e-5)
  assert metrics.procrustes(a, b) == pytest.approx(np.cos(theta), abs=2e-6)
  assert metrics.METRICS["procrustes"] is metrics.procrustes


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("n,da,db", [(50, 3, 7), (400, 64, 40)])
def test_shape_metric_is_netreps_linear_metric(n, da, db, alpha):
  a, b = data(n, da, db, seed=1)
  want = R.netrep_linear_metric(a, b, alpha)
  assert metrics.shape_metric(a, b, alpha, angular=True) == pytest.approx(want, abs=5e-5)
  # invariances: a rotation of a changes nothing
  q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((da, da)))
  got = metrics.shape_metric((a @ q).astype(np.float32), b, alpha)
  assert got == pytest.approx(metrics.shape_metric(a, b, alpha), abs=2e-5)


@pytest.mark.parametrize("rdm", ["correlation", "cosine", "euclidean"])
@pytest.mark.parametrize("n,da,db", WIDE)
def test_rsa_pearson_is_exact_in_feature_space(rdm, n, da, db):
  a, b = data(n, da, db, seed=3)
  assert metrics.rsa(a, b, rdm, "pearson") == pytest.approx(R.ref_rsa(a, b, rdm, "pearson"),
                                                            abs=2e-6)


@pytest.mark.parametrize("rdm", ["correlation", "euclidean"])
def test_rsa_spearman_over_all_pairs_and_over_a_seeded_sample(rdm):
  a, b = data(70, 9, 2048, seed=4)
  assert metrics.rsa(a, b, rdm, "spearman") == pytest.approx(
      R.ref_rsa(a, b, rdm, "spearman"), abs=1e-6)
  # 70 * 69 / 2 = 2415 pairs > 500: a uniform sample of 500 pairs, seeded
  pairs = rdms.rsa_pairs(70, 500, 7)
  assert len(pairs[0]) == 500 and np.all(pairs[0] != pairs[1])
  got = metrics.rsa(a, b, rdm, "spearman", max_pairs=500, pair_seed=7)
  assert got == pytest.approx(R.ref_rsa(a, b, rdm, "spearman", pairs=pairs), abs=1e-6)
  assert got != metrics.rsa(a, b, rdm, "spearman", max_pairs=500, pair_seed=8)


@pytest.mark.parametrize("n,da,db", [(50, 3, 7), (300, 64, 40), (2100, 2048, 8)])
def test_cca_family_against_scipy_subspace_angles_and_the_pwcca_definition(n, da, db):
  a, b = data(n, da, db, seed=5)
  rho = R.ref_canonical_correlations(a, b)
  assert metrics.mean_cca(a, b) == pytest.approx(rho.mean(), abs=1e-5)
  assert metrics.pwcca(a, b) == pytest.approx(R.ref_pwcca(a, b), abs=1e-5)
  if da <= 64:  # pwcca weighs by a's neurons: asymmetric
    assert metrics.pwcca(b, a) == pytest.approx(R.ref_pwcca(b, a), abs=1e-5)


@pytest.mark.parametrize("n,da,db", WIDE)
def test_linear_regression_is_resis_r2_of_a_from_b(n, da, db):
  a, b = data(n, da, db, seed=6)
  got = metrics.linear_regression(a, b)
  assert got == pytest.approx(R.resi_linear_reg(a, b), abs=1e-5)
  fit = sklearn.linear_model.LinearRegression().fit(b, a)
  r2 = sklearn.metrics.r2_score(a, fit.predict(b), multioutput="variance_weighted")
  assert got == pytest.approx(r2, abs=1e-5)
  with pytest.raises(ValueError, match="rank b <= N - 2"):
    metrics.linear_regression(a[:8], b[:8])  # b's columns span all 7 centred directions


@pytest.mark.parametrize("n,da,db", WIDE)
def test_rv_and_the_modified_rv(n, da, db):
  a, b = data(n, da, db, seed=7)
  assert metrics.rv(a, b) == pytest.approx(R.ref_rv(a, b), abs=2e-6)
  assert metrics.rv(a, b) == metrics.cka(a, b)
  assert metrics.rv(a, b, adjusted=True) == pytest.approx(R.ref_rv(a, b, True), abs=2e-6)


@pytest.mark.parametrize("n,da,db,k", [(40, 3, 5, 4), (150, 64, 2048, 10)])
def test_neighbourhood_measures_are_resis(n, da, db, k):
  a, b = (unit(x).astype(np.float32) for x in data(n, da, db, seed=8))
  assert metrics.knn_jaccard(a, b, k) == pytest.approx(R.resi_jaccard(a, b, k), abs=1e-6)
  assert metrics.rank_similarity(a, b, k) == pytest.approx(
      R.resi_rank_similarity(a, b, k), abs=1e-6)
  assert metrics.second_order_cosine(a, b, k) == pytest.approx(
      R.resi_second_order_cosine(a, b, k), abs=1e-5)


def test_new_measures_do_not_depend_on_tile_or_device_count(num_devices):
  a, b = data(130, 16, 9, seed=9)
  one = sharding.data_mesh(jax.devices()[:1])
  for name in ("knn_jaccard", "rank_similarity", "second_order_cosine"):
    fn = metrics.METRICS[name]
    assert fn(a, b, 6, tile=16) == fn(a, b, 6, tile=1000, mesh=one), name
  for name in ("procrustes", "shape_metric", "rsa", "pwcca", "mean_cca", "rv",
               "linear_regression"):
    fn = metrics.METRICS[name]
    assert fn(a, b) == pytest.approx(fn(a, b, mesh=one), abs=1e-6), name


KERNEL_METRICS = ["cka", "unbiased_cka", "cknna", "svcca", "procrustes", "shape_metric",
                  "rsa", "pwcca", "mean_cca", "rv", "linear_regression"]


@pytest.mark.parametrize("name", KERNEL_METRICS + ["cka@rbf"])
def test_constant_or_collapsed_features_raise_for_every_kernel_metric(name):
  name, _, variant = name.partition("@")
  kw = {"kernel": "rbf", "sigma": 1.0} if variant else {}
  kw.update({"cca_dim": 2} if name == "svcca" else {"k": 5} if name == "cknna" else {})
  a, b = data(300, 8, 6, seed=10)
  fn = metrics.METRICS[name]
  const = np.repeat(a[:1], 300, 0)  # the independent check's case: one row repeated
  rng = np.random.default_rng(0)
  collapsed = (const * 1e3 + 1e-6 * rng.standard_normal(const.shape)).astype(np.float32)
  for bad in (const, collapsed):
    with pytest.raises(ValueError, match="all the same point"):
      fn(bad, b, **kw)
    with pytest.raises(ValueError, match="all the same point"):
      fn(b[:, :8] if name == "linear_regression" else a, bad[:, :6], **kw)
  # scale-aware: tiny features that do vary are fine (and, but for RBF, give the same value)
  tiny = fn(a * 1e-6, b, **(dict(kw, sigma=1e-6) if variant else kw))
  if not variant:
    assert tiny == pytest.approx(fn(a, b, **kw), abs=1e-4)


def test_rbf_cka_on_one_repeated_row_raises_instead_of_measuring_rounding():
  x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
  with pytest.raises(ValueError, match="all the same point"):
    metrics.cka(np.repeat(x[:1], 300, 0), x, kernel="rbf")
  # far from the origin: the centred features keep the kernel exact
  got = metrics.cka(x + 1e3, x, kernel="rbf", sigma=4.0)
  assert got == pytest.approx(R.ref_cka(x, x, "rbf", 4.0), abs=1e-5)
  with pytest.raises(ValueError, match="sigma=1e"):
    metrics.cka(x, x, kernel="rbf", sigma=1e6)


def test_cknna_on_all_tied_similarities_raises():
  eye = np.eye(40, dtype=np.float32)  # orthogonal one-hot rows: every similarity 0
  b = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
  with pytest.raises(ValueError, match="tie rule alone"):
    metrics.cknna(eye, b, k=5)
  with pytest.raises(ValueError, match="tie rule alone"):
    metrics.cknna(b, eye, k=5)
