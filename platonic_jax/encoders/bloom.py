"""BLOOM / BLOOMZ (``BloomConfig``) as a frozen flax.linen text encoder of the decoder family.

Reference: ``transformers/models/bloom/modeling_bloom.py`` (5.x). Differences from the
Llama-style ``decoder.py``: ALiBi instead of RoPE (a per-head linear bias on the key's
real-token position, ``slopes * (cumsum(mask) - 1)``; softmax over keys makes it
relative), a LayerNorm after the token embedding, LayerNorms with bias, biased linear
layers, a GELU MLP (BLOOM's tanh form, ``0.79788456``), the option
``apply_residual_connection_post_layernorm``, and q/k/v fused into one
``query_key_value`` whose rows are laid out [head, (q | k | v), head_dim]: the converter
reads q, k and v as separate kernels through ``lazy.Gathered`` row views, so the tensor
parallel rules can split them by heads.

Same interface as ``decoder.py``: ``module(input_ids, attention_mask, pool, scores)``
-> L + 1 pooled hidden states (embedding LayerNorm output, each block, ``ln_f``), and
with ``scores=True`` also the summed next-token nats (tied LM head = word embeddings).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import common, decoder, gpt2, lazy, lm_scores
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("bloom",)
MODALITY = "text"
POOLS = decoder.POOLS
SCORES = True
load_tokenizer = decoder.load_tokenizer   # the release's set-up

PARTITION_RULES = (
    (r"word_embeddings/embedding", ("model", None)),
    (r"h_\d+/attn/(q|k|v)_proj/kernel", (None, "model")),
    (r"h_\d+/attn/(q|k|v)_proj/bias", ("model",)),
    (r"h_\d+/attn/dense/kernel", ("model", None)),
    (r"h_\d+/mlp/dense_h_to_4h/kernel", (None, "model")),
    (r"h_\d+/mlp/dense_h_to_4h/bias", ("model",)),
    (r"h_\d+/mlp/dense_4h_to_h/kernel", ("model", None)),
)


@dataclasses.dataclass(frozen=True)
class BloomSpec:
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  eps: float
  post_ln_residual: bool   # apply_residual_connection_post_layernorm


def spec_from_config(cfg: Any) -> BloomSpec:
  get = decoder._get
  d = int(get(cfg, "hidden_size", get(cfg, "n_embed", 64)))
  h = int(get(cfg, "n_head", get(cfg, "num_attention_heads", 8)))
  if d % h:
    raise ValueError(f"BLOOM config: hidden_size={d} is not divisible by n_head={h}")
  return BloomSpec(int(get(cfg, "vocab_size")), d, int(get(cfg, "n_layer",
                   get(cfg, "num_hidden_layers", 2))), h, float(get(cfg, "layer_norm_epsilon", 1e-5)),
                   bool(get(cfg, "apply_residual_connection_post_layernorm", False)))


def alibi_slopes(num_heads: int) -> np.ndarray:
  """[H] float32 ALiBi slopes, as HF ``_get_alibi_slopes`` (heads not a power of two
  get the odd powers of the next power's base)."""
  closest = 2 ** math.floor(math.log2(num_heads))
  base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
  slopes = np.power(base, np.arange(1, 1 + closest, dtype=np.float32))
  if closest != num_heads:
    extra = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
    rest = min(closest, num_heads - closest)
    slopes = np.concatenate([slopes, np.power(extra, np.arange(1, 1 + 2 * rest, 2,
                                                               dtype=np.float32))])
  return slopes.astype(np.float32)


def bloom_gelu(x: jax.Array) -> jax.Array:
  """HF ``bloom_gelu_forward`` (its tanh constant is 0.79788456, not sqrt(2/pi) exactly)."""
  return x * 0.5 * (1.0 + jnp.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


class Block(nn.Module):
  spec: BloomSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, allowed, alibi):
    s, dt = self.spec, self.dtype
    ln = gpt2.LayerNorm(s.eps, name="input_layernorm")(x)
    residual = ln if s.post_ln_residual else x
    x = _Attn(s, dt, name="attn")(ln, allowed, alibi) + residual
    ln = gpt2.LayerNorm(s.eps, name="post_attention_layernorm")(x)
    residual = ln if s.post_ln_residual else x
    return _MLP(s, dt, name="mlp")(ln) + residual


class _Attn(nn.Module):
  spec: BloomSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ln, allowed, alibi):
    s, dt = self.spec, self.dtype
    b, t, d = ln.shape
    hd = d // s.num_heads
    q, k, v = (decoder.Linear(d, True, dt, name=f"{n}_proj")(ln).reshape(b, t, s.num_heads, hd)
               for n in "qkv")
    out = decoder.attention(q, k, v, allowed, hd ** -0.5, dt, bias=alibi)
    return decoder.Linear(d, True, dt, name="dense")(out.reshape(b, t, d))


class _MLP(nn.Module):
  spec: BloomSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = self.spec.hidden_size
    h = bloom_gelu(decoder.Linear(4 * d, True, self.dtype, name="dense_h_to_4h")(x))
    return decoder.Linear(d, True, self.dtype, name="dense_4h_to_h")(h)


class Bloom(nn.Module):
  spec: BloomSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask, pool: str = "", scores: bool = False):
    s = self.spec
    pool = pool or POOLS[0]
    if pool not in POOLS:
      raise ValueError(f"unknown BLOOM pool {pool!r}; choose one of {POOLS}")
    mask = attention_mask.astype(jnp.int32)
    input_ids = jnp.where(mask > 0, input_ids, 0)   # pad ids past the vocab (decoder.py)
    table = decoder.Table(s.vocab_size, s.hidden_size, name="word_embeddings")()
    x = jnp.take(table, input_ids, axis=0).astype(jnp.float32)
    x = gpt2.LayerNorm(s.eps, name="word_embeddings_layernorm")(x)
    # HF build_alibi_tensor: slope_h * (cumsum(mask) - 1) * mask, on the key axis.
    pos = ((jnp.cumsum(mask, axis=1) - 1) * mask).astype(jnp.float32)          # [B, S]
    alibi = jnp.asarray(alibi_slopes(s.num_heads))[None, :, None, None] * pos[:, None, None, :]
    allowed = decoder.allowed_mask(mask, None)
    hidden = [x]
    for i in range(s.num_layers):
      x = Block(s, self.dtype, name=f"h_{i}")(x, allowed, alibi)
      hidden.append(x)
    x = gpt2.LayerNorm(s.eps, name="ln_f")(x)
    hidden[-1] = x
    feats = tuple(common.pool_tokens(h, mask, pool) for h in hidden)
    if not scores:
      return feats
    logits = common.dense(x, table.T, None, self.dtype)   # tied LM head: [B, T, D] x [D, V]
    return feats, lm_scores.token_nats(logits, input_ids, mask)


def build(hf_config: Any, dtype: Any = jnp.float32) -> Bloom:
  dtype = common.compute_dtype(dtype, "BLOOM")
  return Bloom(spec_from_config(hf_config), dtype=dtype)


def convert(state_dict: Mapping[str, Any], hf_config: Any) -> dict[str, Any]:
  """HF BLOOM checkpoint (``transformer.``-prefixed or not) -> Flax params, strictly; the
  tied ``lm_head.weight`` some checkpoints store is ignored (it is the token table)."""
  s = spec_from_config(hf_config)
  sd = StateDict(state_dict, prefixes=("transformer.",), ignore=(r"lm_head\.weight",))
  d, h = s.hidden_size, s.num_heads
  hd = d // h

  def norm(name):
    return {"scale": sd.take(f"{name}.weight", (d,)), "bias": sd.take(f"{name}.bias", (d,))}

  def linear(name, n_in, n_out):
    return {"kernel": lazy.Permuted(sd.view(f"{name}.weight", (n_out, n_in))),
            "bias": sd.take(f"{name}.bias", (n_out,))}

  params: dict[str, Any] = {
      "word_embeddings": {"embedding": sd.view("word_embeddings.weight", (s.vocab_size, d))},
      "word_embeddings_layernorm": norm("word_embeddings_layernorm")}
  for i in range(s.num_layers):
    p = f"h.{i}"
    w = sd.view(f"{p}.self_attention.query_key_value.weight", (3 * d, d))
    bias = sd.take(f"{p}.self_attention.query_key_value.bias", (3 * d,))
    attn = {}
    for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
      # fused rows: head * 3 hd + j * hd + (0 .. hd-1)
      rows = (np.arange(h)[:, None] * 3 * hd + j * hd + np.arange(hd)[None]).reshape(-1)
      attn[name] = {"kernel": lazy.Permuted(lazy.Gathered(w, rows)), "bias": bias[rows]}
    attn["dense"] = linear(f"{p}.self_attention.dense", d, d)
    params[f"h_{i}"] = {
        "input_layernorm": norm(f"{p}.input_layernorm"),
        "attn": attn,
        "post_attention_layernorm": norm(f"{p}.post_attention_layernorm"),
        "mlp": {"dense_h_to_4h": linear(f"{p}.mlp.dense_h_to_4h", d, 4 * d),
                "dense_4h_to_h": linear(f"{p}.mlp.dense_4h_to_h", 4 * d, d)}}
  params["ln_f"] = norm("ln_f")
  sd.finish(f"BLOOM checkpoint (n_layer={s.num_layers}, hidden_size={d})")
  return params
