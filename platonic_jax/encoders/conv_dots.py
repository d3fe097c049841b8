"""2-D convolutions as bf16 matrix products, for XLA:CPU on CPUs with AMX tiles.

Why hand-written: XLA:CPU has no bf16 convolution path -- a bf16 convolution runs at its
fp32 speed (Eigen / YNNPACK), while its bf16 *dots* run on the AMX tiles of an Intel
Xeon (Sapphire Rapids and later) at ~4x its fp32 GEMM (1000-1150 vs 260-300 GFLOP/s on
the 2-core Xeon of docs/encoders.md). So on such a CPU ResNet's convolutions pay as
dots, as oneDNN's AMX convolutions do for PyTorch. Lowering a convolution to a GEMM is
the classic im2col (Chellapilla, Puri & Simard 2006, "High Performance Convolutional
Neural Networks for Document Processing"); gathering all k x k taps of every pixel costs
a k^2-times copy of the activations, which on XLA:CPU's concatenation (~4 GB/s here)
took longer than the dot it feeds. Hence the hybrid for stride-1 convolutions:

- im2col along the width only: the k width-shifted views of the padded input side by side,
  [B, H + 2p, W, k*C] (a k-times copy, not k^2);
- one dot with the filter's rows side by side, [k*C, k*D] -> [B, H + 2p, W, k, D] float32;
- the k kernel rows summed as height-shifted slices (the shift-and-add of the "kn2row"
  family, Vasudevan, Anderson & Gregg 2017, "Parallel Multi Channel Convolution using
  General Matrix Multiplication"), one fused elementwise pass.

Strided convolutions (ResNet's downsampling 3x3s) use full im2col, whose copy is 1/s^2 as
large; 1x1 convolutions are a dot of the (strided) input. Measured on that Xeon, ResNet-18
bf16 at batch 16 in micro-batches of 2 (``resnet.cpu_variant``): direct convolutions
51 img/s, full im2col 61-72, this hybrid 102 (PyTorch fp32 59). Convolutions with fewer
than ``MIN_CHANNELS`` inputs (the RGB stem) stay direct: their dots are too thin to gain
(3.6 vs 3.2 ms for the 7x7 stem of two images).

Numerics: bf16 operands, float32 accumulation and result -- the same products as a bf16
convolution summed in another order (fp32: equal to a direct convolution to ~1e-6,
tested against float64).

Shapes: x [B, H, W, C] (NHWC), kernel [k, k, C, D] (HWIO), stride s, zero padding p on
every side (as ``torch.nn.Conv2d``) -> [B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, D]
float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from platonic_jax.encoders import common

MIN_CHANNELS = 16   # fewer input channels (the RGB stem): a direct convolution instead


def _dot(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
  """[..., K] x [K, N] -> [..., N] float32 (``dtype`` operands)."""
  return jnp.einsum("...k,kn->...n", x, w.astype(dtype), precision=common.precision(dtype),
                    preferred_element_type=jnp.float32)


def _patches(xp: jax.Array, k: int, stride: int, ho: int, wo: int) -> jax.Array:
  """im2col of the padded input: [B, Hp, Wp, C] -> [B, ho, wo, k*k*C], taps (dy, dx) in
  the kernel's row-major order."""
  b, _, _, c = xp.shape
  taps = [lax.slice(xp, (0, dy, dx, 0),
                    (b, dy + stride * (ho - 1) + 1, dx + stride * (wo - 1) + 1, c),
                    (1, stride, stride, 1))
          for dy in range(k) for dx in range(k)]
  return jnp.concatenate(taps, axis=-1)


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int, dtype) -> jax.Array:
  """``common.conv(x, kernel, stride, padding, dtype)`` computed as dots (module
  docstring); x [B, H, W, C], kernel [k, k, C, D] -> [B, Ho, Wo, D] float32."""
  k, _, c, d = kernel.shape
  if c < MIN_CHANNELS:
    return common.conv(x, kernel, stride, padding, dtype)
  x = x.astype(dtype)
  b, h, w, _ = x.shape
  ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
  if k == 1 and padding == 0:
    return _dot(x[:, ::stride, ::stride], kernel[0, 0], dtype)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  if stride != 1:
    return _dot(_patches(xp, k, stride, ho, wo), kernel.reshape(k * k * c, d), dtype)
  # Width taps side by side: rows[b, y, x, (dx, c)] = xp[b, y, x + dx, c].
  rows = jnp.concatenate([xp[:, :, dx:dx + wo] for dx in range(k)], axis=-1)
  # The kernel's rows side by side: [(dx, c), (dy, d)], so one dot gives every row's
  # partial sums at once: z[b, y, x, dy] = sum_{dx, c} rows[b, y, x, (dx, c)] w[dy, dx, c].
  w_rows = kernel.transpose(1, 2, 0, 3).reshape(k * c, k * d)
  z = _dot(rows, w_rows, dtype).reshape(b, h + 2 * padding, wo, k, d)
  return sum(z[:, dy:dy + ho, :, dy] for dy in range(k))
