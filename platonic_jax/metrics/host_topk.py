"""Running top-k of one Gram block on the host CPU, for the k-NN sweep on CPU devices.

Why hand-written: XLA:CPU lowers ``lax.top_k`` to a single-threaded runtime call that
partially sorts every row through an index array, about 3-4 ns per similarity — as
much as the [tile, D] x [D, tile] matmul costs per entry at D = 768, and the symmetric
sweep needs it twice per block (rows, then the block transposed). Neither XLA nor a
library offers a thresholded top-k update, so this numba kernel does it: it keeps the
running k-th best similarity of every row as a threshold, compares a whole block row
against its own and every column's threshold in one vectorised pass, and walks only
the 8-entry words that hold an entry above one. Late in the sweep almost nothing
passes: a [1000, 1000] block then costs ~0.14 ms for both directions (~4 ms early in
the sweep, when nearly everything is a candidate) against ~8 ms for ``lax.top_k``.
On GPU/TPU ``lax.top_k`` is cheap and the XLA path is used.

The kernel is an XLA FFI custom call (``update_block``): a numba ``cfunc`` with the
typed-FFI handler signature, registered with ``jax.ffi.register_ffi_target`` and
called with ``jax.ffi.ffi_call``. It reads the block straight from XLA's buffer and
updates the [N, k] state in place (the state is aliased input -> output). Why not a
Python host callback (``jax.pure_callback`` / ``emit_python_callback``, used before):
those copy every operand into a fresh numpy array and take the GIL — 0.28 ms per 4 MB
block plus ~0.4 ms of machinery, as much as the kernel itself, and pure_callback
deadlocked with several CPU devices (it ``device_put``s operands to device 0).
"""

from __future__ import annotations

import functools

import numpy as np

try:
  import numba
  from numba import types
  from numba.extending import intrinsic
except ImportError:  # a platform without numba wheels: the XLA top-k path still works
  numba = None

AVAILABLE = numba is not None
TARGET = "platonic_jax_topk_update"


def _jit(fn):
  return numba.njit(nogil=True, cache=True)(fn) if AVAILABLE else fn


@_jit
def _insert(vals, idx, r, v, j):
  """Inserts (v, j) into the sorted row ``r`` of ``vals``/``idx`` [N, k], dropping the last.

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

  s: [t, t] float32, rows si + 0..t-1 (tile I) against rows sj + 0..t-1 (tile J);
  vals/idx: [N, k], the state of every row, updated in place. Block rows r < lo_i and
  columns c < lo_j belong to the previous tile (a ragged last tile is read as a full
  window) and are skipped; so is the diagonal (self). On a diagonal block (``diag``)
  the rows pass alone covers it.

  One sweep over s does both directions: block row r offers its columns to row si + r
  (bit 1 of ``hit``) and each of its entries to row sj + c (bit 2: the transposed
  block). The two touch disjoint state rows (tile J's rows that overlap tile I in a
  ragged window are columns c < lo_j, which take nothing), and each row still meets
  its candidates in increasing index order, which ``_insert``'s tie rule relies on.
  """
  t = s.shape[0]
  nw = (t + 7) // 8
  hit = np.zeros(nw * 8, np.uint8)
  words = hit.view(np.uint64)  # 8 flags per word: skip a word of no hits in one compare
  # tau_c: the threshold of every column's row (tile J); +inf = takes nothing.
  tau_c = np.full(t, np.inf, np.float32)
  if not diag:
    tau_c[lo_j:] = vals[sj + lo_j:sj + t, -1]
  for r in range(lo_i, t):
    g = si + r
    tau = vals[g, -1]
    row = s[r]
    for c in range(t):  # vectorised: two compares per entry, no branch
      hit[c] = (row[c] > tau) | ((row[c] > tau_c[c]) << 1)
    for w in range(nw):
      if words[w] == 0:
        continue
      for c in range(w * 8, min(w * 8 + 8, t)):
        h = hit[c]
        # Strictly greater: an equal value has the higher index and loses the tie.
        if h & 1 and c >= lo_j and row[c] > tau and g != sj + c:
          _insert(vals, idx, g, row[c], sj + c)
          tau = vals[g, -1]
        if h & 2 and row[c] > tau_c[c]:
          _insert(vals, idx, sj + c, row[c], g)
          tau_c[c] = vals[sj + c, -1]


# --------------------------------------------------------------------- the FFI handler
# Offsets into the C structs of xla/ffi/api/c_api.h on a 64-bit host (every field is
# 8 bytes wide or padded to 8): XLA_FFI_CallFrame {struct_size, extension_start, api,
# ctx, stage, args {struct_size, extension_start, size, types, args}, rets, attrs,
# future}; XLA_FFI_Buffer {struct_size, extension_start, dtype, data, rank, dims};
# XLA_FFI_Metadata_Extension {base {struct_size, type, next}, metadata*};
# XLA_FFI_Metadata {struct_size, api_version {struct_size, extension_start, major, minor},
# traits}.
_FRAME_EXTENSION, _FRAME_NARGS, _FRAME_ARG_TYPES, _FRAME_ARGS = 8, 56, 64, 72
_BUFFER_DTYPE, _BUFFER_DATA, _BUFFER_RANK, _BUFFER_DIMS = 16, 24, 32, 40
_ARG_IS_BUFFER, _F32, _S32 = 1, 11, 4  # XLA_FFI_ArgType_BUFFER, XLA_FFI_DataType_F32 / _S32
_EXTENSION_TYPE, _EXTENSION_METADATA = 8, 24
_METADATA_MAJOR, _METADATA_MINOR, _METADATA_TRAITS = 24, 28, 32
_EXTENSION_IS_METADATA = 1
_API_VERSION = (0, 1)  # the handler ABI used here: the oldest that XLA still accepts

if AVAILABLE:

  @intrinsic
  def _voidptr(typingctx, addr):
    """An address (uintp) as a ``void*`` that ``numba.carray`` can view."""
    def codegen(context, builder, signature, args):
      return builder.inttoptr(args[0], context.get_value_type(types.voidptr))
    return types.voidptr(types.uintp), codegen

  @numba.njit(inline="always")
  def _word(addr):
    return numba.carray(_voidptr(addr), (1,), np.uint64)[0]

  @numba.njit(inline="always")
  def _int32_at(addr):
    return numba.carray(_voidptr(addr), (1,), np.int32)

  @numba.njit
  def _frame_as_expected(frame):
    """Four buffer operands of the dtypes and ranks ``update_block`` passes."""
    if _word(frame + _FRAME_NARGS) != 4:
      return False
    types_, args = _word(frame + _FRAME_ARG_TYPES), _word(frame + _FRAME_ARGS)
    for i, (dtype, rank) in enumerate(((_F32, 2), (_F32, 2), (_S32, 2), (_S32, 1))):
      buf = _word(args + 8 * i)
      if (_int32_at(types_ + 4 * i)[0] != _ARG_IS_BUFFER
          or _int32_at(buf + _BUFFER_DTYPE)[0] != dtype or _word(buf + _BUFFER_RANK) != rank):
        return False
    return True


def _handler(frame):
  """``XLA_FFI_Error* handler(XLA_FFI_CallFrame*)`` (NULL = success), both as addresses.

  Operands: s [t, t] f32, vals [N, k] f32, idx [N, k] int32, params [6] int32 =
  (si, sj, lo_i, lo_j, diag, valid); results: vals, idx (aliasing the operands).
  """
  ext = _word(frame + _FRAME_EXTENSION)
  if ext != 0 and _int32_at(ext + _EXTENSION_TYPE)[0] == _EXTENSION_IS_METADATA:
    # XLA's registration-time query of the handler's API version and traits.
    metadata = _word(ext + _EXTENSION_METADATA)
    _int32_at(metadata + _METADATA_MAJOR)[0] = _API_VERSION[0]
    _int32_at(metadata + _METADATA_MINOR)[0] = _API_VERSION[1]
    _int32_at(metadata + _METADATA_TRAITS)[0] = 0
    return 0
  if not _frame_as_expected(frame):
    # Not the call frame this handler was written for (another XLA FFI ABI): touch
    # nothing. The state then comes back unchanged, which the probe in
    # ``unavailable_reason`` detects before any real use.
    return 0
  args = _word(frame + _FRAME_ARGS)
  s_buf, v_buf, i_buf, p_buf = _word(args), _word(args + 8), _word(args + 16), _word(args + 24)
  s_dims, v_dims = _word(s_buf + _BUFFER_DIMS), _word(v_buf + _BUFFER_DIMS)
  t = _word(s_dims)
  n, k = _word(v_dims), _word(v_dims + 8)
  s = numba.carray(_voidptr(_word(s_buf + _BUFFER_DATA)), (t, t), np.float32)
  # The results alias vals and idx: XLA hands over buffers it may overwrite (it copies
  # an operand first where the caller still needs it), so the update is in place.
  vals = numba.carray(_voidptr(_word(v_buf + _BUFFER_DATA)), (n, k), np.float32)
  idx = numba.carray(_voidptr(_word(i_buf + _BUFFER_DATA)), (n, k), np.int32)
  p = numba.carray(_voidptr(_word(p_buf + _BUFFER_DATA)), (6,), np.int32)
  if p[5]:
    _update(s, vals, idx, p[0], p[1], p[2], p[3], p[4] != 0)
  return 0


@functools.lru_cache(maxsize=None)
def _register():
  """Compiles the handler (cached on disk by numba) and registers it with XLA, once."""
  import jax
  handler = numba.cfunc(types.uintp(types.uintp), nopython=True, cache=True)(_handler)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler.address), platform="cpu")
  return handler  # kept alive: XLA holds only its address


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
  """None when the kernel can run here, else why not (numba missing, or this jaxlib
  refused the handler, e.g. a future FFI API version): callers fall back to XLA."""
  if not AVAILABLE:
    return "numba is not installed (pip install numba)"
  try:
    _register()
    if not _probe():
      return "the numba FFI handler gave a wrong top-k on this jaxlib (a changed FFI ABI?)"
  except Exception as e:  # noqa: BLE001 - any refusal means: use the XLA path
    return f"XLA did not accept the numba FFI handler ({type(e).__name__}: {e})"
  return None


def _probe() -> bool:
  """One small block update through XLA, checked against numpy (~0.1 s, once)."""
  import jax
  rng = np.random.default_rng(0)
  s = rng.standard_normal((4, 4)).astype(np.float32)
  vals, idx = np.full((8, 2), -np.inf, np.float32), np.full((8, 2), 8, np.int32)
  with jax.default_device(jax.devices("cpu")[0]):
    got_v, got_i = jax.jit(update_block)(s, vals, idx, np.array([0, 4, 0, 0, 0, 1], np.int32))
  # Row r < 4 takes s[r]'s two best columns (ids 4 + c); row 4 + c takes s[:, c]'s rows.
  want_i = np.concatenate([4 + np.argsort(-s, 1, kind="stable")[:, :2],
                           np.argsort(-s.T, 1, kind="stable")[:, :2]]).astype(np.int32)
  return bool(np.array_equal(np.asarray(got_i), want_i) and np.array_equal(
      np.asarray(got_v), np.concatenate([np.sort(s, 1)[:, ::-1][:, :2],
                                         np.sort(s.T, 1)[:, ::-1][:, :2]])))


def update_block(s, vals, idx, params):
  """The jittable form: s [t, t] f32, vals [N, k] f32, idx [N, k] int32 (the running
  state of every row), params int32 [6] = (si, sj, lo_i, lo_j, diag, valid). Returns
  the updated (vals, idx), computed in place. CPU devices only (the kernel runs on the
  host); inside ``shard_map`` the results keep the state's per-device type."""
  import jax
  _register()
  call = jax.ffi.ffi_call(TARGET, (jax.typeof(vals), jax.typeof(idx)),
                          input_output_aliases={1: 0, 2: 1})
  return call(s, vals, idx, params)
