"""The Vision Transformer family in flax.linen: one module for timm's ``VisionTransformer``
and the Hugging Face ViT-style models (ViT, ViTMAE, CLIP vision, DINOv2 with and without
registers).

What the architectures vary in is a :class:`ViTSpec` (class token or not, register
tokens, LayerScale, ``norm_pre``, GELU / QuickGELU / SwiGLU-packed MLP, patch size,
qkv bias, final norm / ``fc_norm``, how position embeddings are resampled); the format
modules (``timm_format.py``, ``vit_hf.py``, ``dinov2.py``) build the spec from their
config and convert their checkpoint into this module's parameters.

Forward (timm ``VisionTransformer.forward_features`` with ``dynamic_img_size=True``):
patches (a stride = kernel = patch convolution, as a matmul; rows / columns beyond a
multiple of the patch are dropped) + position embeddings resampled to the input's grid
(``pos_embed.resample``), prefix tokens (class token, then registers) in front, optional
``norm_pre``, ``depth`` pre-norm blocks ``x + ls1 * attn(norm1(x)); x + ls2 * mlp(norm2(x))``.
Position embeddings of prefix tokens are constants, folded into the prefix tokens at
conversion (``prefix`` = class token + its position embedding), so the module only
resamples the patch grid.

Features (``features="blocks"``, the Platonic study's ``extract_features.py``): the
residual stream after each block (timm ``blocks.{i}``, the release's
``blocks.{i}.add_1``), the last one *before* the final norm: ``depth`` layers, no
embedding layer, so ``encode(images, layers="all")`` is the release's [L, N, D] tensor.
``features="hidden_states"`` (the HF Dinov2Model convention kept by ``dinov2.py``):
embeddings + one per block, the last after the final norm.

Pools (per layer, [B, T, D] -> [B, D]):
- ``"cls"``: token 0, the class token (the release's ``v[:, 0, :]``); default when the
  model has a class token;
- ``"mean"``: mean over the patch tokens (class and register tokens excluded); default
  without a class token;
- ``"pre_logits"``: timm's ``forward_head(norm(x), pre_logits=True)`` per layer: the
  final ``norm``, the model's own global pool (class token or patch mean), then
  ``fc_norm`` -- at the last layer timm's pooled embedding (and HF's ``pooler_output``
  of Dinov2 / CLIP), earlier layers as timm's ``forward_intermediates(norm=True)``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import attention as attention_lib
from platonic_jax.encoders import common, pos_embed

MODALITY = "image"
POOLS = ("cls", "mean", "pre_logits")

# XLA:CPU: a device's batch runs in micro-batches of 4 images (encoders/core.py), whose
# activations stay in the caches (measured on DINOv2, the same blocks: S 12.2 -> 13.4
# img/s, B 3.3 -> 3.8 img/s at batch 16 on the project's 2-core CPU).
CPU_MICRO_BATCH = 4
# XLA:CPU attention runs this many samples side by side (see ``attention``, ``cpu_variant``).
CPU_ATTENTION_GROUP = 4

# Tensor-parallel parameter sharding over a "model" mesh axis (the shared mechanism of
# encoders/partition.py: regex fullmatched against the '/'-joined parameter path ->
# one mesh axis or None per array dimension; unmatched parameters are replicated).
# Column-parallel qkv and fc1 (their output features split), row-parallel proj and fc2
# (their input features split); norms, the row-parallel biases, embeddings replicated.
PARTITION_RULES: tuple[tuple[str, tuple], ...] = (
    (r".*/attn/qkv/kernel", (None, "model")),
    (r".*/attn/qkv/bias", ("model",)),
    (r".*/attn/proj/kernel", ("model", None)),
    (r".*/mlp/fc1/kernel", (None, "model")),
    (r".*/mlp/fc1/bias", ("model",)),
    (r".*/mlp/fc2/kernel", ("model", None)),
)


@dataclasses.dataclass(frozen=True)
class ViTSpec:
  """Architecture of one ViT: every field a checkpoint format can vary.

  Widths are in features, sizes in pixels. ``mlp_hidden`` is the MLP's hidden width
  (fc2's input); a ``gated`` (SwiGLU-packed) MLP's fc1 outputs ``2 * mlp_hidden``
  features, [gate | up], and computes ``act(gate) * up``.
  """
  dim: int
  depth: int
  num_heads: int
  mlp_hidden: int
  patch_size: int
  image_size: tuple[int, int]        # the grid the position embeddings were trained on
  act: str = "gelu"                  # common.activation name: gelu, quick_gelu, silu, ...
  gated: bool = False
  qkv_bias: bool = True
  proj_bias: bool = True             # biases of attn proj, fc1 and fc2
  patch_bias: bool = True
  layer_scale: bool = False
  class_token: bool = True
  reg_tokens: int = 0
  pos_embed: bool = True
  pre_norm: bool = False             # timm norm_pre / CLIP pre_layrnorm
  final_norm: bool = True            # timm norm (applied to all tokens, before pooling)
  fc_norm: bool = False              # timm fc_norm (after pooling; then no final norm)
  global_pool: str = "token"         # the model's own pool for "pre_logits": token | avg
  eps: float = 1e-6
  pos_antialias: bool = True         # resampling: timm / Dinov2WithRegisters antialias
  in_chans: int = 3
  name: str = "ViT"                  # for error messages

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def num_prefix(self) -> int:
    return int(self.class_token) + self.reg_tokens

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

  def check(self) -> "ViTSpec":
    """Raises ValueError when the fields contradict each other; returns self."""
    problems = []
    if self.dim % self.num_heads:
      problems.append(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
    if self.global_pool not in ("token", "avg"):
      problems.append(f"global_pool {self.global_pool!r} (supported: 'token', 'avg')")
    if self.global_pool == "token" and not self.class_token:
      problems.append("global_pool 'token' needs a class token")
    if self.fc_norm and not self.final_norm:
      problems.append("fc_norm without final_norm")
    if min(self.grid) < 1:
      problems.append(f"image_size {self.image_size} is smaller than the {self.patch_size}px patch")
    if problems:
      raise ValueError(f"{self.name}: unsupported architecture: " + "; ".join(problems))
    return self


def _attend(q, k, v, scale, dtype):
  """softmax(q k^T * scale) v over one sample or a batch; q, k, v: [..., T, H, d]."""
  prec = common.precision(dtype)
  logits = jnp.einsum("...qhd,...khd->...hqk", q.astype(dtype), k.astype(dtype),  # [T,H,d] x [T,H,d] -> [H,T,T]
                      precision=prec, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits * scale, axis=-1)   # float32 softmax
  return jnp.einsum("...hqk,...khd->...qhd", probs.astype(dtype), v.astype(dtype),  # [H,T,T] x [T,H,d] -> [T,H,d]
                    precision=prec, preferred_element_type=jnp.float32)


def attention(q, k, v, scale: float, dtype, group: int = 0, impl: str = "xla") -> jax.Array:
  """Bidirectional multi-head attention, q, k, v: [B, T, H, d] -> [B, T, H, d] float32.

  ``group`` = 0: ``impl`` ("xla" / "cudnn": ``attention.dot_product_attention``, the
  fused op of GPUs / TPUs -- cuDNN's flash kernel for bf16 on GPUs; "einsum": the
  hand-written form over the whole batch). ``group`` = g > 0 (CPU meshes,
  ``cpu_variant``; the einsum form): up to g samples written as independent einsum ops,
  which XLA's thunk executor runs side by side on its threads, and a ``lax.map`` over
  such groups when the batch is larger. On XLA:CPU one sample's attention is a handful
  of small dots that keep one core busy at best, and the batched dot over many of them
  runs slower still: at DINOv2-S shapes (batch 16 in micro-batches of 4, 257 tokens,
  fp32) one layer's attention took 35 ms batched, 31 ms as a ``lax.map`` over samples,
  23 ms in groups of 4 (PyTorch SDPA 17 ms).
  """
  if not group:
    if impl == "einsum":
      attention_lib.record("vit", "einsum")
      return _attend(q, k, v, scale, dtype)
    return attention_lib.dot_product_attention(q, k, v, scale=scale, dtype=dtype, impl=impl,
                                               model="vit")
  attention_lib.record("vit", "einsum")
  g = common.largest_divisor(q.shape[0], group)

  def side_by_side(*qkv):   # g samples, [g, T, H, d] each
    return jnp.stack([_attend(*(x[i] for x in qkv), scale, dtype) for i in range(g)])

  if q.shape[0] == g:
    return side_by_side(q, k, v)
  return common.map_chunks(side_by_side, (q, k, v), g)


class Dense(nn.Module):
  """torch.nn.Linear as ``kernel`` [in, out] (+ ``bias``), mixed precision (common.dense)."""
  features: int
  use_bias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.zeros, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    return common.dense(x, kernel, bias, self.dtype)


class LayerNorm(nn.Module):
  """torch.nn.LayerNorm (``scale``, ``bias``) in float32."""
  eps: float

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    return common.layer_norm(x, self.param("scale", nn.initializers.ones, (d,)),
                             self.param("bias", nn.initializers.zeros, (d,)), self.eps)


class Attention(nn.Module):
  """timm Attention: fused ``qkv`` [D, 3 D] (columns: q, k, v, each head-major), ``proj``."""
  num_heads: int
  qkv_bias: bool
  proj_bias: bool
  dtype: jnp.dtype
  group: int = 0
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    hd = d // self.num_heads
    qkv = Dense(3 * d, self.qkv_bias, self.dtype, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, hd), 3, axis=2)   # [B, T, H, d] each
    out = attention(q, k, v, hd ** -0.5, self.dtype, self.group, self.impl)
    return Dense(d, self.proj_bias, self.dtype, name="proj")(out.reshape(b, t, d))


class Mlp(nn.Module):
  """timm Mlp (fc1, act, fc2) or, ``gated``, GluMlp / SwiGLUPacked (act(gate) * up)."""
  hidden: int
  act: str
  gated: bool
  use_bias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    h = Dense(2 * self.hidden if self.gated else self.hidden, self.use_bias, self.dtype,
              name="fc1")(x)
    if self.gated:
      gate, up = jnp.split(h, 2, axis=-1)
      h = common.activation(self.act)(gate) * up
    else:
      h = common.activation(self.act)(h)
    return Dense(x.shape[-1], self.use_bias, self.dtype, name="fc2")(h)


class Block(nn.Module):
  """timm Block (= HF ViTLayer / CLIPEncoderLayer / Dinov2Layer), pre-norm:
  x + ls1 * attn(norm1(x)); x + ls2 * mlp(norm2(x)). [B, T, D] float32 -> same."""
  spec: ViTSpec
  dtype: jnp.dtype
  attention_group: int = 0
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    s, d = self.spec, x.shape[-1]
    h = Attention(s.num_heads, s.qkv_bias, s.proj_bias, self.dtype, self.attention_group,
                  self.attention_impl, name="attn")(LayerNorm(s.eps, name="norm1")(x))
    if s.layer_scale:
      h = h * self.param("ls1", nn.initializers.ones, (d,))
    x = x + h
    h = Mlp(s.mlp_hidden, s.act, s.gated, s.proj_bias, self.dtype,
            name="mlp")(LayerNorm(s.eps, name="norm2")(x))
    if s.layer_scale:
      h = h * self.param("ls2", nn.initializers.ones, (d,))
    return x + h


def _pool(x: jax.Array, pool: str, spec: ViTSpec) -> jax.Array:
  """[B, T, D] -> [B, D] (``pre_logits`` is handled by the caller)."""
  if pool == "cls":
    if not spec.class_token:
      raise ValueError(f"{spec.name} has no class token: use pool='mean'")
    return x[:, 0]
  if pool == "mean":
    return x[:, spec.num_prefix:].mean(axis=1)
  raise ValueError(f"unknown ViT pool {pool!r}; choose from {POOLS}")


class VisionTransformer(nn.Module):
  """pixel_values [B, H, W, C] float32 -> tuple of per-layer features [B, D] float32.

  ``features="blocks"``: ``depth`` layers (block outputs, the last before the final norm);
  ``"hidden_states"``: ``depth + 1`` (embeddings first, the last after the final norm).
  """
  spec: ViTSpec
  dtype: jnp.dtype = jnp.float32
  attention_group: int = 0   # > 0: the einsum form in CPU groups (``attention``)
  attention_impl: str = "xla"   # with group 0: attention.IMPLS (``select_attention``)
  features: str = "blocks"

  def default_pool(self) -> str:
    return "cls" if self.spec.class_token else "mean"

  @nn.compact
  def __call__(self, pixel_values, pool: str = ""):
    s = self.spec
    pool = pool or self.default_pool()
    if pool not in POOLS:
      raise ValueError(f"unknown ViT pool {pool!r}; choose from {POOLS}")
    b, hgt, wid, c = pixel_values.shape
    ps, d = s.patch_size, s.dim
    gh, gw = hgt // ps, wid // ps
    if gh == 0 or gw == 0:
      raise ValueError(
          f"{s.name}: input {hgt}x{wid} is smaller than one {ps}x{ps} patch; resize the "
          f"images to at least {ps}x{ps} (the checkpoint was trained at "
          f"{s.image_size[0]}x{s.image_size[1]})")
    # Patch conv (kernel = stride = patch) as a reshape + matmul over (py, px, c) patches.
    x = pixel_values[:, :gh * ps, :gw * ps].reshape(b, gh, ps, gw, ps, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, ps * ps * c)
    x = Dense(d, s.patch_bias, self.dtype, name="patch_embed")(x)
    if s.pos_embed:
      pos = self.param("pos_embed", nn.initializers.zeros, (s.grid[0] * s.grid[1], d))
      x = x + pos_embed.resample(pos, s.grid, (gh, gw), s.pos_antialias)[None]
    if s.num_prefix:
      prefix = self.param("prefix", nn.initializers.zeros, (s.num_prefix, d))
      x = jnp.concatenate([jnp.broadcast_to(prefix.astype(jnp.float32), (b, s.num_prefix, d)),
                           x], axis=1)
    if s.pre_norm:
      x = LayerNorm(s.eps, name="norm_pre")(x)
    layers = [x] if self.features == "hidden_states" else []
    for i in range(s.depth):
      x = Block(s, self.dtype, self.attention_group, self.attention_impl,
                name=f"blocks_{i}")(x)
      layers.append(x)
    # timm: ``norm`` on all tokens before the pool, or ``fc_norm`` after it (one of them).
    final = None
    if s.final_norm:
      final = self.param("fc_norm" if s.fc_norm else "norm",
                         lambda _: {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))})
    norm = lambda h: common.layer_norm(h, final["scale"], final["bias"], s.eps)  # noqa: E731
    if self.features == "hidden_states" and final is not None:
      return tuple(_pool(h, pool, s) for h in layers[:-1]) + (_pool(norm(layers[-1]), pool, s),)

    def pre_logits(h):
      if final is not None and not s.fc_norm:
        h = norm(h)
      h = _pool(h, "cls" if s.global_pool == "token" else "mean", s)
      return norm(h) if s.fc_norm else h

    if pool == "pre_logits":
      return tuple(pre_logits(h) for h in layers)
    return tuple(_pool(h, pool, s) for h in layers)


def build(spec: ViTSpec, dtype=jnp.float32, features: str = "blocks") -> VisionTransformer:
  return VisionTransformer(spec.check(), dtype=dtype, features=features)


def cpu_variant(module: VisionTransformer, params: dict) -> tuple[VisionTransformer, dict]:
  """The module for a CPU mesh (registry contract): the einsum attention in groups of
  CPU_ATTENTION_GROUP samples side by side (``attention``); same params. A module whose
  attention was forced to a fused form (``select_attention``) keeps it."""
  if module.attention_impl != "einsum":
    return module, params
  return module.clone(attention_group=CPU_ATTENTION_GROUP), params


def select_attention(module: VisionTransformer, platform: str,
                     requested: str = "auto") -> VisionTransformer:
  """The module with the attention for ``platform`` (registry contract;
  ``attention.choose``): the einsum form on CPUs (its groups of samples side by side
  are ``cpu_variant``'s, chosen per CPU by encoders/cpu_tuning.py), cuDNN's flash
  kernel for bf16 on GPUs, XLA's fused op elsewhere."""
  impl = attention_lib.resolve(requested, platform, module.dtype,
                               head_dim=module.spec.head_dim, what=module.spec.name)
  return module.clone(attention_impl=impl,
                      attention_group=module.attention_group if impl == "einsum" else 0)


def patch_kernel(weight, spec: ViTSpec):
  """torch Conv2d weight [D, C, p, p] (OIHW) -> our patch matmul kernel [p * p * C, D]."""
  p, c = spec.patch_size, spec.in_chans
  return weight.transpose(2, 3, 1, 0).reshape(p * p * c, spec.dim)


def prefix_tokens(tokens: Sequence, pos_prefix) -> np.ndarray:
  """Prefix tokens (class token then registers), each [n_i, D], plus the position
  embeddings of as many leading ones as ``pos_prefix`` has rows -> [sum n_i, D]
  float32 (the same float32 sums the references compute at every forward)."""
  out = np.concatenate([np.asarray(t, np.float32).reshape(-1, np.shape(t)[-1]) for t in tokens])
  n = len(pos_prefix)
  if n:
    out[:n] = out[:n] + np.asarray(pos_prefix, np.float32)
  return out
