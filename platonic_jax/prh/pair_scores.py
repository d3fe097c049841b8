"""Every layer pair of two models at once, and its permutation nulls.

``PairScorer(a, b)`` takes two models' ``layer_stats.ModelStats`` (a = the vision model,
b = the language model: the release's ``measure_alignment`` calls
``compute_score(vision, language)``, so ``metric(a=vision layer, b=language layer)``,
which matters for the asymmetric cycle k-NN and for which of two tied layer pairs is
"best") and returns, per metric:

- ``values(metric)``: the [La, Lb] matrix of every layer pair, float64 — what
  ``metrics.score`` computes pair by pair (and the release's ``compute_score``), from one
  batched program per metric instead of La x Lb calls;
- ``null(metric, perms)``: [K, La, Lb] float32, the same matrix with the rows of b
  permuted by perms[k] in every layer at once (Gröger et al. 2026, Algorithm 2: the
  same permutation for every layer), what ``metrics.calibrate_layers`` computes pair by
  pair; the nulls are dealt to the devices in fixed batches (``metrics.nulls.map_nulls``),
  so the device count never changes a value.

Layer counts are padded to a multiple of ``LAYER_BUCKET`` (copies of the last layer,
dropped from every output) so the sweep's ~10 distinct depths compile a few programs,
not one per pair of depths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from platonic_jax.metrics import kernels, nulls, registry
from platonic_jax.prh import layer_stats
from platonic_jax.prh.layer_stats import ModelStats

LAYER_BUCKET = 8
_HI = lax.Precision.HIGHEST


def _pad(x, multiple: int = LAYER_BUCKET):
  """x [L, ...] -> [L', ...], L' the next multiple, padded with copies of the last layer."""
  pad = (-x.shape[0]) % multiple
  if not pad:
    return x
  return jnp.concatenate([x, jnp.broadcast_to(x[-1:], (pad,) + x.shape[1:])])


def _over_pairs(fn, xs_a, xs_b):
  """fn(a_i, b_j) for every (i, j): lax.map over a's layers, vmap over b's ->
  [La, Lb, ...] (memory: one row of pairs at a time)."""
  return lax.map(lambda a: jax.vmap(lambda b: fn(a, b))(xs_b), xs_a)


# ----- observed values -------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("score",))
def _neighbour_values(idx_a, idx_b, *, score):
  return _over_pairs(score, idx_a, idx_b)


def _rows_dot(x, y):
  """[A, M] x [B, M] -> [A, B], fp32 products. The Grams enter flattened: an einsum over
  both N axes ran 4x slower on XLA:CPU (a transpose per call)."""
  return lax.dot_general(x, y, (((1,), (1,)), ((), ())), precision=_HI,
                         preferred_element_type=jnp.float32)


@jax.jit
def _gram_dots(gram_a, gram_b, diag_a, diag_b):
  # <K_c, L_c>_F of every pair: [La, N*N] x [Lb, N*N] -> [La, Lb]; the diagonals' dots.
  flat = lambda g: g.reshape(g.shape[0], -1)  # noqa: E731
  return _rows_dot(flat(gram_a), flat(gram_b)), _rows_dot(diag_a, diag_b)


def _cknna_sums(ia, va, ib, vb):
  mask, lv = kernels._masked_values(ia, va, ib, vb, kernels.cknna_batch(*ia.shape))
  return jnp.stack(kernels._sparse_hsic_sums(ia, mask, va, lv))


@jax.jit
def _cknna_values(idx_a, sims_a, idx_b, sims_b):
  return _over_pairs(lambda a, b: _cknna_sums(a[0], a[1], b[0], b[1]), (idx_a, sims_a),
                     (idx_b, sims_b))  # [La, Lb, 4]


def _svcca_of(ua, ub):
  # [N, c]^T x [N, c] -> [c, c]: cosines of the principal angles = its singular values.
  g = jnp.einsum("nc,nd->cd", ua, ub, precision=_HI)
  return jnp.mean(jnp.clip(jnp.linalg.svd(g, compute_uv=False), 0.0, 1.0))


@functools.partial(jax.jit, static_argnames=("c",))
def _svcca_values(u_a, u_b, *, c):
  return _over_pairs(lambda a, b: _svcca_of(a[:, :c], b[:, :c]), u_a, u_b)


# ----- nulls (perms [B, N] -> [B, La, Lb, ...]) --------------------------------------------

def _neighbour_null_batch(perms, idx_a, idx_b, *, score, direct):
  def one(p):
    if direct is not None:
      return _over_pairs(lambda ia, ib: direct(ia, ib, p), idx_a, idx_b)
    rel = jax.vmap(lambda ib: nulls.relabel(ib, p))(idx_b)  # b[π]'s lists, every layer
    return _over_pairs(score, idx_a, rel)
  return lax.map(one, perms)


def _gram_null_batch(perms, gram_a, gram_b, diag_a, diag_b):
  def one(p):
    gb = gram_b[:, p][:, :, p]  # the centred Grams of b[π]: P L_c Pᵀ
    return jnp.stack(_gram_dots(gram_a, gb, diag_a, diag_b[:, p]), -1)
  return lax.map(one, perms)


def _cknna_null_batch(perms, idx_a, sims_a, idx_b, sims_b):
  def one(p):
    rel = jax.vmap(lambda ib: nulls.relabel(ib, p))(idx_b)
    return _over_pairs(lambda a, b: _cknna_sums(a[0], a[1], b[0], b[1]), (idx_a, sims_a),
                       (rel, sims_b[:, p]))
  return lax.map(one, perms)


def _svcca_null_batch(perms, u_a, u_b, *, c):
  return lax.map(lambda p: _over_pairs(lambda a, b: _svcca_of(a[:, :c], b[:, :c]), u_a,
                                       u_b[:, p]), perms)


class PairScorer:
  """The layer-pair matrices of one (vision, language) pair of models (module docstring).

  a, b: ``ModelStats`` of the two models (the same N, k and metrics). Results shared by
  two metrics (the Gram dots of cka and unbiased_cka) are computed once.
  """

  def __init__(self, a: ModelStats, b: ModelStats, *, mesh=None):
    if a.n != b.n:
      raise ValueError(f"the two models have different numbers of samples ({a.n}, {b.n})")
    self.a, self.b, self.n = a, b, a.n
    self.la, self.lb = a.num_layers, b.num_layers
    self.mesh = mesh
    self._cache: dict = {}

  # -- helpers ------------------------------------------------------------------------------
  def _crop(self, x, lead: int = 0) -> np.ndarray:
    """Drops the padded layers: axes ``lead`` and ``lead + 1`` are (a layer, b layer)."""
    return np.asarray(x)[(slice(None),) * lead + (slice(0, self.la), slice(0, self.lb))]

  def _svcca_width(self) -> int:
    a, b = self.a, self.b
    return int(min(a.svcca_u.shape[-1], b.svcca_u.shape[-1], a.svcca_rank.min(),
                   b.svcca_rank.min()))

  def _svcca_uniform(self) -> bool:
    """Whether every layer pair keeps the same number of directions (else per pair)."""
    c = self._svcca_width()
    return c == min(self.a.svcca_u.shape[-1], self.b.svcca_u.shape[-1])

  # -- observed ------------------------------------------------------------------------------
  def _gram(self):
    if "gram" not in self._cache:
      a, b = self.a, self.b
      dot, dd = _gram_dots(_pad(a.gram), _pad(b.gram), _pad(a.diag), _pad(b.diag))
      self._cache["gram"] = (self._crop(dot).astype(np.float64),
                             self._crop(dd).astype(np.float64))
    return self._cache["gram"]

  def _gram_finish(self, metric: str, dot, dd) -> np.ndarray:
    a, b = self.a, self.b
    if metric == "cka":
      return dot / (a.gram_norm[:, None] * b.gram_norm[None, :])
    sa = np.asarray(a.diag, np.float64).sum(1)[:, None]
    sb = np.asarray(b.diag, np.float64).sum(1)[None, :]
    hsic = layer_stats.hsic_u(dot - dd, -sa, -sb, dd, self.n)
    return hsic / np.sqrt(a.hsic_self[:, None] * b.hsic_self[None, :])

  def _cknna_finish(self, sums) -> np.ndarray:
    s = np.asarray(sums, np.float64)
    kl = layer_stats.hsic_u(s[..., 0], s[..., 1], s[..., 2], s[..., 3], self.n)
    return kl / np.sqrt(self.a.cknna_self[:, None] * self.b.cknna_self[None, :])

  def values(self, metric: str) -> np.ndarray:
    """[La, Lb] float64: ``metric`` of every (a layer, b layer) pair."""
    a, b = self.a, self.b
    if metric in layer_stats.NEIGHBOUR:
      out = _neighbour_values(_pad(a.idx), _pad(b.idx),
                              score=registry.get(metric).neighbour_score)
      return self._crop(out).astype(np.float64)
    if metric in layer_stats.GRAM:
      return self._gram_finish(metric, *self._gram())
    if metric == "cknna":
      sums = _cknna_values(_pad(a.idx), _pad(a.sims), _pad(b.idx), _pad(b.sims))
      return self._cknna_finish(self._crop(sums))
    if metric == "svcca":
      if self._svcca_uniform():
        out = _svcca_values(_pad(a.svcca_u), _pad(b.svcca_u), c=self._svcca_width())
        return self._crop(out).astype(np.float64)
      return self._svcca_per_pair()
    raise ValueError(f"no batched form for {metric!r}")

  def _svcca_per_pair(self, perms=None) -> np.ndarray:
    """SVCCA where some layer has fewer directions than the others (rank-capped): each
    pair keeps min(c, rank a_i, rank b_j) directions, as ``svcca(cap_rank=True)``."""
    a, b = self.a, self.b
    width = min(a.svcca_u.shape[-1], b.svcca_u.shape[-1])
    ua, ub = a.svcca_u, b.svcca_u
    shape = (self.la, self.lb) if perms is None else (len(perms), self.la, self.lb)
    out = np.empty(shape, np.float64)
    for i in range(self.la):
      for j in range(self.lb):
        c = int(min(width, a.svcca_rank[i], b.svcca_rank[j]))
        if perms is None:
          out[i, j] = float(_svcca_of(ua[i, :, :c], ub[j, :, :c]))
        else:
          out[:, i, j] = np.asarray(jax.vmap(
              lambda p, i=i, j=j, c=c: _svcca_of(ua[i, :, :c], ub[j][p, :c]))(jnp.asarray(perms)))
    return out

  # -- nulls ---------------------------------------------------------------------------------
  def null(self, metric: str, perms: np.ndarray) -> np.ndarray:
    """[K, La, Lb] float32: ``values(metric)`` with b's rows permuted by each row of
    perms [K, N] (int), the same permutation in every layer."""
    a, b = self.a, self.b
    run = lambda fn, consts, batch=1: nulls.map_nulls(fn, perms, consts, batch=batch,  # noqa
                                                      mesh=self.mesh)
    if metric in layer_stats.NEIGHBOUR:
      rec = registry.get(metric)
      fn = nulls.batch_program(_neighbour_null_batch, score=rec.neighbour_score,
                               direct=rec.neighbour_null)
      return self._crop(run(fn, (_pad(a.idx), _pad(b.idx))), 1).astype(np.float32)
    if metric in layer_stats.GRAM:  # cka and unbiased_cka share the permuted dots
      cached = self._cache.get("gram_null")
      if cached is None or cached[0] is not perms:
        out = run(_gram_null_batch, (_pad(a.gram), _pad(b.gram), _pad(a.diag), _pad(b.diag)))
        cached = self._cache["gram_null"] = (perms, self._crop(out, 1).astype(np.float64))
      out = cached[1]
      return self._gram_finish(metric, out[..., 0], out[..., 1]).astype(np.float32)
    if metric == "cknna":
      sums = np.asarray(run(_cknna_null_batch, (_pad(a.idx), _pad(a.sims), _pad(b.idx),
                                                _pad(b.sims))))
      return self._cknna_finish(self._crop(sums, 1)).astype(np.float32)
    if metric == "svcca":
      if not self._svcca_uniform():
        return self._svcca_per_pair(perms).astype(np.float32)
      fn = nulls.batch_program(_svcca_null_batch, c=self._svcca_width())
      return self._crop(run(fn, (_pad(a.svcca_u), _pad(b.svcca_u))), 1).astype(np.float32)
    raise ValueError(f"no batched form for {metric!r}")
