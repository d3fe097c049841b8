"""DINOv2 (Hugging Face ``Dinov2Config``: ViT-S/B/L/g, patch 14) in flax.linen.

Pre-norm ViT with a CLS token, layer scale, GELU MLP or (giant) SwiGLU FFN, and HF's
bicubic position-embedding interpolation for inputs whose patch grid differs from the
checkpoint's (``image_size / patch_size``). q, k, v are fused into one [D, 3D] matmul.

Features (``hidden_states`` in HF terms): layer 0 = embeddings (patches + CLS + positions),
then one per transformer block; the last one is taken *after* the final layer norm, so
its default ``"cls"`` pool equals HF's ``pooler_output``. Pools: ``"cls"`` (the CLS
token), ``"mean"`` (mean over patch tokens, CLS excluded).
"""

from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import common
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("dinov2",)
MODALITY = "image"
POOLS = ("cls", "mean")

# XLA:CPU: a device's batch runs in micro-batches of 4 images (encoders/core.py), whose
# activations ([4 x 257, D], the MLP's [4 x 257, 4 D]) stay in the caches. At batch 16 on
# the project's 2-core CPU: DINOv2-S 12.2 -> 13.4 img/s, DINOv2-B 3.3 -> 3.8 img/s.
CPU_MICRO_BATCH = 4

_BICUBIC_A = -0.75   # torch's bicubic kernel constant (PIL / jax.image use -0.5)


def _torch_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] matrix of torch ``interpolate(mode="bicubic", align_corners=False)``
  along one axis (given ``size=``, so scale = n_in / n_out; border indices clamped).

  Hand-written because jax.image.resize uses a=-0.5 and antialiases when downsampling,
  which would not match the checkpoints' reference (HF / the DINOv2 release).
  """
  def cc1(x):  # |x| <= 1
    return ((_BICUBIC_A + 2) * x - (_BICUBIC_A + 3)) * x * x + 1

  def cc2(x):  # 1 < |x| < 2
    return ((_BICUBIC_A * x - 5 * _BICUBIC_A) * x + 8 * _BICUBIC_A) * x - 4 * _BICUBIC_A

  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  for o in range(n_out):
    src = scale * (o + 0.5) - 0.5
    i0 = math.floor(src)
    t = src - i0
    for off, w in zip((-1, 0, 1, 2), (cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t))):
      m[o, min(max(i0 + off, 0), n_in - 1)] += w
  return m


def interpolate_positions(pos: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """pos [1 + P*P, D] (CLS first) -> [1 + grid_h * grid_w, D], as HF Dinov2Embeddings."""
  n = pos.shape[0] - 1
  side = int(math.isqrt(n))
  if side * side != n:
    raise ValueError(f"position embeddings of {n} patches do not form a square grid")
  if grid_h == grid_w == side:
    return pos
  mh = jnp.asarray(_torch_bicubic_matrix(side, grid_h), jnp.float32)
  mw = jnp.asarray(_torch_bicubic_matrix(side, grid_w), jnp.float32)
  grid = pos[1:].reshape(side, side, -1).astype(jnp.float32)
  out = jnp.einsum("hi,ijd,wj->hwd", mh, grid, mw,  # [h, P] x [P, P, D] x [w, P] -> [h, w, D]
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.concatenate([pos[:1].astype(jnp.float32), out.reshape(grid_h * grid_w, -1)], 0)


def _attend(q, k, v, scale, dtype):
  """softmax(q k^T * scale) v over one sample or a batch; q, k, v: [..., T, H, d]."""
  prec = common.precision(dtype)
  logits = jnp.einsum("...qhd,...khd->...hqk", q.astype(dtype), k.astype(dtype),  # [T,H,d] x [T,H,d] -> [H,T,T]
                      precision=prec, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits * scale, axis=-1)   # float32 softmax
  return jnp.einsum("...hqk,...khd->...qhd", probs.astype(dtype), v.astype(dtype),  # [H,T,T] x [T,H,d] -> [T,H,d]
                    precision=prec, preferred_element_type=jnp.float32)


# XLA:CPU attention runs this many samples side by side (see ``attention``, ``cpu_variant``).
CPU_ATTENTION_GROUP = 4


def attention(q, k, v, scale: float, dtype, group: int = 0) -> jax.Array:
  """Bidirectional multi-head attention, q, k, v: [B, T, H, d] -> [B, T, H, d] float32.

  ``group`` = 0: one batched einsum over [B, H] (GPUs / TPUs). ``group`` = g > 0 (CPU
  meshes, ``cpu_variant``): up to g samples written as independent ops, which XLA's
  thunk executor runs side by side on its threads, and a ``lax.map`` over such groups
  when the batch is larger. On XLA:CPU one sample's attention is a handful of small dots
  (H matrices of T x T) that keep one core busy at best, and the batched dot over many
  of them runs slower still. At DINOv2-S shapes (batch 16 in micro-batches of 4, 257
  tokens, fp32) one layer's attention: batched 35 ms, a ``lax.map`` over samples 31 ms,
  groups of 4 independent samples 23 ms (PyTorch SDPA 17 ms).
  """
  if not group:
    return _attend(q, k, v, scale, dtype)
  g = common.largest_divisor(q.shape[0], group)

  def side_by_side(*qkv):   # g samples, [g, T, H, d] each
    return jnp.stack([_attend(*(x[i] for x in qkv), scale, dtype) for i in range(g)])

  if q.shape[0] == g:
    return side_by_side(q, k, v)
  return common.map_chunks(side_by_side, (q, k, v), g)


class Block(nn.Module):
  """HF Dinov2Layer: x + ls1 * attn(norm1(x)); x + ls2 * mlp(norm2(x))."""
  num_heads: int
  head_dim: int
  mlp_hidden: int
  swiglu: bool
  act: str
  eps: float
  dtype: jnp.dtype
  attention_group: int = 0   # 0: batched attention; > 0: CPU groups (``attention``)

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    hd = self.num_heads * self.head_dim
    p = lambda name, shape: self.param(name, nn.initializers.zeros, shape)  # noqa: E731

    h = common.layer_norm(x, p("norm1_scale", (d,)), p("norm1_bias", (d,)), self.eps)
    qkv = common.dense(h, p("qkv_kernel", (d, 3 * hd)), p("qkv_bias", (3 * hd,)), self.dtype)
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, self.head_dim), 3, axis=2)
    attn = attention(q, k, v, self.head_dim ** -0.5, self.dtype, self.attention_group)
    attn = common.dense(attn.reshape(b, t, hd), p("out_kernel", (hd, d)), p("out_bias", (d,)),
                        self.dtype)
    x = x + attn * p("ls1", (d,))

    h = common.layer_norm(x, p("norm2_scale", (d,)), p("norm2_bias", (d,)), self.eps)
    if self.swiglu:
      gate_up = common.dense(h, p("in_kernel", (d, 2 * self.mlp_hidden)),
                             p("in_bias", (2 * self.mlp_hidden,)), self.dtype)
      gate, up = jnp.split(gate_up, 2, axis=-1)
      h = jax.nn.silu(gate) * up
    else:
      h = common.activation(self.act)(
          common.dense(h, p("in_kernel", (d, self.mlp_hidden)), p("in_bias", (self.mlp_hidden,)),
                       self.dtype))
    h = common.dense(h, p("out2_kernel", (self.mlp_hidden, d)), p("out2_bias", (d,)), self.dtype)
    return x + h * p("ls2", (d,))


def _pool(x: jax.Array, pool: str) -> jax.Array:
  """[B, 1 + P, D] -> [B, D]."""
  if pool == "cls":
    return x[:, 0]
  if pool == "mean":
    return x[:, 1:].mean(axis=1)
  raise ValueError(f"unknown DINOv2 pool {pool!r}; choose from {POOLS}")


class Dinov2(nn.Module):
  """pixel_values [B, H, W, 3] float32 -> tuple of 1 + num_layers features [B, D] float32.

  H, W need not be the checkpoint's image_size: rows/columns beyond a multiple of the
  patch size are dropped (as the strided patch convolution does), positions interpolated.
  """
  hidden_size: int
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_hidden: int
  swiglu: bool
  act: str
  eps: float
  patch: int
  num_positions: int
  dtype: jnp.dtype = jnp.float32
  attention_group: int = 0   # 0: batched attention; > 0: CPU groups (``cpu_variant``)

  @nn.compact
  def __call__(self, pixel_values, pool: str = ""):
    pool = pool or POOLS[0]
    b, hgt, wid, c = pixel_values.shape
    ps, d = self.patch, self.hidden_size
    gh, gw = hgt // ps, wid // ps
    if gh == 0 or gw == 0:
      raise ValueError(f"DINOv2 input {hgt}x{wid} is smaller than one {ps}x{ps} patch")
    # Patch conv (kernel = stride = patch) as a reshape + matmul over (py, px, c) patches.
    x = pixel_values[:, :gh * ps, :gw * ps].reshape(b, gh, ps, gw, ps, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, ps * ps * c)
    kernel = self.param("patch_kernel", nn.initializers.zeros, (ps * ps * c, d))
    x = common.dense(x, kernel, self.param("patch_bias", nn.initializers.zeros, (d,)), self.dtype)
    cls = self.param("cls_token", nn.initializers.zeros, (d,)).astype(jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    pos = self.param("position_embeddings", nn.initializers.zeros, (self.num_positions, d))
    x = x + interpolate_positions(pos, gh, gw)[None]
    feats = [x]
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.head_dim, self.mlp_hidden, self.swiglu, self.act,
                self.eps, self.dtype, self.attention_group, name=f"layer{i}")(x)
      feats.append(x)
    feats[-1] = common.layer_norm(x, self.param("norm_scale", nn.initializers.zeros, (d,)),
                                  self.param("norm_bias", nn.initializers.zeros, (d,)), self.eps)
    return tuple(_pool(f, pool) for f in feats)


def _dims(cfg) -> tuple[int, int, int]:
  """(num_heads * head_dim, head_dim, mlp hidden width) exactly as HF computes them."""
  head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
  hidden = int(cfg.hidden_size * cfg.mlp_ratio)
  if cfg.use_swiglu_ffn:
    hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
  return cfg.num_attention_heads * head_dim, head_dim, hidden


def _patch_size(cfg) -> int:
  ps = cfg.patch_size
  if isinstance(ps, (tuple, list)):
    if ps[0] != ps[1]:
      raise ValueError(f"DINOv2 patch_size {ps} is not square")
    ps = ps[0]
  return int(ps)


def _num_positions(cfg) -> int:
  size = cfg.image_size
  h, w = (size, size) if isinstance(size, int) else size
  ps = _patch_size(cfg)
  return (h // ps) * (w // ps) + 1


def build(hf_config, dtype=jnp.float32) -> Dinov2:
  if hf_config.num_channels != 3:
    raise ValueError(f"DINOv2 num_channels={hf_config.num_channels}; only RGB is supported")
  _, head_dim, hidden = _dims(hf_config)
  return Dinov2(hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
                num_heads=hf_config.num_attention_heads, head_dim=head_dim, mlp_hidden=hidden,
                swiglu=bool(hf_config.use_swiglu_ffn), act=hf_config.hidden_act,
                eps=hf_config.layer_norm_eps, patch=_patch_size(hf_config),
                num_positions=_num_positions(hf_config), dtype=dtype)


def cpu_variant(module: Dinov2, params: dict) -> tuple[Dinov2, dict]:
  """The module for a CPU mesh (registry contract): attention in groups of
  CPU_ATTENTION_GROUP samples side by side (``attention``); same params, same bits."""
  return module.clone(attention_group=CPU_ATTENTION_GROUP), params


# transformers 5 renames checkpoints in memory (conversion_mapping.py) but saves and
# publishes the original names; accept the in-memory names too, mapped back to originals.
_NEW_TO_ORIGINAL = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.down_proj.", ".mlp.weights_out."),
)


def _original_names(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    for new, old in _NEW_TO_ORIGINAL:
      key = key.replace(new, old)
    out[key] = value
  # In-memory SwiGLU keeps gate_proj / up_proj apart; the file format concatenates them.
  for key in [k for k in out if ".mlp.gate_proj." in k]:
    up = key.replace(".gate_proj.", ".up_proj.")
    if up in out:
      gate = out.pop(key)
      out[key.replace(".gate_proj.", ".weights_in.")] = np.concatenate(
          [np.asarray(gate), np.asarray(out.pop(up))], axis=0)
  return out


def convert(state_dict: Mapping[str, np.ndarray], hf_config) -> dict:
  """HF Dinov2Model (or Dinov2ForImageClassification) weights -> Dinov2 params.

  ``embeddings.mask_token`` (pre-training only) and a classifier head are known and unused.
  """
  sd = StateDict(_original_names(state_dict), prefixes=("dinov2.",),
                 ignore=(r"embeddings\.mask_token", r"classifier\..*"))
  d, ps, c = hf_config.hidden_size, _patch_size(hf_config), hf_config.num_channels
  hd, _, hidden = _dims(hf_config)
  swiglu = bool(hf_config.use_swiglu_ffn)
  qkv_bias = bool(getattr(hf_config, "qkv_bias", True))
  take_bias = lambda name, n: sd.take(name, (n,)) if qkv_bias else np.zeros(n, np.float32)  # noqa: E731
  mlp_in = 2 * hidden if swiglu else hidden
  names_in = ("weights_in", "weights_out") if swiglu else ("fc1", "fc2")
  w = sd.take("embeddings.patch_embeddings.projection.weight", (d, c, ps, ps))
  params = {
      "patch_kernel": w.transpose(2, 3, 1, 0).reshape(ps * ps * c, d),  # OIHW -> (HWI)O
      "patch_bias": sd.take("embeddings.patch_embeddings.projection.bias", (d,)),
      "cls_token": sd.take("embeddings.cls_token", (1, 1, d)).reshape(d),
      "position_embeddings": sd.take("embeddings.position_embeddings",
                                     (1, _num_positions(hf_config), d))[0],
      "norm_scale": sd.take("layernorm.weight", (d,)),
      "norm_bias": sd.take("layernorm.bias", (d,)),
  }
  for i in range(hf_config.num_hidden_layers):
    p = f"encoder.layer.{i}"
    att = f"{p}.attention.attention"
    params[f"layer{i}"] = {
        "norm1_scale": sd.take(f"{p}.norm1.weight", (d,)),
        "norm1_bias": sd.take(f"{p}.norm1.bias", (d,)),
        # torch Linear weights are [out, in]; ours are [in, out].
        "qkv_kernel": np.concatenate([sd.take(f"{att}.{n}.weight", (hd, d)).T
                                      for n in ("query", "key", "value")], axis=1),
        "qkv_bias": np.concatenate([take_bias(f"{att}.{n}.bias", hd)
                                    for n in ("query", "key", "value")]),
        "out_kernel": sd.take(f"{p}.attention.output.dense.weight", (d, hd)).T,
        "out_bias": sd.take(f"{p}.attention.output.dense.bias", (d,)),
        "ls1": sd.take(f"{p}.layer_scale1.lambda1", (d,)),
        "norm2_scale": sd.take(f"{p}.norm2.weight", (d,)),
        "norm2_bias": sd.take(f"{p}.norm2.bias", (d,)),
        "in_kernel": sd.take(f"{p}.mlp.{names_in[0]}.weight", (mlp_in, d)).T,
        "in_bias": sd.take(f"{p}.mlp.{names_in[0]}.bias", (mlp_in,)),
        "out2_kernel": sd.take(f"{p}.mlp.{names_in[1]}.weight", (d, hidden)).T,
        "out2_bias": sd.take(f"{p}.mlp.{names_in[1]}.bias", (d,)),
        "ls2": sd.take(f"{p}.layer_scale2.lambda1", (d,)),
    }
  sd.finish("DINOv2 checkpoint")
  return params
