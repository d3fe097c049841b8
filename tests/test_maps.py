"""Closed-form alignments against scipy / scikit-learn / planted ground truth."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from sklearn.cross_decomposition import CCA as SkCCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.mixture import GaussianMixture

from platonic_jax import maps


def _orthogonal(rng, d):
  return scipy.stats.ortho_group.rvs(d, random_state=rng)


def test_procrustes_recovers_planted_orthogonal_map_and_shift():
  rng = np.random.default_rng(0)
  n, d = 300, 12
  q = _orthogonal(rng, d)
  x = rng.normal(size=(n, d)) + 3.0  # a mean far from 0: the shift must matter
  shift = rng.normal(size=d) * 5
  y = x @ q + shift
  m = maps.procrustes(x, y)
  np.testing.assert_allclose(m.Q, q, atol=1e-10)
  np.testing.assert_allclose(m.apply(x), y, atol=1e-9)
  assert m.residual < 1e-12
  np.testing.assert_allclose(m.Q.T @ m.Q, np.eye(d), atol=1e-12)
  # scipy's orthogonal_procrustes on the centred data gives the same rotation.
  r, _ = scipy.linalg.orthogonal_procrustes(x - x.mean(0), y - y.mean(0))
  np.testing.assert_allclose(m.Q, r, atol=1e-10)


def test_procrustes_matches_scipy_on_noisy_data_and_without_centering():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
  r, _ = scipy.linalg.orthogonal_procrustes(x, y)
  np.testing.assert_allclose(maps.procrustes(x, y, center=False).Q, r, atol=1e-10)
  r, _ = scipy.linalg.orthogonal_procrustes(x - x.mean(0), y - y.mean(0))
  m = maps.procrustes(x, y)
  np.testing.assert_allclose(m.Q, r, atol=1e-10)
  # Optimality: no other orthogonal map (random draws) fits better.
  best = np.linalg.norm((x - m.mean_x) @ m.Q - (y - m.mean_y))
  for _ in range(20):
    other = _orthogonal(rng, 7)
    assert np.linalg.norm((x - m.mean_x) @ other - (y - m.mean_y)) >= best - 1e-12


def test_procrustes_fit_on_one_modality_transfers_to_the_other():
  """Seed 001: model B = Q · model A + shift for images *and* texts; Q fit on images only."""
  rng = np.random.default_rng(2)
  d = 16
  q, shift = _orthogonal(rng, d), rng.normal(size=d)
  img_a, txt_a = rng.normal(size=(200, d)), rng.normal(size=(150, d)) + 1.0
  img_b = img_a @ q + shift + 1e-3 * rng.normal(size=(200, d))
  txt_b = txt_a @ q + shift
  m = maps.procrustes(img_a, img_b)
  np.testing.assert_allclose(m.apply(txt_a), txt_b, atol=1e-2)
  # A map fit on unrelated pairs does not transfer (the test can fail).
  bad = maps.procrustes(img_a, rng.normal(size=(200, d)))
  assert np.abs(bad.apply(txt_a) - txt_b).max() > 0.5


def test_procrustes_rectangular_and_bad_input():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 8))
  m = maps.procrustes(x, y)
  assert m.Q.shape == (5, 8)
  np.testing.assert_allclose(m.Q @ m.Q.T, np.eye(5), atol=1e-12)
  with pytest.raises(ValueError, match="paired row by row"):
    maps.procrustes(x, y[:-1])
  with pytest.raises(ValueError, match="NaN or Inf"):
    maps.procrustes(np.full((4, 2), np.nan), np.ones((4, 2)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    maps.procrustes(np.ones((2, 3, 4)), np.ones((2, 3)))


def test_cca_matches_sklearn_canonical_correlations():
  rng = np.random.default_rng(4)
  n = 500
  shared = rng.normal(size=(n, 3))
  x = np.concatenate([shared, rng.normal(size=(n, 5))], 1) @ rng.normal(size=(8, 8))
  y = np.concatenate([shared * [1, 0.6, 0.3], rng.normal(size=(n, 6))], 1)
  y = (y + 0.5 * rng.normal(size=y.shape)) @ rng.normal(size=(9, 9)) + 4.0
  dim = 3
  m = maps.cca(x, y, dim)
  sk = SkCCA(n_components=dim, max_iter=5000, tol=1e-12, scale=False).fit(x, y)
  xs, ys = sk.transform(x, y)
  sk_corr = np.array([np.corrcoef(xs[:, i], ys[:, i])[0, 1] for i in range(dim)])
  np.testing.assert_allclose(m.correlations, np.abs(sk_corr), atol=1e-6)
  # Our variates: unit variance, correlated exactly by `correlations`, uncorrelated across.
  zx, zy = m.apply_x(x), m.apply_y(y)
  np.testing.assert_allclose(np.cov(zx.T), np.eye(dim), atol=1e-8)
  np.testing.assert_allclose(np.cov(zy.T), np.eye(dim), atol=1e-8)
  np.testing.assert_allclose(np.cov(zx.T, zy.T)[:dim, dim:], np.diag(m.correlations),
                             atol=1e-8)
  # Same directions as sklearn up to sign.
  for i in range(dim):
    assert abs(np.corrcoef(zx[:, i], xs[:, i])[0, 1]) > 1 - 1e-6
  assert m.correlations[0] > m.correlations[2] > 0.2


def test_cca_rank_deficient_and_regularised():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(30, 4)) @ rng.normal(size=(4, 10))  # rank 4 in 10 dims
  y = rng.normal(size=(30, 6))
  with pytest.raises(ValueError, match="ranks of x and y are 4 and 6"):
    maps.cca(x, y, 5)
  assert maps.cca(x, y, 4).Wx.shape == (10, 4)
  # Regularisation shrinks the (overfit) correlations of small-N CCA.
  assert maps.cca(x, y, 2, reg=1.0).correlations[0] < maps.cca(x, y, 2).correlations[0]


def _seed003_world():
  """Seed 003's preset from the data helper's generator (the schema's other fields)."""
  from configs import default
  from platonic_jax.data import synthetic
  cfg = default.get_config().data.synthetic
  cfg.update(dict(preset="seed003", num_test=500, reference_noise=0.0,
                  dims=dict(image=6, text=5, reference=2)))
  return synthetic.make_world(synthetic.WorldParams.from_config(cfg, seed=0))


def test_perfect_alignment_seed003_preset():
  w = _seed003_world()
  tr, te = w["train"], w["test"]
  assert tr["image"].shape == (2000, 6) and tr["z"].shape == (2000, 2)
  x, y = tr["image"].astype(np.float64), tr["text"].astype(np.float64)
  pa = maps.perfect_alignment(x, y, dim=2)
  # Alignment: both modalities land on the same point (float32 data: ~1e-5 relative).
  scale = np.linalg.norm(pa.apply_x(x), axis=1).mean()
  assert pa.alignment_error(x, y) < 1e-4 * scale
  assert pa.alignment_error(te["image"], te["text"]) < 1e-4 * scale
  # It is the SVD identity: Σ‖W1 x − W2 y‖² = Σ σ².
  np.testing.assert_allclose(np.sum((pa.apply_x(x) - pa.apply_y(y)) ** 2),
                             np.sum(pa.singular_values ** 2), rtol=1e-6, atol=1e-10)
  # Both sides carry the solution (not the trivial W1 = 0 direction).
  assert np.linalg.norm(pa.W1) > 0.1 and np.linalg.norm(pa.W2) > 0.1
  # Reconstruction of z is poor: the solution is z up to an unknown linear map.
  z = tr["z"].astype(np.float64)
  assert pa.reconstruction_error(x, z) > 0.5 * np.linalg.norm(z, axis=1).mean()
  # ... yet a linear map (the unknown one) recovers z exactly: the space is z reparametrised.
  zx = pa.apply_x(x)
  lin, *_ = np.linalg.lstsq(zx, z, rcond=None)
  np.testing.assert_allclose(zx @ lin, z, atol=1e-3)
  # Classes recoverable: an unsupervised 2-component Gaussian mixture in the aligned space.
  gm = GaussianMixture(2, random_state=0).fit(zx)
  pred = gm.predict(pa.apply_y(te["text"]))
  acc = max((pred == te["labels"]).mean(), (pred != te["labels"]).mean())
  assert acc > 0.95
  # Gaussian cross-modal transfer: fit on image side, score on the text side.
  res = maps.cross_modal_transfer(zx, tr["labels"], pa.apply_y(te["text"]), te["labels"],
                                  src_test=pa.apply_x(te["image"]))
  assert res["transfer_acc"] > 0.95 and abs(res["transfer_acc"] - res["within_acc"]) < 0.01


def test_perfect_alignment_is_the_smallest_singular_subspace():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(100, 4)), rng.normal(size=(100, 3))
  pa = maps.perfect_alignment(x, y, dim=2)
  s = np.linalg.svd(np.concatenate([x, y], 1), compute_uv=False)
  np.testing.assert_allclose(pa.singular_values, s[::-1][:2], rtol=1e-10)
  w = np.concatenate([pa.W1, -pa.W2], 1)
  np.testing.assert_allclose(w @ w.T, np.eye(2), atol=1e-12)
  # Unrelated modalities: no perfect alignment exists (the error is not ~0).
  assert pa.alignment_error(x, y) > 0.1
  with pytest.raises(ValueError, match="dim=7"):
    maps.perfect_alignment(x, y, dim=7)


def test_perfect_alignment_on_whitened_data_is_cca():
  rng = np.random.default_rng(7)
  n = 400
  s = rng.normal(size=(n, 2))
  x = np.concatenate([s, rng.normal(size=(n, 3))], 1) @ rng.normal(size=(5, 5))
  y = np.concatenate([s + 0.3 * rng.normal(size=(n, 2)), rng.normal(size=(n, 2))], 1)
  white = lambda a: np.linalg.svd(a - a.mean(0), full_matrices=False)[0]  # noqa: E731
  pa = maps.perfect_alignment(white(x), white(y), dim=2)
  rho = maps.cca(x, y, 2).correlations
  np.testing.assert_allclose(pa.singular_values, np.sqrt(1 - rho), rtol=1e-8)


def test_lda_matches_sklearn():
  rng = np.random.default_rng(8)
  means = rng.normal(size=(3, 4)) * 2
  labels = rng.integers(0, 3, 600)
  x = means[labels] + rng.normal(size=(600, 4)) @ rng.normal(size=(4, 4))
  xt = means[labels[:200]] + rng.normal(size=(200, 4))
  ours = maps.lda_fit(x, labels, reg=0.0)
  sk = LinearDiscriminantAnalysis(solver="lsqr").fit(x, labels)
  np.testing.assert_array_equal(ours.predict(xt), sk.predict(xt))
  with pytest.raises(ValueError, match="at least 2 classes"):
    maps.lda_fit(x, np.zeros(600, int))


def test_pca():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(80, 6)) * [5, 4, 3, 2, 1, 0.5]
  p = maps.pca(x, 3)
  proj = p.apply(x)
  np.testing.assert_allclose(np.cov(proj.T), np.diag(p.explained_variance), atol=1e-9)
  ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1][:3]
  np.testing.assert_allclose(p.explained_variance, ev, rtol=1e-9)


def test_perfect_alignment_gram_path_matches_exact_path():
  rng = np.random.default_rng(10)
  z = rng.normal(size=(3000, 3))
  x = z @ rng.normal(size=(3, 7)) + 0.05 * rng.normal(size=(3000, 7))
  y = z @ rng.normal(size=(3, 5)) + 0.05 * rng.normal(size=(3000, 5))
  exact = maps.perfect_alignment(x, y, 3, center=True)
  gram = maps.perfect_alignment(x, y, 3, center=True, method_threshold=0)
  np.testing.assert_allclose(gram.singular_values, exact.singular_values, rtol=1e-6)
  # Same subspace (the basis may differ by signs): projector equality.
  w_e = np.concatenate([exact.W1, -exact.W2], 1)
  w_g = np.concatenate([gram.W1, -gram.W2], 1)
  np.testing.assert_allclose(w_g.T @ w_g, w_e.T @ w_e, atol=1e-6)
  assert gram.alignment_error(x, y) == pytest.approx(exact.alignment_error(x, y), rel=1e-6)
