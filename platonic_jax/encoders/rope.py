"""Rotary position embeddings with the checkpoints' scaling rules, as transformers 5.

Reference: ``transformers/modeling_rope_utils.py`` (``_compute_default``, ``_linear_scaling``,
``_dynamic_ntk``, ``_llama3`` parameters) and ``LlamaRotaryEmbedding`` /
``apply_rotary_pos_emb`` (rotate-half layout: the head dim is [x1 | x2], each pair
(x1[i], x2[i]) rotated by ``position * inv_freq[i]``).

    spec = rope_spec(hf_config, layer_type=None)          # RopeSpec (static, hashable)
    cos, sin = cos_sin(spec, positions, lengths)          # [B, T, head_dim] float32
    q = apply(q, cos, sin)                                # q: [B, T, H, head_dim]

``positions`` are the real-token positions (``cumsum(mask) - 1``), so a text's features
do not depend on its padding; "dynamic" NTK scaling uses each row's own length (HF uses
the padded length of the batch, the same for an unpadded text).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED = ("default", "linear", "dynamic", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeSpec:
  """Static RoPE parameters of one layer type. ``inv_freq``: [head_dim / 2] float32
  (as a tuple, so the spec hashes); for "dynamic" the base ones, rescaled per row."""
  rope_type: str
  theta: float
  head_dim: int
  inv_freq: tuple[float, ...]
  factor: float = 1.0
  max_position_embeddings: int = 0


def _params(hf_config: Any, layer_type: str | None) -> dict:
  params = getattr(hf_config, "rope_parameters", None)
  if params is None:   # configs of older transformers: rope_theta + rope_scaling
    params = dict(getattr(hf_config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
  if "rope_type" not in params and "type" not in params and layer_type is not None:
    params = params[layer_type]   # per layer type (Gemma-3: full / sliding attention)
  params = dict(params)
  params.setdefault("rope_type", params.get("type", "default"))
  return params


def _default_inv_freq(theta: float, dim: int) -> np.ndarray:
  # float32 throughout, as torch's 1 / (base ** (arange(0, dim, 2).float() / dim))
  exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  return (np.float32(1.0) / np.power(np.float32(theta), exponent)).astype(np.float32)


def rope_spec(hf_config: Any, head_dim: int, layer_type: str | None = None) -> RopeSpec:
  """The RoPE of a HF config (or of one of its layer types). ValueError names the
  unsupported rope types and parameters."""
  p = _params(hf_config, layer_type)
  kind = p["rope_type"]
  if kind not in SUPPORTED:
    raise ValueError(f"rope_type {kind!r} is not supported; supported: {', '.join(SUPPORTED)}")
  if float(p.get("partial_rotary_factor", 1.0)) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported by the decoder family")
  theta = float(p["rope_theta"])
  inv = _default_inv_freq(theta, head_dim)
  factor = float(p.get("factor", 1.0))
  if kind == "linear":
    inv = (inv / np.float32(factor)).astype(np.float32)
  elif kind == "llama3":
    low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
    old = float(p["original_max_position_embeddings"])
    wavelen = (2 * math.pi / inv).astype(np.float32)
    scaled = np.where(wavelen > old / low, inv / np.float32(factor), inv).astype(np.float32)
    smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    inv = np.where(medium, smoothed, scaled).astype(np.float32)
  return RopeSpec(kind, theta, head_dim, tuple(float(x) for x in inv), factor,
                  int(getattr(hf_config, "max_position_embeddings", 0) or 0))


def inv_freq(spec: RopeSpec, lengths: jax.Array) -> jax.Array:
  """[B, head_dim / 2] float32 inverse frequencies (row-dependent only for "dynamic")."""
  base = jnp.asarray(spec.inv_freq, jnp.float32)[None]
  if spec.rope_type != "dynamic":
    return jnp.broadcast_to(base, (lengths.shape[0], base.shape[1]))
  # HF _compute_dynamic_ntk_parameters with seq_len = max(length, max_position_embeddings).
  dim, maxpos, factor = spec.head_dim, spec.max_position_embeddings, spec.factor
  seq = jnp.maximum(lengths.astype(jnp.float32), float(maxpos))
  theta = spec.theta * ((factor * seq / maxpos) - (factor - 1)) ** (dim / (dim - 2))  # [B]
  exponent = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
  return 1.0 / (theta[:, None] ** exponent[None])


def cos_sin(spec: RopeSpec, positions: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
  """positions [B, T] int, lengths [B] -> cos, sin [B, T, head_dim] float32."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq(spec, lengths)[:, None, :]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, T, H, hd] rotated (HF rotate_half): x * cos + rotate_half(x) * sin."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
