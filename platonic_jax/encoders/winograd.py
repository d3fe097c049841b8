"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3), for XLA:CPU.

Why hand-written: XLA:CPU runs ResNet's 3x3 convolutions as direct convolutions
(Eigen / YNNPACK) at ~150-185 GFLOP/s on the project's CPU, while oneDNN (PyTorch)
uses Winograd for them. F(2x2, 3x3) computes each 2x2 output tile from a 4x4 input
tile with 16 multiplies per (input, output) channel pair instead of 36: 2.25x fewer
flops, spent in 16 independent [tiles, C] x [C, D] matmuls that XLA runs at its GEMM
speed. The transforms around them are additions over the activations, so it pays
where channels are many and the image is small (ResNet's 14x14 / 7x7 stages: 20 ms ->
11-13 ms per conv at batch 16); at 56x56 x 64 channels the transforms cost more than
they save. Used on CPU meshes only (``resnet.cpu_variant``); the filters are
transformed once at load (``transform_params``).

Numerics (Lavin & Gray 2016): the transforms use only 0, +-1 and +-1/2, so fp32 results
differ from a direct convolution by ~1e-6 relative (tested against float64).

Shapes: x [B, H, W, C] (NHWC), kernel [3, 3, C, D] (HWIO), zero padding 1 (same output
size as the input, like ``torch.nn.Conv2d(3, padding=1)``) -> [B, H, W, D] float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from platonic_jax.encoders import common

# F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A for a 4x4 input tile d and a 3x3 filter g.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(coefs, terms):
  """sum_i coefs[i] * terms[i] for coefficients in {0, 1, -1}, as adds (no multiplies)."""
  out = None
  for c, t in zip(coefs, terms):
    if c == 0:
      continue
    t = t if c == 1 else -t
    out = t if out is None else out + t
  return out


def transform_filter(kernel) -> np.ndarray:
  """[3, 3, C, D] -> U = G g G^T as [16, C, D] float32 (row-major over the 4x4 tile),
  computed once in float64 when the checkpoint is loaded. (Inside the forward pass it
  would cost ~8 ms per 512 x 512 filter on XLA:CPU, as much as Winograd saves.)"""
  g = np.asarray(kernel, np.float64)
  if g.ndim != 4 or g.shape[:2] != (3, 3):
    raise ValueError(f"Winograd F(2x2, 3x3) needs a [3, 3, C, D] kernel, got {g.shape}")
  u = np.einsum("au,uvcd,bv->abcd", _G, g, _G)
  return u.reshape(16, *g.shape[2:]).astype(np.float32)


def transform_params(params, winograd_shapes):
  """The kernels of ``params`` that ``winograd_shapes`` (the parameter shapes of the
  module with Winograd enabled: ``jax.eval_shape(module.init, ...)``) wants as
  [16, C, D] are transformed from [3, 3, C, D]; every other leaf is kept as it is."""
  def leaf(x, want):
    if tuple(want.shape) == tuple(np.shape(x)):
      return x
    return transform_filter(x)
  return jax.tree.map(leaf, params, winograd_shapes)


def conv3x3(x: jax.Array, u: jax.Array, dtype) -> jax.Array:
  """``common.conv(x, kernel, 1, 1, dtype)`` with u = ``transform_filter(kernel)``.

  x: [B, H, W, C]; u: [16, C, D] -> [B, H, W, D] float32 (any H, W: ragged tiles are
  padded with zeros and cropped).
  """
  b, h, w, c = x.shape
  th, tw = -(-h // 2), -(-w // 2)  # 2x2 output tiles per column / row
  x = x.astype(jnp.float32)
  xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
  # Input tile (i, j) covers padded rows 2i..2i+3: as row pairs, pair i + u // 2 with
  # parity u % 2. d[r][s]: [B, th, tw, C], element (r, s) of every tile at once.
  pairs = xp.reshape(b, th + 1, 2, tw + 1, 2, c)
  d = [[pairs[:, r // 2:r // 2 + th, r % 2, s // 2:s // 2 + tw, s % 2] for s in range(4)]
       for r in range(4)]
  t = [[_combine(_BT[a], [d[r][s] for r in range(4)]) for s in range(4)] for a in range(4)]
  v = jnp.stack([_combine(_BT[e], t[a]) for a in range(4) for e in range(4)])
  v = v.reshape(16, b * th * tw, c)
  # 16 independent [tiles, C] x [C, D] products, f32 accumulation (bf16 operands when
  # dtype is bf16, as every other dot of the encoders).
  m = lax.dot_general(v.astype(dtype), u.astype(dtype), (((2,), (1,)), ((0,), (0,))),
                      precision=common.precision(dtype), preferred_element_type=jnp.float32)
  m = m.reshape(4, 4, b, th, tw, -1)
  s = [[_combine(_AT[i], [m[a, e] for a in range(4)]) for e in range(4)] for i in range(2)]
  # y[:, i, p, j, q] = output pixel (2i + p, 2j + q): the 2x2 tiles back in place.
  y = jnp.stack([jnp.stack([_combine(_AT[q], s[p]) for q in range(2)], 3) for p in range(2)], 2)
  return y.reshape(b, 2 * th, 2 * tw, -1)[:, :h, :w]
