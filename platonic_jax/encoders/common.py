"""Building blocks shared by the encoder modules: mixed-precision dense / conv, activations.

Precision policy (docs/design.md, pitfalls): with ``dtype=jnp.bfloat16`` operands are cast to
bf16 and every dot / convolution accumulates and returns float32
(``preferred_element_type=jnp.float32``), which is what reaches the bf16 matrix units of
XLA:CPU (AMX) and GPUs/TPUs; layer norms, softmax and residual sums stay float32. With
``dtype=jnp.float32`` dots run at ``Precision.HIGHEST`` so GPUs/TPUs do not silently drop
to TF32 / bf16 passes: fp32 features then match PyTorch fp32 to ~1e-6.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def compute_dtype(dtype, what: str) -> jnp.dtype:
  """``dtype`` as the matmul operand dtype of an encoder; ValueError unless float32 or
  bfloat16 (``what`` names the model in the message)."""
  dtype = jnp.dtype(dtype)
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"{what} compute dtype must be float32 or bfloat16, got {dtype}")
  return dtype


def precision(dtype) -> lax.Precision:
  return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, dtype) -> jax.Array:
  """``x @ kernel + bias`` in ``dtype`` operands with a float32 result.

  x: [..., Din]; kernel: [Din, Dout]; bias: [Dout] or None -> [..., Dout] float32.
  """
  y = jnp.einsum("...i,io->...o", x.astype(dtype), kernel.astype(dtype),  # [..., I] x [I, O] -> [..., O]
                 precision=precision(dtype), preferred_element_type=jnp.float32)
  return y if bias is None else y + bias.astype(jnp.float32)


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int, dtype) -> jax.Array:
  """2-D convolution, NHWC x HWIO -> NHWC float32, symmetric zero padding like torch.nn.Conv2d.

  (``padding="SAME"`` pads asymmetrically for stride 2 and would not match PyTorch.)
  """
  return lax.conv_general_dilated(
      x.astype(dtype), kernel.astype(dtype), window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=precision(dtype), preferred_element_type=jnp.float32)


def largest_divisor(n: int, cap: int) -> int:
  """The largest divisor of ``n`` that is at most ``cap`` (>= 1)."""
  return max(d for d in range(1, cap + 1) if n % d == 0)


def map_chunks(fn: Callable, inputs: tuple, size: int):
  """``fn(*chunk)`` over consecutive chunks of ``size`` rows of every array of ``inputs``,
  one after another (``lax.map``); the outputs (a pytree of [size, ...] arrays) are joined
  back into [B, ...]. B = ``inputs[0].shape[0]`` must be a multiple of ``size``."""
  b = inputs[0].shape[0]
  chunks = tuple(x.reshape(b // size, size, *x.shape[1:]) for x in inputs)
  out = jax.lax.map(lambda xs: fn(*xs), chunks)
  return jax.tree.map(lambda y: y.reshape(b, *y.shape[2:]), out)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """torch.nn.LayerNorm over the last axis, in float32 (two-pass variance, biased)."""
  x = x.astype(jnp.float32)
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * lax.rsqrt(var + eps) * scale + bias


def pool_tokens(h: jax.Array, mask: jax.Array, pool: str) -> jax.Array:
  """Pools token features ``h [B, T, D]`` over real tokens (``mask [B, T]``) -> [B, D].

  "mean" / "avg" (the Platonic release's name): masked mean; a row without any real
  token (batch padding) gives zeros, not NaN. "last": the feature of the last position
  whose mask is 1 (right padding: length - 1; left padding: T - 1, the release's
  ``pool="none"``).
  """
  m = mask.astype(jnp.float32)
  if pool in ("mean", "avg"):
    total = jnp.sum(h * m[:, :, None], axis=1)  # [B, D]
    return total / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)
  if pool == "last":
    pos = jnp.arange(h.shape[1])
    last = jnp.max(jnp.where(mask > 0, pos[None, :], 0), axis=1)  # [B]
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"unknown pool {pool!r}; choose 'mean' / 'avg' or 'last'")


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),       # torch nn.GELU(): erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),    # tanh form (GPT-2)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str | None) -> Callable[[jax.Array], jax.Array]:
  """The HF ``hidden_act`` name as a function (None = identity)."""
  if name is None:
    return lambda x: x
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}") from None
