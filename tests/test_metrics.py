"""platonic_jax.metrics against independent float64 NumPy full-matrix implementations.

The references (``tests/references.py``) build the N x N matrices and argsort rows, as
the Platonic release does (written from the definitions, not from our tiled code).
"""

import json

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

import jax
from platonic_jax import metrics, sharding
from platonic_jax.metrics import __main__ as cli

from references import (ref_cka, ref_cknna, ref_knn, ref_neighbour, ref_svcca,
                        ref_unbiased_cka)


def data(n, da, db, seed=0, shared=0.6):
  """Correlated pair: b sees a random linear view of a plus noise (so scores are not ~0)."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 6))
  a = z @ rng.standard_normal((6, da)) + 0.5 * rng.standard_normal((n, da))
  b = z @ rng.standard_normal((6, db)) * shared + rng.standard_normal((n, db))
  return a.astype(np.float32), b.astype(np.float32)


# N not a multiple of the tile; Da != Db; several k.
CASES = [(37, 5, 9, 4, 16), (130, 16, 8, 10, 32)]

# ----------------------------------------------------------------------- correctness


@pytest.mark.parametrize("n,da,db,k,tile", CASES)
@pytest.mark.parametrize("name", ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"])
def test_neighbour_metrics_match_reference(name, n, da, db, k, tile):
  a, b = data(n, da, db)
  got = metrics.METRICS[name](a, b, k=k, tile=tile)
  assert isinstance(got, float)
  assert got == pytest.approx(ref_neighbour(name, a, b, k), abs=1e-6)


def test_nearest_neighbors_match_argsort_with_ties():
  # Duplicated rows create exact ties: they must go to the lower index, as stable argsort.
  rng = np.random.default_rng(3)
  base = rng.integers(-2, 3, size=(20, 3)).astype(np.float32)
  x = np.concatenate([base, base, base[:7]])  # 47 rows, many equal similarities
  _, idx = metrics.nearest_neighbors(x, 9, tile=8)
  np.testing.assert_array_equal(np.asarray(idx), ref_knn(x, 9))


# (N, D, k, tile): ragged last tiles (a window overlapping the previous tile), k > tile,
# one tile, tile 1000 at N = 1001 (two big blocks: the case that once deadlocked the host
# callback with several devices), integer features (exact ties everywhere).
SELECT_CASES = [(70, 6, 5, 16), (100, 4, 12, 8), (64, 5, 3, 64), (1001, 16, 10, 1000),
                (300, 3, 7, 40)]


@pytest.mark.parametrize("n,d,k,tile", SELECT_CASES)
@pytest.mark.parametrize("devices", [1, 8])
def test_host_and_xla_selection_agree_with_argsort(n, d, k, tile, devices, num_devices):
  # The numba top-k (select="host", the CPU default) and lax.top_k (select="xla", the
  # GPU/TPU path) must both give the reference's exact lists, similarities included.
  rng = np.random.default_rng(n + d)
  mesh = sharding.data_mesh(jax.devices()[:devices])
  for x in (rng.standard_normal((n, d)).astype(np.float32),
            rng.integers(-2, 3, size=(n, d)).astype(np.float32)):
    ref = ref_knn(x, k)
    ref_sims = np.take_along_axis(x.astype(np.float64) @ x.T.astype(np.float64), ref, 1)
    for select in ("host", "xla"):
      sims, idx = metrics.nearest_neighbors(x, k, tile=tile, mesh=mesh, select=select)
      np.testing.assert_array_equal(np.asarray(idx), ref, err_msg=select)
      np.testing.assert_allclose(np.asarray(sims), ref_sims, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_host_block_update_matches_numpy_and_keeps_its_operands(jit):
  # One FFI call on an off-diagonal block, in place on the state: rows 0:4 (tile I) take
  # the block's columns, rows 6:10 (tile J) its rows; the operands stay as they were.
  rng = np.random.default_rng(3)
  n, k, t, si, sj = 10, 3, 4, 0, 6
  s = rng.standard_normal((t, t)).astype(np.float32)
  vals0 = np.sort(rng.standard_normal((n, k)).astype(np.float32), 1)[:, ::-1].copy()
  idx0 = np.tile(np.arange(k, dtype=np.int32), (n, 1)) - k  # earlier (lower) indices
  vals0_j, idx0_j = jax.numpy.asarray(vals0), jax.numpy.asarray(idx0)
  update = jax.jit(metrics.host_topk.update_block) if jit else metrics.host_topk.update_block
  vals, idx = update(s, vals0_j, idx0_j, np.array([si, sj, 0, 0, 0, 1], np.int32))
  np.testing.assert_array_equal(np.asarray(vals0_j), vals0)
  np.testing.assert_array_equal(np.asarray(idx0_j), idx0)
  want_v, want_i = vals0.copy(), idx0.copy()
  for rows, cands, offset in ((range(si, si + t), s, sj), (range(sj, sj + t), s.T, si)):
    for r, cand in zip(rows, cands):
      v = np.concatenate([vals0[r], cand])
      i = np.concatenate([idx0[r], offset + np.arange(t)])
      order = np.lexsort((i, -v))[:k]
      want_v[r], want_i[r] = v[order], i[order]
  np.testing.assert_array_equal(np.asarray(vals), want_v)
  np.testing.assert_array_equal(np.asarray(idx), want_i)


def test_auto_selection_uses_the_host_kernel_on_cpu():
  mesh = sharding.data_mesh(jax.devices()[:1])
  assert metrics.host_topk.unavailable_reason() is None  # numba is a dependency
  assert metrics.knn.uses_host_topk("auto", mesh)
  assert not metrics.knn.uses_host_topk("xla", mesh)
  with pytest.raises(ValueError, match="select must be one of"):
    metrics.nearest_neighbors(np.eye(5, dtype=np.float32), 2, select="numba")


def test_selection_falls_back_to_xla_when_the_host_kernel_cannot_run(monkeypatch):
  mesh = sharding.data_mesh(jax.devices()[:1])
  monkeypatch.setattr(metrics.host_topk, "unavailable_reason", lambda: "numba is not installed")
  assert not metrics.knn.uses_host_topk("auto", mesh)
  with pytest.raises(ValueError, match="select='host' cannot run: numba is not installed"):
    metrics.nearest_neighbors(np.eye(5, dtype=np.float32), 2, select="host")
  _, idx = metrics.nearest_neighbors(np.eye(5, dtype=np.float32) * np.arange(1, 6), 1)
  np.testing.assert_array_equal(np.asarray(idx)[:, 0], [1, 0, 0, 0, 0])


@pytest.mark.parametrize("n,da,db,k,tile", CASES)
def test_kernel_metrics_match_reference(n, da, db, k, tile):
  a, b = data(n, da, db, seed=1)
  assert metrics.cka(a, b) == pytest.approx(ref_cka(a, b), abs=2e-5)
  assert metrics.cka(a, b, kernel="rbf", sigma=3.0, tile=tile) == pytest.approx(
      ref_cka(a, b, "rbf", 3.0), abs=2e-5)
  assert metrics.unbiased_cka(a, b) == pytest.approx(ref_unbiased_cka(a, b), abs=2e-5)
  assert metrics.cknna(a, b, k=k, tile=tile) == pytest.approx(ref_cknna(a, b, k), abs=2e-5)
  d = min(da, db) // 2
  assert metrics.svcca(a, b, cca_dim=d) == pytest.approx(ref_svcca(a, b, d), abs=2e-5)


def test_unbiased_cka_accurate_for_features_far_from_the_origin():
  # HSIC_u is translation invariant; in fp32 the feature-space sums cancel unless the
  # features are centred first (before the fix: 0.789 instead of 0.812 at offset 30).
  rng = np.random.default_rng(12)
  z = rng.standard_normal((4000, 8))
  a = (z @ rng.standard_normal((8, 64)) + rng.standard_normal((4000, 64))).astype(np.float32)
  b = (z @ rng.standard_normal((8, 48)) + 2 * rng.standard_normal((4000, 48))).astype(np.float32)
  a64, b64 = a.astype(np.float64), b.astype(np.float64)

  def hsic_u(x, y):  # float64 feature-space form of hsic_unbiased (no 4000 x 4000 matrices)
    n = len(x)
    k1, l1 = x @ x.sum(0) - (x * x).sum(1), y @ y.sum(0) - (y * y).sum(1)
    tr = np.linalg.norm(x.T @ y) ** 2 - ((x * x).sum(1) * (y * y).sum(1)).sum()
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 * k1 @ l1 / (n - 2)) / (n * (n - 3))

  want = hsic_u(a64, b64) / np.sqrt(hsic_u(a64, a64) * hsic_u(b64, b64))
  for offset in (0.0, 30.0):
    got = metrics.unbiased_cka(a + np.float32(offset), b - np.float32(offset))
    assert got == pytest.approx(want, abs=2e-6), offset


def test_rbf_cka_accurate_when_kernel_entries_are_all_close():
  # Unit vectors, wide bandwidth: every K_ij is in [0.92, 1], so the centred HSIC is a
  # small difference of large sums (fp32 without the shift lost ~3 digits here).
  a, b = data(400, 24, 16, seed=12)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  assert metrics.cka(unit(a), unit(b), kernel="rbf", sigma=5.0, tile=128) == pytest.approx(
      ref_cka(unit(a), unit(b), "rbf", 5.0), abs=1e-6)


def test_cknna_full_k_is_unbiased_cka():
  # k = N - 1 masks nothing: CKNNA reduces to unbiased CKA (what the reference intends
  # with topk=None).
  a, b = data(40, 6, 10, seed=2)
  assert metrics.cknna(a, b, k=None) == pytest.approx(ref_unbiased_cka(a, b), abs=2e-5)


def test_svcca_close_to_sklearn_cca():
  # The reference's CCA step (sklearn, iterative) on exact SVD bases agrees with ours.
  from sklearn.cross_decomposition import CCA
  a, b = data(300, 12, 9, seed=4)

  def top(x):
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    return np.linalg.svd(x.astype(np.float64), full_matrices=False)[0][:, :4]

  ua, ub = CCA(n_components=4, max_iter=5000, tol=1e-12).fit_transform(top(a), top(b))
  want = np.mean([np.corrcoef(ua[:, i], ub[:, i])[0, 1] for i in range(4)])
  assert metrics.svcca(a, b, cca_dim=4) == pytest.approx(want, abs=1e-4)


def test_prepare_matches_torch_quantile():
  rng = np.random.default_rng(5)
  x = rng.standard_cauchy((3, 20, 16)).astype(np.float32)  # [L, N, D] with outliers
  got = metrics.prepare(x, q=0.9)
  t = torch.from_numpy(np.moveaxis(x, 0, 1).copy())  # the reference's [N, L, D]
  thr = torch.quantile(t.abs().flatten(start_dim=1), 0.9, dim=1).mean().item()
  np.testing.assert_allclose(got, np.clip(x, -thr, thr), rtol=1e-6)
  thr_exact = np.sort(np.abs(x).ravel())[int(0.9 * x.size)]
  np.testing.assert_array_equal(metrics.prepare(x, q=0.9, exact=True),
                                np.clip(x, -thr_exact, thr_exact))
  np.testing.assert_array_equal(metrics.prepare(x, q=1.0), x)


def test_score_is_max_over_layer_pairs():
  a, _ = data(50, 8, 8, seed=6)
  rng = np.random.default_rng(6)
  la = np.stack([a, a + rng.standard_normal(a.shape).astype(np.float32), -a])
  lb = np.stack([rng.standard_normal((50, 5)).astype(np.float32), a @ rng.standard_normal((8, 5)).astype(np.float32)])
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  for name, kw in [("mutual_knn", {"k": 5}), ("cka", {})]:
    value, (i, j) = metrics.score(la, lb, name, **kw)
    table = np.array([[metrics.METRICS[name](unit(x), unit(y), **kw) for y in lb] for x in la])
    assert value == pytest.approx(table.max(), abs=1e-6)
    assert table[i, j] == pytest.approx(table.max(), abs=1e-6)


def test_cli_json(tmp_path, capsys):
  a, b = data(60, 7, 5, seed=7)
  np.save(tmp_path / "a.npy", np.stack([a, 2 * a]))
  np.save(tmp_path / "b.npy", b)
  assert cli.main([str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metric=cknna",
                   "--k=6", "--q=0.9", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  want = metrics.score(metrics.prepare(np.stack([a, 2 * a]), 0.9), metrics.prepare(b, 0.9),
                       "cknna", k=6)
  assert out["value"] == pytest.approx(want[0]) and tuple(out["layers"]) == want[1]
  assert cli.main([str(tmp_path / "a.npy"), str(tmp_path / "missing.npy")]) == 2
  assert "no such feature file" in capsys.readouterr().err
  # Bad content: each message names the file.
  bad = b.copy()
  bad[3, 1] = np.nan
  np.save(tmp_path / "nan.npy", bad)
  assert cli.main([str(tmp_path / "a.npy"), str(tmp_path / "nan.npy")]) == 2
  err = capsys.readouterr().err
  assert f"{tmp_path / 'nan.npy'}: " in err and "NaN" in err
  np.save(tmp_path / "short.npy", b[:50])
  assert cli.main([str(tmp_path / "a.npy"), str(tmp_path / "short.npy")]) == 2
  err = capsys.readouterr().err
  assert str(tmp_path / "a.npy") in err and str(tmp_path / "short.npy") in err
  assert "60 samples" in err and "has 50" in err

# ------------------------------------------------------------------------ properties


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2 ** 16), scale=st.floats(0.01, 100.0))
def test_cka_invariant_to_orthogonal_maps_and_scaling(seed, scale):
  a, b = data(37, 5, 9, seed=seed % 97)
  q = scipy.stats.ortho_group.rvs(9, random_state=seed)
  b2 = (scale * b @ q).astype(np.float32)
  for fn in (metrics.cka, metrics.unbiased_cka):
    assert fn(a, b2) == pytest.approx(fn(a, b), abs=1e-4)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2 ** 16))
def test_permutation_of_samples_changes_nothing(seed):
  a, b = data(37, 5, 9, seed=seed % 97)
  # Continuous random data: no ties, so the neighbour order is permutation-equivariant.
  perm = np.random.default_rng(seed).permutation(37)
  for name, kw in [("mutual_knn", {"k": 4}), ("cycle_knn", {"k": 4}), ("lcs_knn", {"k": 4}),
                   ("edit_distance_knn", {"k": 4}), ("cka", {}), ("unbiased_cka", {}),
                   ("cknna", {"k": 4}), ("svcca", {"cca_dim": 3}),
                   ("cka", {"kernel": "rbf", "sigma": 2.0})]:
    fn = metrics.METRICS[name]
    assert fn(a[perm], b[perm], **kw) == pytest.approx(fn(a, b, **kw), abs=1e-5), name


def test_mutual_knn_with_itself_is_one():
  a, _ = data(130, 16, 8, seed=8)
  for name in ("mutual_knn", "lcs_knn", "edit_distance_knn"):  # cycle_knn is not 1:
    assert metrics.METRICS[name](a, a, k=10) == 1.0  # inner-product k-NN is not symmetric
  assert metrics.cka(a, a) == pytest.approx(1.0, abs=1e-6)


def test_tile_size_never_changes_the_result():
  a, b = data(37, 5, 9, seed=9)  # 37 rows: 5 tiles of 8 (the last padded) vs one tile
  for name, kw in [("mutual_knn", {"k": 4}), ("lcs_knn", {"k": 4}), ("cknna", {"k": 4}),
                   ("cka", {"kernel": "rbf"})]:
    vals = [metrics.METRICS[name](a, b, tile=t, **kw) for t in (8, 1000)]
    assert vals[0] == pytest.approx(vals[1], abs=1e-6)


def test_eight_devices_equal_one(num_devices):
  a, b = data(90, 8, 12, seed=10)
  one = sharding.data_mesh(jax.devices()[:1])
  eight = sharding.data_mesh()
  _, i1 = metrics.nearest_neighbors(a, 7, tile=16, mesh=one)
  _, i8 = metrics.nearest_neighbors(a, 7, tile=16, mesh=eight)
  np.testing.assert_array_equal(np.asarray(i1), np.asarray(i8))
  for name, kw in [("mutual_knn", {"k": 7, "tile": 16}), ("cka", {}),
                   ("cka", {"kernel": "rbf", "tile": 16}), ("unbiased_cka", {}),
                   ("cknna", {"k": 7, "tile": 16}), ("svcca", {"cca_dim": 4})]:
    fn = metrics.METRICS[name]
    assert fn(a, b, mesh=one, **kw) == pytest.approx(fn(a, b, mesh=eight, **kw), abs=1e-5)


def test_bf16_path_is_close_to_fp32():
  a, b = data(200, 32, 32, seed=11)
  _, i32 = metrics.nearest_neighbors(a, 10)
  _, i16 = metrics.nearest_neighbors(a, 10, precision="bf16")
  overlap = metrics.knn.mutual_from_idx(i32, i16)  # neighbour sets bf16 vs fp32
  assert overlap > 0.9
  assert metrics.mutual_knn(a, b, k=10, precision="bf16") == pytest.approx(
      metrics.mutual_knn(a, b, k=10), abs=0.05)

# ------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
  a, b = data(20, 4, 4)
  with pytest.raises(ValueError, match="same number of samples"):
    metrics.mutual_knn(a, b[:19])
  with pytest.raises(ValueError, match="k=20 needs more samples"):
    metrics.mutual_knn(a, b, k=20)
  bad = a.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"NaN/Inf value\(s\) \(first at index \(3, 1\)\)"):
    metrics.cka(bad, b)
  bad[3, 1] = np.inf
  with pytest.raises(ValueError, match="NaN/Inf"):
    metrics.cknna(a, bad)
  with pytest.raises(ValueError, match="must be a 2-D"):
    metrics.cka(a[None], b)
  with pytest.raises(ValueError, match="at least 4 samples"):
    metrics.unbiased_cka(a[:3], b[:3])
  with pytest.raises(ValueError, match="at least 4 samples"):
    metrics.cknna(a[:3], b[:3], k=2)
  with pytest.raises(ValueError, match="unknown metric 'mutual_nn'"):
    metrics.score(a, b, "mutual_nn")
  with pytest.raises(ValueError, match="unknown kernel"):
    metrics.cka(a, b, kernel="ip")
  with pytest.raises(ValueError, match="cca_dim=5 exceeds"):
    metrics.svcca(a, b, cca_dim=5)
  with pytest.raises(ValueError, match="constant"):
    metrics.cka(np.ones_like(a), b)
  with pytest.raises(ValueError, match="k=1 is too small"):
    metrics.cknna(a, b, k=1)
