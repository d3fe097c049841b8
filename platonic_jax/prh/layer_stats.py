"""What each metric keeps of one model's layers, computed once per model and reused by
every pair it is scored in (``prh.pair_scores``).

The release (``measure_alignment.compute_score``) measures every layer pair from
scratch: for L_a x L_b pairs it builds 2 L_a L_b Gram matrices and k-NN argsorts. Here
each layer's structure is computed once per model — the k-NN lists, the centred Gram,
the SVCCA directions — and a pair of models is scored from those, all layer pairs at
once:

| metric | kept per layer | a layer pair costs |
| --- | --- | --- |
| mutual / cycle / lcs / edit k-NN | ordered k-NN lists [N, k] | O(N k) – O(N k²) on the lists |
| cka (linear) | centred Gram K_c = H K H [N, N], ‖K_c‖_F | one N² dot: ⟨K_c, L_c⟩ |
| unbiased_cka | the same Gram, its diagonal | that dot + an N dot (below) |
| cknna | k-NN lists with similarities, sim(K, K) | O(N k²) masked sums |
| svcca | top-c directions U [N, c] (orthonormal) | U_aᵀ U_b [c, c] and its SVD |

The Gram of column-centred features is H K H, so its rows sum to zero: for unbiased
HSIC (translation invariant, hence computed on centred features, as
``metrics.unbiased_cka``) K̃ = K_c − diag, K̃1 = −diag K_c and 1ᵀK̃1 = −tr K_c, and the
whole estimator is ⟨K_c, L_c⟩ plus sums of the two diagonals.

Features enter already clamped (``metrics.prepare``) and l2-normalised (cosine
kernels), [L, N, D] or a list of [N, D_l]. Checks are those of the metrics (k < N,
N >= 4 for the unbiased estimators, non-constant layers, CKNNA's all-tied lists); a
failing layer raises a ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from platonic_jax.metrics import _checks, kernels, knn

NEIGHBOUR = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn")
GRAM = ("cka", "unbiased_cka")
SUPPORTED = NEIGHBOUR + GRAM + ("cknna", "svcca")  # the release's eight metrics
_HI = lax.Precision.HIGHEST
GRAM_BYTES = 1 << 28  # layers per step of the Gram stack: ~256 MB of [N, D] operands


@dataclasses.dataclass
class ModelStats:
  """One model's per-layer structures (device arrays unless noted; None when no
  configured metric needs them).

  idx, sims: [L, N, k] int32 / float32 k-NN lists by cosine (ties toward the lower
    index, as ``metrics.nearest_neighbors``). cknna_self: [L] float64 sim(K, K).
  gram: [L, N, N] float32 centred Gram; gram_norm: [L] float64 ‖K_c‖_F; diag: [L, N]
    float32 diag K_c; hsic_self: [L] float64 HSIC_u(K, K).
  svcca_u: [L, N, c] float32 orthonormal top-c directions of the z-scored layer;
    svcca_rank: [L] int (how many of the c directions are above the rank threshold).
  """
  n: int
  num_layers: int
  k: int
  idx: jax.Array | None = None
  sims: jax.Array | None = None
  cknna_self: np.ndarray | None = None
  gram: jax.Array | None = None
  gram_norm: np.ndarray | None = None
  diag: jax.Array | None = None
  hsic_self: np.ndarray | None = None
  svcca_u: jax.Array | None = None
  svcca_rank: np.ndarray | None = None

  def nbytes(self) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in (self.idx, self.sims, self.gram,
                                                        self.diag, self.svcca_u)
               if x is not None)


def _layer_error(i: int, e: Exception) -> ValueError:
  return ValueError(f"layer {i}: {e}")


def _positive(values: np.ndarray, metric: str, what: str) -> None:
  bad = np.flatnonzero(~(values > 0))
  if bad.size:
    raise ValueError(f"layer {int(bad[0])}: {metric} is undefined: its {what} is "
                     f"{values[bad[0]]:.3g} (must be > 0); the layer is (nearly) constant or "
                     "N is too small for the unbiased estimator")


def _neighbours(layers, k: int, with_sims: bool, tile: int):
  """[L, N, k + 1] lists (k + 1 for CKNNA's tie check), one tiled pass per layer."""
  vals, idx = [], []
  for i, x in enumerate(layers):
    try:
      v, j = knn.nearest_neighbors(x, k + 1 if with_sims else k, tile=tile)
    except ValueError as e:
      raise _layer_error(i, e) from None
    vals.append(v)
    idx.append(j)
  return jnp.stack(vals), jnp.stack(idx)


@jax.jit
def _centred_grams(x):
  """[B, N, D] -> [B, N, N] Grams of the column-centred layers, their diagonals."""
  xc = x - jnp.mean(x, axis=1, keepdims=True)
  g = jnp.einsum("bnd,bmd->bnm", xc, xc, precision=_HI)  # [B, N, D] x [B, N, D] -> [B, N, N]
  return g, jnp.diagonal(g, axis1=1, axis2=2)


def _gram_stack(layers):
  grams, diags = [], []
  n = layers[0].shape[0]
  widths = [x.shape[1] for x in layers]
  i = 0
  while i < len(layers):  # same-width runs in steps of ~GRAM_BYTES
    step = max(1, GRAM_BYTES // max(1, 4 * n * widths[i]))
    j = i + 1
    while j < len(layers) and j - i < step and widths[j] == widths[i]:
      j += 1
    g, d = _centred_grams(jnp.asarray(np.stack(layers[i:j])))
    grams.append(g)
    diags.append(d)
    i = j
  return jnp.concatenate(grams), jnp.concatenate(diags)


def hsic_u(tr, sum_k, sum_l, cross, n):
  """Song et al. (2012) eq. 5 from its four sums (float64 numpy, broadcasting)."""
  return kernels._hsic_u(tr, sum_k, sum_l, cross, n)


def _svcca_directions(x: np.ndarray, c: int):
  """(U [N, c] float32 orthonormal, rank) of the z-scored x: the top-c left singular
  vectors, from the smaller of the [N, N] and [D, D] Grams (float64 eigenproblem).
  The same subspace as ``kernels.svcca_directions`` (SVCCA depends on it alone)."""
  import scipy.linalg  # noqa: PLC0415
  from platonic_jax.metrics import kernel_nulls  # noqa: PLC0415
  z = kernel_nulls.zscored(x)
  n, d = z.shape
  zj = jnp.asarray(z)
  sample_space = n <= d
  g = np.asarray(jnp.einsum("nd,md->nm", zj, zj, precision=_HI) if sample_space
                 else jnp.einsum("nd,ne->de", zj, zj, precision=_HI), np.float64)
  m = g.shape[0]
  with kernels._one_blas_thread():
    w, v = scipy.linalg.eigh(g, driver="evr", subset_by_index=[m - c, m - 1])
  w, v = w[::-1], v[:, ::-1]
  rank = int(np.sum(w > 1e-6 * max(w[0], 1e-30)))
  if sample_space:
    u = v
  else:  # U = Z V S^-1: [N, D] x [D, c] -> [N, c]
    u = (z.astype(np.float64) @ v) / np.sqrt(np.maximum(w, 1e-300))[None, :]
  return u.astype(np.float32), rank


def compute(layers: Sequence[np.ndarray], metrics: Sequence[str], *, k: int = 10,
            cca_dim: int = 10, tile: int = knn.DEFAULT_TILE) -> ModelStats:
  """The structures ``metrics`` need of ``layers`` (clamped, l2-normalised float32
  [L, N, D] or a list of [N, D_l])."""
  unknown = sorted(set(metrics) - set(SUPPORTED))
  if unknown:
    raise ValueError(f"no batched form for {unknown}; batched metrics: {SUPPORTED}")
  layers = [np.asarray(x, np.float32) for x in layers]
  n = layers[0].shape[0]
  st = ModelStats(n=n, num_layers=len(layers), k=int(k))
  kernel_metrics = set(metrics) & {"cka", "unbiased_cka", "cknna", "svcca"}
  for i, x in enumerate(layers):
    for m in sorted(kernel_metrics):
      try:
        _checks.check_spread(x, f"layer {i}", m)
      except ValueError as e:
        raise _layer_error(i, e) from None
  if {"unbiased_cka", "cknna"} & set(metrics):
    _checks.check_min_n(n, 4, "unbiased_cka / cknna")
  needs_knn = bool(set(metrics) & (set(NEIGHBOUR) | {"cknna"}))
  if needs_knn:
    _checks.check_k(k, n, minimum=2 if "cknna" in metrics else 1)
    vals, idx = _neighbours(layers, k, "cknna" in metrics, tile)
    st.idx = idx[..., :k]
    if "cknna" in metrics:
      kk = min(k + 1, n - 1)
      tied = np.asarray(jnp.all(vals[:, :, 0] == vals[:, :, kk - 1], axis=1))
      if tied.any():
        i = int(np.flatnonzero(tied)[0])
        raise ValueError(f"layer {i}: cknna is undefined: every sample's {kk} most similar "
                         "samples are equally similar (no neighbourhood structure; check "
                         "the encoder or layer)")
      st.sims = vals[..., :k]
      ones = jnp.ones(st.idx.shape[1:], bool)
      selfs = jax.vmap(lambda i_, v_: jnp.stack(kernels._sparse_hsic_sums(i_, ones, v_, v_)))(
          st.idx, st.sims)
      st.cknna_self = hsic_u(*np.asarray(selfs, np.float64).T, n)
      _positive(st.cknna_self, "cknna", "sim(K, K)")
  if set(metrics) & set(GRAM):
    st.gram, st.diag = _gram_stack(layers)
    dd = np.asarray(jnp.einsum("lnm,lnm->l", st.gram, st.gram, precision=_HI), np.float64)
    st.gram_norm = np.sqrt(dd)
    d = np.asarray(st.diag, np.float64)
    st.hsic_self = hsic_u(dd - np.sum(d * d, 1), -d.sum(1), -d.sum(1), np.sum(d * d, 1), n)
    _positive(st.hsic_self, "unbiased_cka", "HSIC_u(K, K)")
  if "svcca" in metrics:
    c = min(int(cca_dim), n - 1)
    us, ranks = zip(*(_svcca_directions(x, min(c, x.shape[1])) for x in layers))
    width = min(u.shape[1] for u in us)
    st.svcca_u = jnp.asarray(np.stack([u[:, :width] for u in us]))
    st.svcca_rank = np.asarray(ranks)
  return st
