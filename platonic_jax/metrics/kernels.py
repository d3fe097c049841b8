"""Kernel metrics: CKA (linear, RBF), unbiased CKA, CKNNA, SVCCA — never N x N.

* Linear CKA, unbiased CKA and SVCCA are exact in feature space: everything they need is
  a handful of [Da, Db] Gram products and per-row norms, summed over rows. Rows are split
  over the ``data`` mesh (``jax.shard_map`` + ``lax.psum``): 8 devices do 1/8 each. The
  final scalar combination runs in float64 on the host (the HSIC formulas subtract
  large, nearly equal terms).
* RBF CKA accumulates over [tile, tile] blocks of the upper triangle (symmetric kernels),
  the blocks dealt to devices as in ``knn``; per-block sums go to the host in float64.
* CKNNA is exact and sparse: its mutual-neighbour mask has at most k entries per row, so
  after the tiled k-NN pass every term of the unbiased HSIC is a sum over <= N*k entries
  (the asymmetric tr(K̃ L̃) term pairs entry (i, j) with entry (j, i) by sorting).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from platonic_jax import sharding
from platonic_jax.metrics import _checks
from platonic_jax.metrics import knn as knn_lib
from platonic_jax.metrics import tiling

_HI = lax.Precision.HIGHEST  # true fp32 products on TPU/GPU as well as CPU


def _gram(x, y):
  # [n, Dx]^T x [n, Dy] -> [Dx, Dy]
  return lax.dot_general(x, y, (((0,), (0,)), ((), ())), precision=_HI)


ROW_CHUNK = 4096  # rows per step of the feature-space programs (memory O(chunk * D + D^2))


@functools.lru_cache(maxsize=None)
def _rows_program(mesh, mode: str, chunk: int):
  """Row-sharded feature-space statistics for one mode; jit caches per shape.

  Each device walks its rows in ``chunk``-row steps (never a whole-array temporary),
  and the per-device sums meet in ``lax.psum``.
  mode "center": column-centred Grams (biased CKA); "zscore": column z-scored Grams
  (SVCCA); "unbiased": the sums of Song et al.'s unbiased HSIC.
  """
  axis = sharding.DATA
  psum = lambda v: lax.psum(v, axis)

  def device_fn(a, b, n):
    steps = a.shape[0] // chunk
    base = lax.axis_index(axis) * a.shape[0]

    def rows(s, shift_a=0.0, shift_b=0.0, scale_a=1.0, scale_b=1.0):
      valid = (base + s * chunk + jnp.arange(chunk) < n)[:, None]
      ca = lax.dynamic_slice_in_dim(a, s * chunk, chunk)
      cb = lax.dynamic_slice_in_dim(b, s * chunk, chunk)
      return (jnp.where(valid, (ca - shift_a) * scale_a, 0.0),
              jnp.where(valid, (cb - shift_b) * scale_b, 0.0))

    def total(fn, init):  # sum over this device's chunks, then over devices
      out = lax.fori_loop(0, steps, lambda s, acc: jax.tree.map(jnp.add, acc, fn(s)),
                          tiling.varying(init))
      return jax.tree.map(psum, out)

    da, db = a.shape[1], b.shape[1]
    col_sums = lambda s: tuple(x.sum(0) for x in rows(s))
    sa, sb = total(col_sums, (jnp.zeros(da), jnp.zeros(db)))  # A^T 1, B^T 1
    grams0 = (jnp.zeros((da, da)), jnp.zeros((db, db)), jnp.zeros((da, db)))
    if mode in ("center", "zscore"):
      ma, mb = sa / n, sb / n
      ia = ib = 1.0
      if mode == "zscore":
        # Unbiased std (ddof=1) as the reference's torch.std; constant columns become 0
        # (the reference divides by std + 1e-8, which also zeroes them).
        sq = lambda s: tuple(jnp.sum(x * x, 0) for x in rows(s, ma, mb))
        va, vb = total(sq, (jnp.zeros(da), jnp.zeros(db)))
        sda, sdb = jnp.sqrt(va / (n - 1)), jnp.sqrt(vb / (n - 1))
        ia = jnp.where(sda > 0, 1.0 / jnp.where(sda > 0, sda, 1.0), 0.0)
        ib = jnp.where(sdb > 0, 1.0 / jnp.where(sdb > 0, sdb, 1.0), 0.0)

      def grams(s):
        x, y = rows(s, ma, mb, ia, ib)
        return _gram(x, x), _gram(y, y), _gram(x, y)

      return total(grams, grams0)

    # mode == "unbiased": K̃ = A A^T with its diagonal q_i = |a_i|^2 zeroed. HSIC_u of
    # linear kernels is invariant to translating the features (K -> K + u1^T + 1u^T + c),
    # so the rows are column-centred first: raw features far from the origin make
    # tr(K̃ L̃) = |A^T B|^2 - sum_i q_i r_i cancel catastrophically in fp32 (a mean of 30
    # per column gave 0.789 for 0.812 at N = 4000; tested).
    ma, mb = sa / n, sb / n
    sa, sb = total(lambda s: tuple(x.sum(0) for x in rows(s, ma, mb)),
                   (jnp.zeros(da), jnp.zeros(db)))  # the centred columns' sums (~0)

    def sums(s):
      x, y = rows(s, ma, mb)
      qa, qb = jnp.sum(x * x, 1), jnp.sum(y * y, 1)  # [chunk]
      ka, kb = x @ sa - qa, y @ sb - qb  # K̃ 1 on these rows: [chunk, Da] x [Da] -> [chunk]
      return (_gram(x, y), _gram(x, x), _gram(y, y),
              jnp.stack([jnp.sum(qa * qb), jnp.sum(qa * qa), jnp.sum(qb * qb), qa.sum(),
                         qb.sum(), jnp.sum(ka * kb), jnp.sum(ka * ka), jnp.sum(kb * kb)]))

    gab, gaa, gbb, v = total(sums, (grams0[2], grams0[0], grams0[1], jnp.zeros(8)))
    sqf = lambda g: jnp.sum(g * g)  # |.|_F^2
    return jnp.stack([sqf(gab), sqf(gaa), sqf(gbb), v[0], v[1], v[2],
                      jnp.sum(sa * sa) - v[3], jnp.sum(sb * sb) - v[4],  # 1^T K̃ 1
                      v[5], v[6], v[7]])

  out = (P(), P(), P()) if mode != "unbiased" else P()
  fn = jax.shard_map(device_fn, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=out)
  return jax.jit(fn)


def _row_stats(a, b, mode, mesh):
  mesh = tiling.default_mesh() if mesh is None else mesh
  ndev = mesh.devices.size
  n = a.shape[0]
  m = -(-n // ndev)  # rows per device
  # A chunk that divides the rows per device avoids padding (a copy of the features).
  top = min(ROW_CHUNK, m)
  chunk = next((c for c in range(top, top // 2, -1) if m % c == 0), top)
  a_pad, _ = sharding.pad_rows(a, ndev * chunk)
  b_pad, _ = sharding.pad_rows(b, ndev * chunk)
  return _rows_program(mesh, mode, chunk)(a_pad, b_pad, np.float32(n))


def centred_grams(a, b, mesh=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(A_cᵀA_c, B_cᵀB_c, A_cᵀB_c) of the column-centred features, float64 numpy
  [Da, Da], [Db, Db], [Da, Db]: the row-sharded fp32 sums of ``cka``. What every
  feature-space measure (Procrustes, shape metrics, CCA, regression, RV) starts from."""
  return tuple(np.asarray(g, np.float64) for g in _row_stats(a, b, "center", mesh))


def _hsic_u(tr, sum_k, sum_l, cross, n):
  """Song et al. (2012) eq. 5 from its four sums, in float64."""
  n = float(n)
  return (tr + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


# ---------------------------------------------------------------------------------------
# RBF kernel, tiled.


def _device_rbf(a, b, pi, pj, ok, inv2s2, shift, *, t):
  """Per block pair: [sum K∘L, sum K∘K, sum L∘L] (x2 off the diagonal) and row sums.

  The kernels enter shifted, K - shift[0] and L - shift[1]: the centred HSIC ignores a
  constant added to every entry (H 1 = 0), and with entries near their typical value
  the fp32 sums no longer cancel catastrophically (RBF entries all near 1 otherwise
  lose ~3 digits at N = 2000).
  """
  n = a.shape[0]
  pi, pj, ok = pi[0], pj[0], ok[0]
  qa, qb = jnp.sum(a * a, 1), jnp.sum(b * b, 1)
  local = jnp.arange(t)

  def kernel(x, q, shift_x, si, sj, keep):
    xi = lax.dynamic_slice_in_dim(x, si, t)
    xj = lax.dynamic_slice_in_dim(x, sj, t)
    # [t, D] x [t, D]^T -> [t, t]; |x_i - x_j|^2 = q_i + q_j - 2 x_i.x_j, clamped at 0
    # against rounding and exactly 0 on the diagonal (as cdist).
    d2 = (lax.dynamic_slice_in_dim(q, si, t)[:, None]
          + lax.dynamic_slice_in_dim(q, sj, t)[None, :]
          - 2.0 * lax.dot_general(xi, xj, (((1,), (1,)), ((), ())), precision=_HI))
    r, c = si + local, sj + local
    d2 = jnp.where(r[:, None] == c[None, :], 0.0, jnp.maximum(d2, 0.0))
    return jnp.where(keep, jnp.exp(-d2 * inv2s2) - shift_x, 0.0)

  def body(p, carry):
    sums, rk, rl = carry
    bi, bj, valid = pi[p], pj[p], ok[p]
    # No padding: a ragged last tile is read as [n - t, n), its rows / columns that
    # belong to the previous tile masked (tiling.tile_start).
    si, sj = tiling.tile_start(bi, t, n), tiling.tile_start(bj, t, n)
    r, c = si + local, sj + local
    keep = (r[:, None] >= bi * t) & (c[None, :] >= bj * t) & valid
    k = kernel(a, qa, shift[0], si, sj, keep)
    l = kernel(b, qb, shift[1], si, sj, keep)
    w = jnp.where(bi == bj, 1.0, 2.0)  # an off-diagonal block stands for itself and its transpose
    sums = sums.at[p].set(w * jnp.stack([jnp.sum(k * l), jnp.sum(k * k), jnp.sum(l * l)]))
    rk = lax.dynamic_update_slice_in_dim(
        rk, lax.dynamic_slice_in_dim(rk, si, t) + k.sum(1), si, 0)
    rl = lax.dynamic_update_slice_in_dim(
        rl, lax.dynamic_slice_in_dim(rl, si, t) + l.sum(1), si, 0)
    off = jnp.where(bi == bj, 0.0, 1.0)
    rk = lax.dynamic_update_slice_in_dim(
        rk, lax.dynamic_slice_in_dim(rk, sj, t) + off * k.sum(0), sj, 0)
    rl = lax.dynamic_update_slice_in_dim(
        rl, lax.dynamic_slice_in_dim(rl, sj, t) + off * l.sum(0), sj, 0)
    return sums, rk, rl

  init = tiling.varying((jnp.zeros((pi.shape[0], 3), jnp.float32), jnp.zeros(n), jnp.zeros(n)))
  sums, rk, rl = lax.fori_loop(0, pi.shape[0], body, init)
  return sums[None], rk[None], rl[None]


@functools.lru_cache(maxsize=None)
def _rbf_program(mesh, t: int):
  d = sharding.DATA
  fn = jax.shard_map(
      functools.partial(_device_rbf, t=t), mesh=mesh,
      in_specs=(P(), P(), P(d), P(d), P(d), P(), P()), out_specs=(P(d), P(d), P(d)))

  @jax.jit
  def run(a, b, pi, pj, ok, inv2s2, shift):
    sums, rk, rl = fn(a, b, pi, pj, ok, inv2s2, shift)
    return sums, rk.sum(0), rl.sum(0)  # row sums: add the devices' partial sums

  return run


def _centred(x: np.ndarray) -> np.ndarray:
  """Columns minus their float64 mean, float32, in row chunks (no float64 copy)."""
  mean = x.mean(0, dtype=np.float64)
  out = np.empty_like(x)
  for i in range(0, len(x), ROW_CHUNK):
    out[i:i + ROW_CHUNK] = x[i:i + ROW_CHUNK] - mean
  return out


def _cka_rbf(a, b, sigma, tile, mesh):
  if not (np.isfinite(sigma) and sigma > 0):
    raise ValueError(f"sigma must be a positive finite RBF bandwidth, got {sigma!r}")
  mesh = tiling.default_mesh() if mesh is None else mesh
  n = a.shape[0]
  # The sweep holds both feature matrices: size the tile for their summed width.
  t = tiling.effective_tile(n, tiling.resolve_tile(tile, n, a.shape[1] + b.shape[1], 0, mesh))
  pi, pj, ok = tiling.block_pairs(-(-n // t), mesh.devices.size)
  # RBF kernels see differences only: centred columns keep |x_i - x_j|^2 = q_i + q_j -
  # 2 x_i.x_j from cancelling in fp32 for features far from the origin (it once left
  # fp32 noise on the off-diagonal of a constant kernel whose diagonal is exactly 1).
  a, b = _centred(a), _centred(b)

  def typical(x):  # exp(-E|x_i - x_j|^2 / 2 sigma^2), E over all pairs, in float64
    # Row chunks: no float64 copy of the whole feature matrix.
    sq = sum(float(np.sum(np.square(x[i:i + ROW_CHUNK], dtype=np.float64)))
             for i in range(0, len(x), ROW_CHUNK))
    mean_d2 = 2.0 * (sq / len(x) - np.sum(x.mean(0, dtype=np.float64) ** 2))
    return np.exp(-mean_d2 / (2.0 * sigma ** 2))

  shift = np.array([typical(a), typical(b)], np.float32)
  for name, x, tv in (("a", a, shift[0]), ("b", b, shift[1])):
    if not -np.log(max(float(tv), 1e-300)) > 1e-5:
      raise ValueError(
          f"cka(kernel='rbf'): sigma={sigma:g} is so large against the spread of {name} "
          "that every kernel entry is 1 up to float32 rounding (mean |x_i - x_j|^2 / "
          "2 sigma^2 < 1e-5); use a smaller sigma (e.g. the median distance)")
  sums, rk, rl = _rbf_program(mesh, t)(a, b, pi, pj, ok,
                                        np.float32(1.0 / (2.0 * sigma ** 2)), shift)
  kl, kk, ll = np.asarray(sums, np.float64).reshape(-1, 3).sum(0)
  rk, rl = np.asarray(rk, np.float64), np.asarray(rl, np.float64)
  # tr(K H L H) = tr(K L) - 2/n (K1).(L1) + (1^T K 1)(1^T L 1)/n^2 for symmetric K, L.
  hsic = lambda tr, r1, r2: tr - 2.0 / n * (r1 @ r2) + r1.sum() * r2.sum() / n ** 2
  return hsic(kl, rk, rl) / _checks.positive_denominator(
      hsic(kk, rk, rk), hsic(ll, rl, rl), "cka(kernel='rbf')")


# ---------------------------------------------------------------------------------------
# Public metrics.


def cka(a, b, kernel: str = "linear", sigma: float = 1.0, *, tile: int | None = None,
        mesh=None) -> float:
  """Centered kernel alignment with the biased HSIC (Kornblith et al. 2019), in [0, 1].

  CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H),
  H = I - 11^T/n. a: [N, Da], b: [N, Db].
  kernel="linear": K = A A^T, computed exactly in feature space as
    |A_c^T B_c|_F^2 / (|A_c^T A_c|_F |B_c^T B_c|_F) with column-centred A_c, B_c
    (O(N D^2) instead of the reference's O(N^3) dense K @ H @ L @ H).
  kernel="rbf": K_ij = exp(-|a_i - a_j|^2 / (2 sigma^2)), accumulated over
    [tile, tile] blocks (``tile`` never changes the result beyond float rounding).
  Differences from the reference ``AlignmentMetrics.cka``: kernel names "linear" /
  "rbf" (reference: "ip" / "rbf", ``rbf_sigma``); no +1e-6 in the denominator
  (degenerate, constant features raise ValueError instead of returning ~0).
  """
  a, b = _checks.pair(a, b)
  if a.shape[0] < 2:
    raise ValueError(f"cka needs at least 2 samples, got N = {a.shape[0]}")
  name = "cka" if kernel != "rbf" else "cka(kernel='rbf')"
  _checks.check_spread(a, "a", name)
  _checks.check_spread(b, "b", name)
  if kernel == "rbf":
    return float(_cka_rbf(a, b, float(sigma), tile, mesh))
  if kernel != "linear":
    raise ValueError(f"unknown kernel {kernel!r}; use kernel='linear' or kernel='rbf'")
  gaa, gbb, gab = _row_stats(a, b, "center", mesh)
  sq = lambda g: float(jnp.sum(jnp.square(g)))  # |.|_F^2, reduced on device
  return sq(gab) / _checks.positive_denominator(sq(gaa), sq(gbb), "cka")


def unbiased_cka(a, b, *, mesh=None) -> float:
  """CKA with Song et al.'s (2012, eq. 5) unbiased HSIC estimator, linear kernel.

  HSIC_u(K, L) = [tr(K̃ L̃) + 1^T K̃ 1 1^T L̃ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K̃ L̃ 1]
  / (n (n-3)), with K̃ = A A^T, diagonal zeroed. Exact in feature space:
  tr(K̃ L̃) = |A^T B|_F^2 - sum_i |a_i|^2 |b_i|^2, K̃ 1 = A (A^T 1) - diag(K), on
  column-centred A, B (HSIC_u of linear kernels is translation invariant; centring keeps
  the fp32 sums from cancelling for features far from the origin).
  a: [N, Da], b: [N, Db], N >= 4. Difference from the reference: no +1e-6 in the
  denominator; a non-positive HSIC_u(K, K) raises ValueError instead of giving NaN.
  """
  a, b = _checks.kernel_pair(a, b, "unbiased_cka")
  n = a.shape[0]
  _checks.check_min_n(n, 4, "unbiased_cka")
  s = np.asarray(_row_stats(a, b, "unbiased", mesh), np.float64)
  ab, aa, bb, qab, qaa, qbb, sk, sl, cab, caa, cbb = s
  kl = _hsic_u(ab - qab, sk, sl, cab, n)
  kk = _hsic_u(aa - qaa, sk, sk, caa, n)
  ll = _hsic_u(bb - qbb, sl, sl, cbb, n)
  return float(kl / _checks.positive_denominator(kk, ll, "unbiased_cka"))


@functools.partial(jax.jit, static_argnames=("batch",))
def _masked_values(idx_a, val_a, idx_b, val_b, batch):
  """For each neighbour j = idx_a[i, p]: is j also in N_B(i), and L_ij there. [N, k] x2."""

  def row(args):
    ia, ib, vb = args  # [k], [k], [k]
    eq = ia[:, None] == ib[None, :]  # [k, k]
    return eq.any(1), jnp.sum(jnp.where(eq, vb[None, :], 0.0), 1)

  return lax.map(row, (idx_a, idx_b, val_b), batch_size=batch)


@jax.jit
def _sparse_hsic_sums(idx, mask, kv, lv):
  """The four sums of HSIC_u for K̃ = M∘K, L̃ = M∘L given M's entries per row.

  idx: [N, k] columns j of the entries of row i; mask: [N, k] which are in M;
  kv, lv: [N, k] K_ij and L_ij there. Returns (tr(K̃ L̃), 1^T K̃ 1, 1^T L̃ 1, 1^T K̃ L̃ 1).
  """
  n, k = idx.shape
  kv = jnp.where(mask, kv, 0.0)
  lv = jnp.where(mask, lv, 0.0)
  col_k = jax.ops.segment_sum(kv.ravel(), idx.ravel(), num_segments=n)  # 1^T K̃: [N]
  row_l = lv.sum(1)  # L̃ 1: [N]
  cross = jnp.sum(col_k * row_l)
  # tr(K̃ L̃) = sum_ij K̃_ij L̃_ji: only pairs present as (i, j) and as (j, i) count.
  # Key each entry by its unordered pair; after sorting, such pairs are adjacent twins.
  rows = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], (n, k))
  lo = jnp.where(mask, jnp.minimum(rows, idx), n).ravel()
  hi = jnp.where(mask, jnp.maximum(rows, idx), n).ravel()
  lo, hi, skv, slv = lax.sort((lo, hi, kv.ravel(), lv.ravel()), num_keys=2)
  twin = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1]) & (lo[1:] < n)
  tr = jnp.sum(jnp.where(twin, skv[:-1] * slv[1:] + skv[1:] * slv[:-1], 0.0))
  return tr, kv.sum(), lv.sum(), cross


def cknna(a, b, k: int | None = 10, *, tile: int | None = None, mesh=None) -> float:
  """Centered kernel nearest-neighbour alignment (Huh et al. 2024, appendix), linear kernel.

  sim(K, L) = HSIC_u(M∘K, M∘L) with M = M_K∘M_L, M_K[i, j] = 1[j ∈ N_K(i)] (the k nearest
  neighbours of i by inner product, self excluded, ties toward the lower index);
  CKNNA = sim(K, L) / sqrt(sim(K, K) sim(L, L)), where sim(K, K) is masked by M_K alone.
  M is not symmetric; HSIC_u is applied to the masked matrices exactly as the reference
  does (its tr term is sum_ij K̃_ij L̃_ji). a: [N, Da], b: [N, Db], N >= 4, 2 <= k < N.
  Never N x N: one tiled k-NN pass per side, then sums over the <= N k mask entries.
  Differences from the reference ``AlignmentMetrics.cknna``: ``k=None`` means k = N - 1
  (the reference intends that — CKNNA then equals unbiased CKA — but compares
  ``topk < 2`` before replacing None and raises TypeError); no +1e-6 in the denominator;
  ties toward the lower index (torch.topk leaves them unspecified).
  """
  a, b = _checks.kernel_pair(a, b, "cknna")
  n = a.shape[0]
  _checks.check_min_n(n, 4, "cknna")
  k = n - 1 if k is None else k
  k = _checks.check_k(k, n, minimum=2)
  va, ia = cknna_lists(a, k, "a", tile=tile, mesh=mesh)
  vb, ib = cknna_lists(b, k, "b", tile=tile, mesh=mesh)
  mask, lv = _masked_values(ia, va, ib, vb, cknna_batch(n, k))
  # HSIC_u of the masked kernels from their four sums, combined in float64 on the host.
  kl = _hsic_u(*(float(v) for v in _sparse_hsic_sums(ia, mask, va, lv)), n)
  return float(kl / cknna_denominator(ia, va, ib, vb, n))


def cknna_batch(n: int, k: int) -> int:
  return max(1, min(n, (1 << 24) // (k * k)))  # bounds the [batch, k, k] compare


def cknna_denominator(ia, va, ib, vb, n: int) -> float:
  """sqrt(sim(K, K) sim(L, L)): each side masked by its own neighbours (permutation
  invariant, so the nulls reuse it)."""
  ones = jnp.ones(ia.shape, bool)
  kk = _hsic_u(*(float(v) for v in _sparse_hsic_sums(ia, ones, va, va)), n)
  ll = _hsic_u(*(float(v) for v in _sparse_hsic_sums(ib, ones, vb, vb)), n)
  return _checks.positive_denominator(kk, ll, "cknna")


def cknna_lists(x, k: int, name: str, *, tile, mesh):
  """The k nearest neighbours (sims, idx) CKNNA masks with; ValueError when every
  row's k + 1 best similarities tie (then the mask, and CKNNA, would be set by the tie
  rule alone: e.g. orthogonal one-hot rows)."""
  n = x.shape[0]
  kk = min(k + 1, n - 1)
  v, i = knn_lib.nearest_neighbors(x, kk, tile=tile, mesh=mesh)
  if bool(jnp.all(v[:, 0] == v[:, kk - 1])):
    raise ValueError(
        f"cknna is undefined for {name}: every sample's {kk} most similar samples are "
        "equally similar, so which k are its neighbours is set by the tie rule alone; "
        "the features carry no neighbourhood structure (check the encoder or layer)")
  return v[:, :k], i[:, :k]


def _one_blas_thread():
  """Single-threaded LAPACK for the small [D, D] eigenproblem: OpenBLAS's threads spin
  against XLA's own pool, which made a 768 x 768 ``eigh`` take seconds instead of 0.1 s
  here. Uses threadpoolctl when installed (it comes with scikit-learn)."""
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    return contextlib.nullcontext()
  return threadpool_limits(1)


def host_svd(m, **kw):
  """np.linalg.svd with one BLAS thread (see ``_one_blas_thread``); m may be batched."""
  with _one_blas_thread():
    return np.linalg.svd(m, **kw)


def host_eigh(g):
  """np.linalg.eigh with one BLAS thread."""
  with _one_blas_thread():
    return np.linalg.eigh(g)


def svcca(a, b, cca_dim: int = 10, *, cap_rank: bool = False, mesh=None) -> float:
  """SVCCA (Raghu et al. 2017): mean canonical correlation of the top singular subspaces.

  Columns are z-scored (mean 0, unbiased std 1; constant columns become 0), each side
  keeps its top ``cca_dim`` left singular vectors U (exact SVD, from the [D, D] Gram in
  float64), and the score is the mean of the canonical correlations between span(U_a)
  and span(U_b) = the singular values of U_a^T U_b. a: [N, Da], b: [N, Db];
  cca_dim <= min(Da, Db, N - 1), and each side needs rank >= cca_dim after z-scoring
  (singular values above 1e-3 of its largest), else ValueError — unless
  ``cap_rank=True``: then the directions are min(cca_dim, Da, Db, N - 1, rank a, rank b)
  (what the experiment uses: a 2-D baseline space or seed 003's rank-2 views have fewer
  than 10). In [0, 1].
  Differences from the reference ``AlignmentMetrics.svcca``: the reference takes
  ``torch.svd_lowrank`` (randomised: a different value each run) and sklearn's iterative
  CCA plus 1e-10 noise; here the SVD and the canonical correlations are exact and
  deterministic (the value the reference approximates).
  """
  pa, pb, gab = svcca_directions(a, b, cca_dim, cap_rank=cap_rank, mesh=mesh)
  # U_a^T U_b = S_a^-1 V_a^T (Z_a^T Z_b) V_b S_b^-1: [c, Da] x [Da, Db] x [Db, c] -> [c, c]
  rho = np.linalg.svd(pa.T @ gab @ pb, compute_uv=False)
  return float(np.mean(np.clip(rho, 0.0, 1.0)))


def svcca_directions(a, b, cca_dim: int, *, cap_rank: bool = False, mesh=None):
  """SVCCA's kept directions: (P_a [Da, c], P_b [Db, c], Z_aᵀZ_b [Da, Db] float64) with
  U_a = Z_a P_a the top-c left singular vectors of the z-scored a (``svcca``'s checks
  and rank caps). The permutation nulls reuse P_a, P_b: SVCCA of b[π] is the mean
  singular value of U_aᵀ P U_b."""
  a, b = _checks.kernel_pair(a, b, "svcca")
  n = a.shape[0]
  if isinstance(cca_dim, bool) or not isinstance(cca_dim, (int, np.integer)) or cca_dim < 1:
    raise ValueError(f"cca_dim must be a positive integer, got {cca_dim!r}")
  limit = min(a.shape[1], b.shape[1], n - 1)
  if cca_dim > limit and not cap_rank:
    raise ValueError(
        f"cca_dim={cca_dim} exceeds min(Da, Db, N - 1) = {limit} (a {a.shape}, b {b.shape}); "
        "use a smaller cca_dim")
  cca_dim = min(int(cca_dim), limit)
  if cca_dim < 1:
    raise ValueError(f"svcca needs N >= 2 samples, got a {a.shape} and b {b.shape}")
  gaa, gbb, gab = (np.asarray(g, np.float64) for g in _row_stats(a, b, "zscore", mesh))

  import scipy.linalg  # noqa: PLC0415 - a dependency of jax; imported when used

  def top(g):  # top cca_dim eigenpairs of Z^T Z = V S^2 V^T, largest first
    d = g.shape[0]
    with _one_blas_thread():
      w, v = scipy.linalg.eigh(g, driver="evr", subset_by_index=[d - cca_dim, d - 1])
    w, v = w[::-1], v[:, ::-1]
    return w, v, int(np.sum(w > 1e-6 * max(w[0], 1e-30)))

  wa, va, ra = top(gaa)
  wb, vb, rb = top(gbb)
  if min(ra, rb) < cca_dim:
    if not cap_rank or min(ra, rb) < 1:
      name, w = ("a", wa) if ra < rb else ("b", wb)
      raise ValueError(
          f"svcca: {name} has rank < cca_dim={cca_dim} after z-scoring (singular values "
          f"{np.sqrt(np.maximum(w, 0))}); use a smaller cca_dim")
    c = min(ra, rb)
    wa, va, wb, vb = wa[:c], va[:, :c], wb[:c], vb[:, :c]
  return va / np.sqrt(wa)[None, :], vb / np.sqrt(wb)[None, :], gab
