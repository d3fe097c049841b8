"""ASIF: a shared space with no training, through relative representations over anchors.

Norelli, Fumero, Maiorca, Moschella, Rodolà, Locatello, "ASIF: Coupled Data Turns Unimodal
Models to Multimodal Without Training", NeurIPS 2023. The anchors are the training pairs
(x_a, y_a), a = 1..N (with every caption a positive: one anchor per caption, its image
repeated). A sample of modality m is represented by its cosine similarities to that
modality's anchors, sparsified and sharpened:

    r(x)_a = <x̂, x̂_a>^p  if a is among the k anchors most similar to x,  else 0

so an image and a caption become vectors over the *same* anchors, and are compared by
the cosine of r(x) and r(y) (as every space here: the evaluators l2-normalise). The
paper uses k = 800, p = 8 with 1.6M anchors (``eval.asif_k``, ``eval.asif_p``; k is
capped at N). Powers are applied to the signed similarity (top-k similarities are
positive in practice).

The top-k is the tiled k-NN's scheme (``metrics.knn``) for queries against a separate
anchor set: anchors are visited in [tile]-row blocks, a running top-k per query is kept
(memory O(M · (k + tile)), never M × N similarities), queries are split over the
devices of the ``data`` mesh. 145k anchors (Flickr30k's 29k images × 5 captions) cost
one pass of 2·M·N·D FLOP.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from platonic_jax import sharding
from platonic_jax.metrics import tiling

DEFAULT_TILE = 4096


@dataclasses.dataclass(frozen=True)
class AsifParams:
  """``eval.asif_k``, ``eval.asif_p``; ``anchors``: "chosen" (one pair per image) or
  "all_captions" (every caption pair, ``loss.positives``)."""
  kind: str
  pair: tuple[str, str]
  k: int
  p: float
  anchors: str = "chosen"


def _merge(vals, idx, new_v, new_i, k):
  """Running top-k merge; old entries (lower anchor indices) win ties (``top_k`` keeps
  the earlier position)."""
  v, pos = lax.top_k(jnp.concatenate([vals, new_v], 1), k)
  return v, jnp.take_along_axis(jnp.concatenate([idx, new_i], 1), pos, axis=1)


def _device_topk(q, anchors, *, t, k):
  """One device's queries q [m, D] against every anchor [N, D] -> ([m, k], [m, k])."""
  n = anchors.shape[0]
  n_tiles = -(-n // t)
  local = jnp.arange(t, dtype=jnp.int32)
  kb = min(k, t)

  def body(b, carry):
    vals, idx = carry
    start = tiling.tile_start(b, t, n)
    block = lax.dynamic_slice_in_dim(anchors, start, t)
    s = lax.dot_general(q, block, (((1,), (1,)), ((), ())),  # [m, D] x [t, D] -> [m, t]
                        precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    cols = start + local
    s = jnp.where(cols[None, :] < b * t, -jnp.inf, s)  # the ragged last window's overlap
    v, j = lax.top_k(s, kb)
    return _merge(vals, idx, v, j + start, k)

  m = q.shape[0]
  init = tiling.varying((jnp.full((m, k), -jnp.inf, jnp.float32),
                         jnp.full((m, k), n, jnp.int32)))
  return lax.fori_loop(0, n_tiles, body, init)


@functools.lru_cache(maxsize=None)
def _program(mesh, t: int, k: int):
  fn = jax.shard_map(functools.partial(_device_topk, t=t, k=k), mesh=mesh,
                     in_specs=(P(sharding.DATA), P()),
                     out_specs=(P(sharding.DATA), P(sharding.DATA)))
  return jax.jit(fn)


def top_anchors(queries: np.ndarray, anchors: np.ndarray, k: int, *,
                tile: int = DEFAULT_TILE, mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """The k largest inner products of each query with the anchors.

  queries: [M, D], anchors: [N, D] (float32; l2-normalise both for cosines), 1 <= k <= N.
  Returns (sims [M, k] float32, idx [M, k] int32), each row by similarity descending,
  ties toward the lower anchor index; any ``tile`` gives the same result.
  """
  q = np.ascontiguousarray(queries, np.float32)
  a = np.ascontiguousarray(anchors, np.float32)
  n = a.shape[0]
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}] (the anchors), got {k}")
  mesh = tiling.default_mesh() if mesh is None else mesh
  ndev = mesh.devices.size
  m = q.shape[0]
  pad = (-m) % ndev
  if pad:
    q = np.concatenate([q, np.zeros((pad, q.shape[1]), np.float32)])
  t = tiling.effective_tile(n, tile)
  sims, idx = _program(mesh, t, int(k))(q, a)
  return np.asarray(sims)[:m], np.asarray(idx)[:m]


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class AsifSpace:
  """The ASIF space of one anchor set: ``embed(modality, x) -> [M, N]`` relative
  representations (dense float32, one column per anchor)."""

  def __init__(self, name: str, pair, anchors: dict[str, np.ndarray], k: int, p: float):
    self.name, self.modalities = name, tuple(pair)
    self._anchors = {m: _unit(a) for m, a in anchors.items()}
    self.num_anchors = next(iter(self._anchors.values())).shape[0]
    self.k, self.p = min(int(k), self.num_anchors), float(p)

  def relative(self, modality: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [M, k] = similarity^p, anchor indices [M, k]): the sparse form."""
    sims, idx = top_anchors(_unit(x), self._anchors[modality], self.k)
    return np.power(sims, self.p).astype(np.float32), idx

  def embed(self, modality: str, x: np.ndarray) -> np.ndarray:
    vals, idx = self.relative(modality, x)
    out = np.zeros((vals.shape[0], self.num_anchors), np.float32)
    np.put_along_axis(out, idx.astype(np.int64), vals, axis=1)
    return out

  def joint(self, embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same rows in a basis of their joint span: every inner product between any two
    rows is kept (so every metric on them is), in min(rows, anchors) dimensions instead
    of N — the kernel metrics' [d, d] Grams would not fit at N = 145k."""
    return isometric(embeddings)


def isometric(embeddings: dict[str, np.ndarray], rtol: float = 1e-10) -> dict[str, np.ndarray]:
  """{side: [M_side, N]} -> {side: [M_side, r]} with F Fᵀ = E Eᵀ over all stacked rows
  (eigendecomposition of the float64 Gram; directions below ``rtol`` of the largest
  eigenvalue dropped: rounding only)."""
  names = list(embeddings)
  stack = np.concatenate([np.asarray(embeddings[m], np.float64) for m in names])
  gram = stack @ stack.T  # [R, N] x [N, R] -> [R, R]
  w, u = np.linalg.eigh(gram)
  keep = w > rtol * max(w.max(), 1e-300)
  f = (u[:, keep] * np.sqrt(w[keep])).astype(np.float32)
  out, start = {}, 0
  for m in names:
    rows = embeddings[m].shape[0]
    out[m] = f[start:start + rows]
    start += rows
  return out
