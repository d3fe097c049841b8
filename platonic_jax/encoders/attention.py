"""Which attention kernel an encoder runs, chosen from the devices it runs on.

Three implementations compute the same softmax attention (scores in float32, softmax in
float32):

- ``"einsum"``: the hand-written form of each module (two einsums around a float32
  softmax). Kept for CPUs, where it is what the encoders were tuned with (the ViT's
  groups of samples side by side, ``vit.attention``), and for what
  ``jax.nn.dot_product_attention`` does not express (Gemma-2's logit soft-capping,
  GPT-2's ``reorder_and_upcast_attn`` under bf16).
- ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``: one op XLA can
  fuse on TPUs and GPUs; float32 runs its dots at HIGHEST precision (no TF32 passes).
- ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, cuDNN's flash
  attention on NVIDIA GPUs: memory linear in the sequence length and, in bf16, several
  times the throughput of the unfused form. bf16 / fp16 only, head dims up to 256.

``choose`` maps (platform, dtype, what the model's attention needs) to one of them;
``resolve`` applies a user's choice (``encoders.load(..., attention=...)``) or "auto".
Each module calls ``record`` when it traces its attention, so the log says once per
model and path which kernel ran -- including a cuDNN call that was refused and fell
back (``dot_product_attention``), which is logged as a warning and recorded as such.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

IMPLS = ("einsum", "xla", "cudnn")
CHOICES = ("auto",) + IMPLS
# cuDNN's flash attention (jax._src.cudnn.fused_attention_stablehlo): bf16 / fp16
# operands, head dims multiple of 8 up to 256 (256 needs Hopper or later; older GPUs
# refuse it at trace time and the call falls back, logged).
CUDNN_MAX_HEAD_DIM = 256

_taken: dict[str, str] = {}    # model family -> the implementation its last trace used
_logged: set[tuple[str, str]] = set()


def platform(mesh: jax.sharding.Mesh) -> str:
  """The platform ("cpu", "gpu", "tpu") of every device of ``mesh``; ValueError when
  they differ (one compiled program cannot mix them)."""
  kinds = {d.platform for d in mesh.devices.flat}
  if len(kinds) != 1:
    raise ValueError(f"the mesh mixes device platforms {sorted(kinds)}; encode on one kind")
  return kinds.pop()


def choose(platform_name: str, dtype: Any, *, head_dim: int, einsum_only: bool = False) -> str:
  """The attention implementation for a model on ``platform_name`` in ``dtype``.

  CPU: "einsum" (the tuned form). GPU: "cudnn" for bf16 / fp16 operands and head dims
  that cuDNN's flash kernel takes, else "xla". TPU and others: "xla". ``einsum_only``:
  the model's attention has a term ``jax.nn.dot_product_attention`` lacks.
  """
  if einsum_only or platform_name == "cpu":
    return "einsum"
  low = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if (platform_name in ("gpu", "cuda", "rocm") and low and head_dim % 8 == 0
      and head_dim <= CUDNN_MAX_HEAD_DIM):
    return "cudnn"
  return "xla"


def resolve(requested: str, platform_name: str, dtype: Any, *, head_dim: int,
            einsum_only: bool = False, what: str = "encoder") -> str:
  """``requested`` ("auto" or one of ``IMPLS``) as an implementation; ValueError for an
  unknown name or a forced path the model cannot compute."""
  if requested not in CHOICES:
    raise ValueError(f"attention={requested!r}: allowed {CHOICES}")
  if requested == "auto":
    return choose(platform_name, dtype, head_dim=head_dim, einsum_only=einsum_only)
  if einsum_only and requested != "einsum":
    raise ValueError(f"{what}: attention={requested!r} cannot compute this model's attention "
                     "(a term jax.nn.dot_product_attention lacks); use 'einsum' or 'auto'")
  return requested


def record(model: str, impl: str, note: str = "") -> None:
  """Notes that ``model``'s attention traced with ``impl``; logs it once per pair."""
  _taken[model] = impl
  if (model, impl) not in _logged:
    _logged.add((model, impl))
    logging.info("%s attention: %s%s", model, impl, f" ({note})" if note else "")


def taken(model: str) -> str | None:
  """The implementation ``model``'s last traced attention used (None: never traced)."""
  return _taken.get(model)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, dtype: Any,
                          impl: str, model: str, mask: jax.Array | None = None,
                          is_causal: bool = False, lengths: jax.Array | None = None,
                          window: int | None = None) -> jax.Array:
  """``jax.nn.dot_product_attention`` in the encoders' precision policy, float32 out.

  q: [B, T, N, hd]; k, v: [B, S, K, hd] (N a multiple of K); mask: [B, 1 or N, T, S] bool
  (True = may attend); lengths: [B] int32 real tokens (right padding; the cuDNN way to
  mask padding); window: keys with q - k < window (causal). float32 runs the dots at
  HIGHEST precision, bf16 takes bf16 operands (float32 scores and softmax). A cuDNN call
  that cuDNN refuses for these shapes / this GPU is logged as a warning and computed by
  the XLA form with the same arguments (recorded as "xla"). -> [B, T, N, hd] float32.
  """
  if impl not in ("xla", "cudnn"):
    raise ValueError(f"dot_product_attention implements 'xla' and 'cudnn', not {impl!r}")
  f32 = jnp.dtype(dtype) == jnp.float32
  cast = jnp.float32 if f32 else dtype
  kw = dict(scale=scale, mask=mask, is_causal=is_causal, query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            local_window_size=(window - 1, 0) if window else None)

  def run(implementation):
    args = (q.astype(cast), k.astype(cast), v.astype(cast))
    if f32:
      with jax.default_matmul_precision("highest"):
        return jax.nn.dot_product_attention(*args, implementation=implementation, **kw)
    return jax.nn.dot_product_attention(*args, implementation=implementation, **kw)

  if impl == "cudnn":
    try:
      out = run("cudnn")
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as e:
      # cuDNN rejects some shapes / GPUs / versions when the call is traced.
      logging.warning("%s attention: cuDNN unavailable (%s); using the XLA form", model, e)
      record(model, "xla", "cuDNN refused")
      return run("xla").astype(jnp.float32)
    record(model, "cudnn")
    return out.astype(jnp.float32)
  record(model, "xla")
  return run("xla").astype(jnp.float32)
