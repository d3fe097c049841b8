"""Tiled exact k-nearest neighbours and the neighbour-set metrics built on them.

The reference (Huh et al., ``metrics.compute_nearest_neighbors``) builds the full
``N x N`` Gram matrix and argsorts every row: O(N^2) memory and an O(N^2 log N) sort.
Here the Gram matrix is visited in ``[tile, tile]`` blocks and only a running top-k per
row is kept (memory O(N * (k + tile))):

* The Gram matrix S = X X^T is symmetric, so only blocks (I, J) with I <= J are
  computed: block S_IJ feeds the top-k of the rows of tile I, its transpose the rows of
  tile J. Half the matmul work of a row-tile sweep.
* The block pairs are dealt round-robin to every device of the ``data`` mesh
  (``jax.shard_map``); each device keeps a top-k state for all N rows from its own
  blocks, and the states are merged at the end (k * devices candidates per row).
* Each block's candidates enter the running top-k either through ``lax.top_k`` on the
  device (GPU / TPU; ``lax.approx_max_k`` with ``approx_recall=`` as an opt-in, which
  only TPUs run approximately) or, on CPU devices, through the thresholded numba kernel
  of ``host_topk`` (XLA:CPU's top-k costs as much as the matmul; the kernel a few % of
  it).
* ``tile=None`` (the default) sizes the blocks from the device's memory
  (``tiling.device_tile``: 1024 on CPU, up to 8192 on an accelerator).
* Neighbours are ordered by similarity, ties toward the lower index (the reference's
  ``argsort`` leaves ties to the backend; docs/design.md fixes them so results are
  reproducible and independent of tiles and devices).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from platonic_jax import sharding
from platonic_jax.metrics import _checks, tiling

DEFAULT_TILE = tiling.DEFAULT_TILE
PRECISIONS = ("fp32", "bf16")
SELECTORS = ("auto", "host", "xla")
_LOGGED_PATHS: set = set()   # the top-k paths already logged in this process


def _log_path_once(path: str) -> None:
  """Logs the top-k path a sweep took, once per path and process: a silent fallback
  (say numba missing on CPU, or approx_max_k requested where the host kernel runs)
  shows in the log instead of only in the timings."""
  if path not in _LOGGED_PATHS:
    _LOGGED_PATHS.add(path)
    logging.info("k-NN block top-k: %s", path)


def _sort_desc(vals, idx, k):
  """Sorts each row by (value descending, index ascending) and keeps the first k.

  ``lax.sort`` is ascending and lexicographic over ``num_keys`` operands, so the value
  is negated and the index is the tie-breaking second key.
  """
  neg, idx = lax.sort((-vals, idx), dimension=1, num_keys=2)
  return -neg[:, :k], idx[:, :k]


def _merge_rows(vals, idx, start, new_v, new_i, k):
  """Merges candidates ``new_*: [t, kb]`` into the state rows ``start:start + t``.

  Every block a row sees holds higher column indices than all blocks it saw before
  (``tiling.block_pairs`` visits, per row tile, column tiles in increasing order), so ties
  toward the lower index are ties toward the old state: exactly ``top_k``'s positional
  tie rule on [old, new]. That is ~8x cheaper on CPU than a two-key ``lax.sort``.
  """
  t = new_v.shape[0]
  old_v = lax.dynamic_slice_in_dim(vals, start, t)
  old_i = lax.dynamic_slice_in_dim(idx, start, t)
  v, pos = lax.top_k(jnp.concatenate([old_v, new_v], 1), k)
  i = jnp.take_along_axis(jnp.concatenate([old_i, new_i], 1), pos, axis=1)
  return lax.dynamic_update_slice_in_dim(vals, v, start, 0), \
      lax.dynamic_update_slice_in_dim(idx, i, start, 0)


def _block_top(s, kb, approx):
  """The kb best columns of each row of the block ``s`` [t, t] -> (vals, cols) [t, kb]:
  exact ``lax.top_k``, or for ``approx`` (a recall target in (0, 1]) ``lax.approx_max_k``
  (TPU: a partial reduction that finds each true neighbour with probability ~approx;
  XLA lowers it to an exact sort elsewhere)."""
  if approx is None:
    return lax.top_k(s, kb)
  return lax.approx_max_k(s, kb, recall_target=approx)


def _device_knn(x, pi, pj, ok, *, t, k, bf16, host, approx=None):
  """One device's share: top-k over its block pairs, for all rows.

  x: [N, D] (replicated); pi, pj, ok: [1, P] block-pair rows / cols / validity.
  host: select with the numba kernel (``host_topk``, CPU devices) instead of ``top_k``.
  approx: None (exact) or the recall target of ``lax.approx_max_k`` (``_block_top``).
  Returns vals [1, N, k] f32 and idx [1, N, k] int32.
  """
  n = x.shape[0]
  kb = min(k, t)  # a block offers at most t candidates per row
  pi, pj, ok = pi[0], pj[0], ok[0]
  if bf16:
    xs, prec = x.astype(jnp.bfloat16), lax.Precision.DEFAULT
  else:
    # HIGHEST: true fp32 on TPU/GPU too (their default f32 dot rounds operands to bf16/tf32).
    xs, prec = x, lax.Precision.HIGHEST
  local = jnp.arange(t, dtype=jnp.int32)

  def body(p, carry):
    vals, idx = carry
    bi, bj, valid = pi[p], pj[p], ok[p]
    si, sj = tiling.tile_start(bi, t, n), tiling.tile_start(bj, t, n)
    xi = lax.dynamic_slice_in_dim(xs, si, t)
    xj = lax.dynamic_slice_in_dim(xs, sj, t)
    # [t, D] x [t, D]^T -> [t, t], accumulated in f32 (bf16 operands reach the matrix units).
    s = lax.dot_general(xi, xj, (((1,), (1,)), ((), ())), precision=prec,
                        preferred_element_type=jnp.float32)
    if host:
      return _host_update(s, vals, idx, si, sj, bi, bj, valid, t)
    r = si + local
    c = sj + local
    # Rows / columns of a ragged last tile that belong to the previous tile are masked.
    bad = (r[:, None] < bi * t) | (c[None, :] < bj * t) | (r[:, None] == c[None, :]) | ~valid
    s = jnp.where(bad, -jnp.inf, s)
    # Rows of tile I against the columns of tile J.
    v, j = _block_top(s, kb, approx)
    vals, idx = _merge_rows(vals, idx, si, v, j + sj, k)
    # Rows of tile J against the columns of tile I: the same block transposed (the Gram
    # matrix is symmetric). A diagonal block was fully counted by the row pass.
    v, j = _block_top(jnp.where(bi == bj, -jnp.inf, s.T), kb, approx)
    vals, idx = _merge_rows(vals, idx, sj, v, j + si, k)
    return vals, idx

  init = tiling.varying((jnp.full((n, k), -jnp.inf, jnp.float32), jnp.full((n, k), n, jnp.int32)))
  vals, idx = lax.fori_loop(0, pi.shape[0], body, init)
  return vals[None], idx[None]


def _host_update(s, vals, idx, si, sj, bi, bj, valid, t):
  """The block's update through ``host_topk``, in place on the state of all rows."""
  from platonic_jax.metrics import host_topk  # noqa: PLC0415 - numba only when used
  params = jnp.stack([si, sj, bi * t - si, bj * t - sj, (bi == bj).astype(jnp.int32),
                      valid.astype(jnp.int32)])
  return host_topk.update_block(s, vals, idx, params)


@functools.lru_cache(maxsize=None)
def _knn_program(mesh, t: int, k: int, bf16: bool, host: bool, approx: float | None = None):
  """The jitted programs for one (mesh, tile, k, precision, selector, recall); jit
  caches per input shape."""
  ndev = mesh.devices.size
  device_fn = jax.shard_map(
      functools.partial(_device_knn, t=t, k=k, bf16=bf16, host=host, approx=approx),
      mesh=mesh,
      in_specs=(P(), P(sharding.DATA), P(sharding.DATA), P(sharding.DATA)),
      out_specs=(P(sharding.DATA), P(sharding.DATA)))
  sweep = jax.jit(device_fn)  # -> [ndev, N, k] vals and idx, sharded over the devices

  @jax.jit
  def merge(vals, idx):  # the per-device candidates: [N, ndev * k] -> [N, k]
    n = vals.shape[1]
    vals = jnp.moveaxis(vals, 0, 1).reshape(n, ndev * k)
    idx = jnp.moveaxis(idx, 0, 1).reshape(n, ndev * k)
    return _sort_desc(vals, idx, k)

  def run(x, pi, pj, ok):
    vals, idx = sweep(x, pi, pj, ok)
    if ndev == 1:
      return vals[0], idx[0]
    # The merge gathers across devices. It is a separate program started once every
    # device has finished its sweep: a device done early would otherwise wait in the
    # gather on a thread of the XLA:CPU pool, and with the host top-k in the sweep the
    # busy devices can starve for that thread (seen as a 40 s rendezvous abort with 8
    # host devices on 2 cores).
    return merge(*jax.block_until_ready((vals, idx)))

  return run


def nearest_neighbors(x, k: int, *, tile: int | None = None, precision: str = "fp32",
                      mesh=None, select: str = "auto", approx_recall: float | None = None):
  """Exact k nearest neighbours by inner product, self excluded.

  Args:
    x: [N, D] features (numpy or jax; checked, cast to float32).
    k: neighbours per sample, 1 <= k < N.
    tile: rows per block; any value gives the same neighbours (only speed / memory
      change: memory is O(N * (k + tile)) plus one [tile, tile] block per device).
      None (default): sized from the device's memory (``tiling.device_tile``: 1024 on
      CPU; on GPU / TPU the largest power of two up to 8192 that fits half of
      ``memory_stats()['bytes_limit']``).
    precision: "fp32" (default) or "bf16": bf16 operands, f32 accumulation
      (``preferred_element_type=float32``); faster on matrix units, may swap near-ties.
    mesh: a 1-D ``data`` mesh (default ``sharding.data_mesh()``: every device).
    select: how each block's candidates enter the running top-k: "xla" (``lax.top_k``,
      cheap on GPU/TPU), "host" (the thresholded numba kernel of ``host_topk``, CPU
      devices only; ~10x cheaper than XLA:CPU's top-k) or "auto" (host on CPU when
      numba is installed, else xla). Never changes a result.
    approx_recall: None (default: exact) or a recall target in (0, 1] for an opt-in
      approximate block top-k, ``lax.approx_max_k``, on the "xla" selector. Only TPUs
      run it approximately (faster there, each true neighbour found with probability
      ~approx_recall, measured by ``benchmarks.device``); on CPU and GPU XLA lowers it
      to an exact sort, so the neighbours are exact. With select="auto" on CPU devices
      the exact host kernel is kept (the recall target has nothing to gain there).
  Returns:
    (sims [N, k] float32, idx [N, k] int32) as jax arrays, each row ordered by
    similarity descending, ties toward the lower index.
  """
  x = _checks.as_features(x, "x")
  n = x.shape[0]
  k = _checks.check_k(k, n)
  return _knn_checked(x, k, tile=tile, precision=precision, mesh=mesh, select=select,
                      approx_recall=approx_recall)


def check_recall(approx_recall) -> float | None:
  """``approx_recall`` as a float in (0, 1], or None; anything else a ValueError."""
  if approx_recall is None:
    return None
  if isinstance(approx_recall, bool) or not isinstance(approx_recall, (int, float, np.floating)) \
      or not 0 < float(approx_recall) <= 1:
    raise ValueError(f"approx_recall must be None (exact top-k) or a recall target in (0, 1], "
                     f"got {approx_recall!r}")
  return float(approx_recall)


def uses_host_topk(select: str, mesh) -> bool:
  """Whether the block top-k runs on the host kernel for ``select`` on ``mesh`` (see
  ``nearest_neighbors``); warns once when "auto" falls back to XLA."""
  if select not in SELECTORS:
    raise ValueError(f"select must be one of {SELECTORS}, got {select!r}")
  on_cpu = sharding.on_cpu(mesh)
  if select == "host" and not on_cpu:
    raise ValueError("select='host' runs the top-k on the host CPU and needs CPU devices; "
                     "use select='xla' (or 'auto') on GPU/TPU")
  if select == "xla" or not on_cpu:
    return False
  from platonic_jax.metrics import host_topk  # noqa: PLC0415 - numba only when used
  reason = host_topk.unavailable_reason()  # cached: the same for the whole process
  if reason and select == "host":
    raise ValueError(f"select='host' cannot run: {reason}; use select='xla'")
  if reason:
    logging.log_first_n(logging.WARNING,
                        "k-NN top-k falls back to XLA's (several times slower on CPU): %s",
                        1, reason)
  return reason is None


def _knn_checked(x: np.ndarray, k: int, *, tile, precision, mesh, select="auto",
                 approx_recall=None):
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  approx = check_recall(approx_recall)
  if approx is not None and select == "host":
    raise ValueError("approx_recall applies to the XLA top-k (lax.approx_max_k); the host "
                     "kernel (select='host') is exact: use select='xla' or drop approx_recall")
  mesh = tiling.default_mesh() if mesh is None else mesh
  n, d = x.shape
  tile = tiling.resolve_tile(tile, n, d, k, mesh, itemsize=2 if precision == "bf16" else 4)
  host = uses_host_topk(select, mesh)
  if host:
    approx = None   # the exact host kernel (select="auto" on CPU): nothing to approximate
  _log_path_once("numba host kernel (CPU)" if host else
                 f"lax.approx_max_k(recall_target={approx}) on {mesh.devices.flat[0].platform}"
                 if approx is not None else f"lax.top_k on {mesh.devices.flat[0].platform}")
  t = tiling.effective_tile(n, tile)
  pi, pj, ok = tiling.block_pairs(-(-n // t), mesh.devices.size)
  run = _knn_program(mesh, t, k, precision == "bf16", host, approx)
  return run(x, pi, pj, ok)


# ---------------------------------------------------------------------------------------
# Metrics on neighbour lists. Inputs: idx_a, idx_b [N, k] int32, rows ordered.
# Each metric has three forms: per-row counts (jitted), the metric value from two lists
# (what ``score`` reuses across layer pairs) and per-sample scores (the query bootstrap).


@jax.jit
def common_counts(idx_a, idx_b):
  """|N_A(i) ∩ N_B(i)| of each row pair, [N] int32. A row holds no duplicate, so after
  sorting the concatenated [N, 2k] lists every common neighbour is one adjacent equal pair."""
  both = jnp.sort(jnp.concatenate([idx_a, idx_b], 1), axis=1)
  return jnp.sum(both[:, 1:] == both[:, :-1], axis=1)


@jax.jit
def permuted_common_counts(idx_a, idx_b, perm):
  """common_counts of idx_a and the lists of b[perm], without building those lists.

  j ∈ N_A(i) is a neighbour of i in b[π] iff π_j ∈ N_B(π_i): compare π[idx_a] with
  idx_b[π] ([N, k, k] equalities; ~6x cheaper on CPU than relabelling and sorting)."""
  targets, lists = perm[idx_a], idx_b[perm]  # [N, k] each
  return jnp.sum(jnp.any(targets[:, :, None] == lists[:, None, :], axis=2), axis=1)


def mutual_null(idx_a, idx_b, perm):
  """mutual_knn of (a, b[perm]) from the lists of a and b (the permutation null)."""
  return jnp.mean(permuted_common_counts(idx_a, idx_b, perm) / idx_a.shape[1])


@jax.jit
def cycle_hits(idx_a, idx_b):
  """1[i in ∪_{j in N_B(i)} N_A(j)] of each row, [N] bool: B's neighbours, then theirs in A."""
  n = idx_a.shape[0]
  rows = jnp.arange(n, dtype=idx_a.dtype)

  def hit(args):  # one row: [k] neighbours in B -> [k, k] their neighbours in A
    i, nb = args
    return jnp.any(idx_a[nb] == i)

  # lax.map over rows (batched) keeps memory at O(batch * k^2), not O(N * k^2).
  return lax.map(hit, (rows, idx_b), batch_size=min(n, 4096))


@jax.jit
def lcs_lengths(idx_a, idx_b):
  """Length of the longest common subsequence of each row pair, [N] int32.

  Row-by-row DP, vectorised over samples and over the DP row: with
  c_j = dp[i-1][j-1] + 1 if x_i == y_j else dp[i-1][j], the classic recurrence
  dp[i][j] = max(c_j, dp[i][j-1]) is a running maximum of c (dp[i][0] = 0).
  """
  n, k = idx_a.shape

  def step(prev, xi):  # prev: [N, k + 1] = dp[i-1][0..k]; xi: [N]
    match = xi[:, None] == idx_b  # [N, k]
    c = jnp.where(match, prev[:, :-1] + 1, prev[:, 1:])
    row = lax.cummax(c, axis=1)
    return jnp.concatenate([jnp.zeros((n, 1), row.dtype), row], 1), None

  last, _ = lax.scan(step, jnp.zeros((n, k + 1), jnp.int32), idx_a.T)
  return last[:, -1]


@jax.jit
def levenshtein(idx_a, idx_b):
  """Levenshtein distance (unit insert / delete / substitute) of each row pair, [N].

  With c_0 = i and c_j = min(dp[i-1][j] + 1, dp[i-1][j-1] + [x_i != y_j]), the
  in-row recurrence dp[i][j] = min(c_j, dp[i][j-1] + 1) unrolls to
  dp[i][j] = min_{l <= j} (c_l + j - l) = j + cummin(c_l - l).
  """
  n, k = idx_a.shape
  cols = jnp.arange(k + 1, dtype=jnp.int32)

  def step(carry, xi):
    prev, i = carry  # prev: [N, k + 1] = dp[i-1][0..k]
    cost = (xi[:, None] != idx_b).astype(jnp.int32)  # [N, k]
    c = jnp.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
    c = jnp.concatenate([jnp.full((n, 1), i, jnp.int32), c], 1)
    row = cols + lax.cummin(c - cols, axis=1)
    return (row, i + 1), None

  init = (jnp.broadcast_to(cols, (n, k + 1)), jnp.int32(1))
  (last, _), _ = lax.scan(step, init, idx_a.T)
  return last[:, -1]


@jax.jit
def mutual_from_idx(idx_a, idx_b):
  """mean_i |N_A(i) ∩ N_B(i)| / k."""
  return jnp.mean(common_counts(idx_a, idx_b) / idx_a.shape[1])


@jax.jit
def cycle_from_idx(idx_a, idx_b):
  """mean_i 1[i in ∪_{j in N_B(i)} N_A(j)]."""
  return jnp.mean(cycle_hits(idx_a, idx_b).astype(jnp.float32))


def lcs_from_idx(idx_a, idx_b):
  """mean_i LCS(N_A(i), N_B(i)) / k."""
  return jnp.mean(lcs_lengths(idx_a, idx_b) / idx_a.shape[1])


def edit_from_idx(idx_a, idx_b):
  """1 - mean_i Levenshtein(N_A(i), N_B(i)) / k."""
  return 1.0 - jnp.mean(levenshtein(idx_a, idx_b) / idx_a.shape[1])


# Per-sample scores [N] float64 whose mean is the metric (the same programs).
def mutual_per_sample(idx_a, idx_b) -> np.ndarray:
  return np.asarray(common_counts(idx_a, idx_b)) / np.shape(idx_a)[1]


def cycle_per_sample(idx_a, idx_b) -> np.ndarray:
  return np.asarray(cycle_hits(idx_a, idx_b), np.float64)


def lcs_per_sample(idx_a, idx_b) -> np.ndarray:
  return np.asarray(lcs_lengths(idx_a, idx_b)) / np.shape(idx_a)[1]


def edit_per_sample(idx_a, idx_b) -> np.ndarray:
  return 1.0 - np.asarray(levenshtein(idx_a, idx_b)) / np.shape(idx_a)[1]


def _neighbour_metric(combine, a, b, k, tile, precision, mesh, approx_recall=None):
  a, b = _checks.pair(a, b)
  k = _checks.check_k(k, a.shape[0])
  opts = dict(tile=tile, precision=precision, mesh=mesh, approx_recall=approx_recall)
  _, ia = _knn_checked(a, k, **opts)
  _, ib = _knn_checked(b, k, **opts)
  return float(combine(ia, ib))


def mutual_knn(a, b, k: int = 10, *, tile: int | None = None, precision: str = "fp32",
               mesh=None, approx_recall: float | None = None) -> float:
  """Mutual k-NN alignment: mean_i |N_A(i) ∩ N_B(i)| / k, in [0, 1].

  a: [N, Da], b: [N, Db] (row i of both = sample i); neighbours by inner product on the
  features as given (``score`` l2-normalises first: cosine), self excluded, ties toward
  the lower index. ``tile``/``precision``/``mesh``/``approx_recall`` as in
  ``nearest_neighbors``.
  Same value as the reference ``AlignmentMetrics.mutual_knn`` (which builds two N x N
  masks) whenever no two neighbours tie.
  """
  return _neighbour_metric(mutual_from_idx, a, b, k, tile, precision, mesh, approx_recall)


def cycle_knn(a, b, k: int = 10, *, tile: int | None = None, precision: str = "fp32",
              mesh=None, approx_recall: float | None = None) -> float:
  """Cycle k-NN: fraction of samples i found again among the A-neighbours of their
  B-neighbours, mean_i 1[i ∈ ∪_{j ∈ N_B(i)} N_A(j)], in [0, 1]. Not symmetric in (a, b).

  Same as the reference ``cycle_knn`` (``knn_A[knn_B]`` then "any equals i").
  """
  return _neighbour_metric(cycle_from_idx, a, b, k, tile, precision, mesh, approx_recall)


def lcs_knn(a, b, k: int = 10, *, tile: int | None = None, precision: str = "fp32",
            mesh=None, approx_recall: float | None = None) -> float:
  """Longest common subsequence of the ordered neighbour lists, mean_i LCS / k, in [0, 1].

  Deliberate difference: the reference ``lcs_knn`` returns the mean LCS *length*
  (in [0, k]) as a tensor; here it is divided by k (the paper's table: "normalized by
  the sequence length") so it is comparable across k. Multiply by k for the reference.
  """
  return _neighbour_metric(lcs_from_idx, a, b, k, tile, precision, mesh, approx_recall)


def edit_distance_knn(a, b, k: int = 10, *, tile: int | None = None,
                      precision: str = "fp32", mesh=None,
                      approx_recall: float | None = None) -> float:
  """1 - mean_i Levenshtein(N_A(i), N_B(i)) / k, in [0, 1] (1: identical ordered lists).

  Levenshtein with unit costs, as the reference's ``torchaudio.functional.edit_distance``;
  computed for all rows at once on device instead of a Python loop per row.
  """
  return _neighbour_metric(edit_from_idx, a, b, k, tile, precision, mesh, approx_recall)
