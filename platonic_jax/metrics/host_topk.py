"""Running top-k of one Gram block on the host CPU, for the k-NN sweep on CPU devices.

Why hand-written: XLA:CPU lowers ``lax.top_k`` to a single-threaded runtime call that
partially sorts every row through an index array, about 3-4 ns per similarity — as
much as the [tile, D] x [D, tile] matmul costs per entry at D = 768, and the symmetric
sweep needs it twice per block (rows, then the block transposed). Neither XLA nor a
library offers a thresholded top-k update, so this numba kernel does it: it keeps the
running k-th best similarity of every row as a threshold, compares a whole block row
against it in one vectorised pass (0.05 ns per entry), and walks only the 8-entry
words that hold an entry above it. Late in the sweep almost nothing passes: over the
16k sweep a [1000, 1000] block costs ~0.7 ms for both directions instead of ~8 ms.
On GPU/TPU ``lax.top_k`` is cheap and the XLA path is used.

Called once per block pair from the jitted sweep through a small primitive lowered to a
host callback (``update_block``; why not ``jax.pure_callback``: see there); numba
releases the GIL, so with several CPU devices the blocks of different devices update in
parallel.
"""

from __future__ import annotations

import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import mlir

try:
  import numba
except ImportError:  # a platform without numba wheels: the XLA top-k path still works
  numba = None

AVAILABLE = numba is not None


def _jit(fn):
  return numba.njit(nogil=True, cache=True)(fn) if AVAILABLE else fn


@_jit
def _insert(vals, idx, r, v, j):
  """Inserts (v, j) into the sorted row ``r`` of ``vals``/``idx`` [t, k], dropping the last.

  Rows are ordered by value descending, ties toward the lower index. Every candidate
  has a higher index than all entries already in the row (the sweep visits columns in
  increasing order), so it goes after entries of equal value: shift only smaller ones.
  """
  p = vals.shape[1] - 1
  while p > 0 and vals[r, p - 1] < v:
    vals[r, p] = vals[r, p - 1]
    idx[r, p] = idx[r, p - 1]
    p -= 1
  vals[r, p] = v
  idx[r, p] = j


@_jit
def _update(s, vals, idx, si, sj, lo_i, lo_j, diag):
  """Updates the running top-k of the rows of both tiles of the block s = X_I X_J^T.

  s: [t, t] float32; vals/idx: [2t, k] — rows 0:t are the state of rows si + 0..t-1
  (tile I), rows t:2t that of rows sj + 0..t-1 (tile J). Block rows r < lo_i and columns
  c < lo_j belong to the previous tile (a ragged last tile is read as a full window) and
  are skipped; so is the diagonal (self). On a diagonal block (``diag``) the rows pass
  alone covers it. Updates ``vals``/``idx`` in place.
  """
  t = s.shape[0]
  nw = (t + 7) // 8
  hit = np.zeros(nw * 8, np.uint8)
  words = hit.view(np.uint64)  # 8 flags per word: skip a word of no hits in one compare
  # Rows of tile I against the columns of tile J.
  for r in range(lo_i, t):
    tau = vals[r, -1]
    row = s[r]
    for c in range(t):  # vectorised: one compare per entry, no branch
      hit[c] = row[c] > tau
    for w in range(nw):
      if words[w] == 0:
        continue
      for c in range(w * 8, min(w * 8 + 8, t)):
        # Strictly greater: an equal value has the higher index and loses the tie.
        if hit[c] and c >= lo_j and row[c] > tau and si + r != sj + c:
          _insert(vals, idx, r, row[c], sj + c)
          tau = vals[r, -1]
  if diag:
    return
  # Rows of tile J against the rows of tile I (the block's columns), walking s by rows
  # so the compares stay contiguous; tau holds the threshold of every column.
  tau_c = vals[t:, -1].copy()
  tau_c[:lo_j] = np.inf  # columns of the previous tile take nothing
  for r in range(lo_i, t):
    row = s[r]
    for c in range(t):
      hit[c] = row[c] > tau_c[c]
    for w in range(nw):
      if words[w] == 0:
        continue
      for c in range(w * 8, min(w * 8 + 8, t)):
        if hit[c] and row[c] > tau_c[c]:
          _insert(vals, idx, t + c, row[c], si + r)
          tau_c[c] = vals[t + c, -1]


def _callback(s, vals, idx, params):
  """Host side of ``update_block``: numpy in (read-only views of the device buffers),
  numpy out."""
  si, sj, lo_i, lo_j, diag, valid = (int(p) for p in params)
  vals, idx = np.array(vals), np.array(idx)  # writable copies of the [2t, k] state rows
  if valid:
    _update(s, vals, idx, si, sj, lo_i, lo_j, bool(diag))
  return vals, idx


# A primitive of our own rather than ``jax.pure_callback``: pure_callback first
# ``device_put``s every argument onto CPU device 0 and reads it back, and with several
# CPU devices running their sweeps at once that transfer waits for a pool thread the
# blocked callbacks hold (a deadlock, seen with 2 host devices). ``emit_python_callback``
# (the lowering pure_callback and jax.experimental.sparse use) hands the callback the
# XLA buffers as numpy arrays directly.
_update_p = jex_core.Primitive("platonic_host_topk_update")
_update_p.multiple_results = True


@_update_p.def_abstract_eval
def _abstract_eval(s, vals, idx, params):
  del s, params
  # The updated state has the type (and, inside shard_map, the per-device variance) of
  # the state it replaces.
  return vals, idx


def _lowering(ctx, s, vals, idx, params):
  result, _, _ = mlir.emit_python_callback(
      ctx, _callback, None, [s, vals, idx, params], ctx.avals_in, ctx.avals_out,
      has_side_effect=False, returns_token=False)
  return result


mlir.register_lowering(_update_p, _lowering, platform="cpu")


def update_block(s, vals, idx, params):
  """The jittable form: s [t, t] f32, vals [2t, k] f32, idx [2t, k] int32 (tile I's rows
  then tile J's), params int32 [6] = (si, sj, lo_i, lo_j, diag, valid). Returns the
  updated (vals, idx). Lowers on CPU only (the kernel runs on the host)."""
  return _update_p.bind(s, vals, idx, params)
