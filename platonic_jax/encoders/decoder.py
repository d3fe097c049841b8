"""The decoder-only language models of the Platonic study as one flax.linen family.

Llama (1/2/3.x, open_llama, huggyllama), Mistral, Mixtral, Gemma, Gemma-2, Gemma-3 (text),
OLMo-1, OLMo-2, Qwen2 / Qwen2.5, Qwen3: one pre-norm transformer with the variations
these checkpoints need, read from the HF config (``spec_from_config``):

- norms: RMSNorm (``w * x``), Gemma's RMSNorm (``(1 + w) * x``), OLMo-1's LayerNorm
  without parameters; pre-norms (Llama), pre + post norms (Gemma-2/3), post-norms only
  (OLMo-2); QK-norm per head (Qwen3, Gemma-3) or over the whole projection (OLMo-2);
- attention: grouped-query (``num_key_value_heads``), RoPE with ``rope_theta`` and the
  linear / dynamic / llama3 scaling rules (``rope.py``), per-layer-type RoPE (Gemma-3),
  sliding windows on every layer (Mistral) or on the layers ``layer_types`` names
  (Gemma-2/3, Qwen2/3), logit soft-capping (Gemma-2), q/k/v biases (Qwen2), OLMo-1's
  ``clip_qkv``, Gemma-2/3's ``query_pre_attn_scalar``;
- SwiGLU / GeGLU MLPs (``hidden_act``), Mixtral's top-k mixture of experts;
- Gemma's ``sqrt(hidden_size)`` embedding scale, tied or separate LM heads, Gemma-2's
  final logit soft-capping.

References (transformers 5.x): ``models/{llama,mistral,mixtral,gemma,gemma2,gemma3,olmo,
olmo2,qwen2,qwen3}/modeling_*.py``, ``modeling_rope_utils.py``, ``masking_utils.py``.

Architecture module of the encoder registry (contract in ``registry.py``)::

    module = build(hf_config, dtype)
    feats = module.apply({"params": p}, input_ids, attention_mask, pool="avg")
    feats, nats = module.apply({"params": p}, input_ids, attention_mask, scores=True)
    # feats: L + 1 arrays [B, D] float32 = HF hidden_states (embedding output, each
    #   layer's output, the last after the final norm), pooled over real tokens;
    # nats: [B] summed next-token cross-entropy (lm_scores.py), for bits per byte.

Padding: positions are ``cumsum(mask) - 1`` and attention sees real keys only, so a
text's features do not depend on the padding side or on its batch (HF numbers positions
``0..T-1`` whatever the mask; RoPE and ALiBi are relative, so its left-padded features
agree to rounding). Pad rows hold finite garbage that the pools mask out.

Mixed precision as the other encoders (``common.py``): bf16 operands, float32
accumulation, float32 norms / softmax / residual stream / logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import attention as attention_lib
from platonic_jax.encoders import common, lazy, lm_scores, rope
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3_text", "gemma3",
               "olmo", "olmo2", "qwen2", "qwen3")
MODALITY = "text"
# "avg": mean over real tokens (the release's pool="avg"); "last": the last real token
# (the release's pool="none", left padding: position -1).
POOLS = ("avg", "last")
SCORES = True


def load_tokenizer(path: str, name: str | None = None):
  """The release's tokenizer set-up (``tokenize.load_release_tokenizer``)."""
  from platonic_jax.encoders import tokenize  # local: transformers is slow to import
  return tokenize.load_release_tokenizer(path, name)   # the module computes next-token losses (Encoder.bits_per_byte)

# Megatron-style tensor parallelism over the "model" mesh axis (encoders/partition.py):
# q/k/v, gate/up split by output columns, o/down by input rows (one all-reduce per
# attention and per MLP), the token table and LM head by vocabulary rows / columns,
# experts by their hidden columns / rows.
PARTITION_RULES = (
    (r"embed_tokens/embedding", ("model", None)),
    (r"layers_\d+/attn/(q|k|v)_proj/kernel", (None, "model")),
    (r"layers_\d+/attn/(q|k|v)_proj/bias", ("model",)),
    (r"layers_\d+/attn/o_proj/kernel", ("model", None)),
    (r"layers_\d+/mlp/(gate|up)_proj/kernel", (None, "model")),
    (r"layers_\d+/mlp/(gate|up)_proj/bias", ("model",)),
    (r"layers_\d+/mlp/down_proj/kernel", ("model", None)),
    (r"layers_\d+/moe/(gate|up)_kernel", (None, None, "model")),
    (r"layers_\d+/moe/down_kernel", (None, "model", None)),
    (r"lm_head/kernel", (None, "model")),
)

_FULL, _SLIDING = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """Everything of a HF decoder config that changes the forward pass."""
  model_type: str
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  act: str
  norm: str                 # "rms" (w x) | "rms_offset" ((1 + w) x) | "layer_np" (OLMo-1)
  norm_eps: float
  norms: tuple[str, ...]    # which of attn_in / attn_out / mlp_in / mlp_out a layer has
  qk_norm: str              # "" | "head" (per head_dim) | "full" (over all heads, OLMo-2)
  qkv_bias: bool
  o_bias: bool
  mlp_bias: bool
  clip_qkv: float | None
  embed_scale: float | None
  attn_scale: float
  attn_softcap: float | None
  final_softcap: float | None
  windows: tuple[int | None, ...]      # per layer: sliding window (keys q - k < W) or None
  layer_rope: tuple[int, ...]          # per layer: index into ropes
  ropes: tuple[rope.RopeSpec, ...]
  num_experts: int
  top_k: int
  tie_embeddings: bool


def _get(cfg: Any, name: str, default: Any = None) -> Any:
  value = cfg.get(name, default) if isinstance(cfg, Mapping) else getattr(cfg, name, default)
  return default if value is None else value


def spec_from_config(cfg: Any) -> DecoderSpec:
  """Reads a HF config of one of ``MODEL_TYPES``; ValueError names what is unsupported.
  ``gemma3`` (Gemma-3 4B and larger, ``Gemma3ForConditionalGeneration``) is read as its
  ``text_config``: the features of text are the language model's."""
  mt = _get(cfg, "model_type")
  if mt not in MODEL_TYPES:
    raise ValueError(f"decoder.build got model_type {mt!r}; it implements {MODEL_TYPES}")
  multimodal = mt == "gemma3"
  if multimodal:
    cfg = _get(cfg, "text_config")
    mt = _get(cfg, "model_type", "gemma3_text")
  d = int(_get(cfg, "hidden_size"))
  heads = int(_get(cfg, "num_attention_heads"))
  kv = int(_get(cfg, "num_key_value_heads", heads))
  hd = int(_get(cfg, "head_dim", d // heads))
  if heads % kv:
    raise ValueError(f"{mt} config: num_attention_heads={heads} is not a multiple of "
                     f"num_key_value_heads={kv}")
  layers = int(_get(cfg, "num_hidden_layers"))
  gemma = mt in ("gemma", "gemma2", "gemma3_text")
  act = _get(cfg, "hidden_activation" if mt in ("gemma2", "gemma3_text") else "hidden_act",
             "gelu_pytorch_tanh" if gemma else "silu")
  common.activation(act)   # ValueError for an unknown one
  if _get(cfg, "use_bidirectional_attention", False):
    raise ValueError(f"{mt} config: use_bidirectional_attention=True is not supported")

  layer_types = _get(cfg, "layer_types")
  window = _get(cfg, "sliding_window")
  if layer_types is not None:
    layer_types = list(layer_types)[:layers]
    bad = sorted(set(layer_types) - {_FULL, _SLIDING})
    if bad:
      raise ValueError(f"{mt} config: layer_types {bad} are not supported ({_FULL}, {_SLIDING})")
    windows = tuple(int(window) if t == _SLIDING and window else None for t in layer_types)
  else:
    layer_types = [_FULL] * layers
    windows = tuple((int(window) if window and mt in ("mistral", "mixtral") else None)
                    for _ in range(layers))
  # RoPE: one spec per layer type when the config has per-type parameters (Gemma-3).
  kinds = sorted(set(layer_types))
  ropes = tuple(rope.rope_spec(cfg, hd, t) for t in kinds)
  if len(set(ropes)) == 1:
    ropes, layer_rope = ropes[:1], (0,) * layers
  else:
    layer_rope = tuple(kinds.index(t) for t in layer_types)

  norms = {"gemma2": ("attn_in", "attn_out", "mlp_in", "mlp_out"),
           "gemma3_text": ("attn_in", "attn_out", "mlp_in", "mlp_out"),
           "olmo2": ("attn_out", "mlp_out")}.get(mt, ("attn_in", "mlp_in"))
  bias = bool(_get(cfg, "attention_bias", False))
  pre_attn = _get(cfg, "query_pre_attn_scalar") if mt in ("gemma2", "gemma3_text") else None
  experts = int(_get(cfg, "num_local_experts", 0)) if mt == "mixtral" else 0
  return DecoderSpec(
      model_type=mt, vocab_size=int(_get(cfg, "vocab_size")), hidden_size=d,
      num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=hd,
      intermediate_size=int(_get(cfg, "intermediate_size")), act=act,
      norm="rms_offset" if gemma else ("layer_np" if mt == "olmo" else "rms"),
      norm_eps=1e-5 if mt == "olmo" else float(_get(cfg, "rms_norm_eps", 1e-6)),
      norms=norms,
      qk_norm={"qwen3": "head", "gemma3_text": "head", "olmo2": "full"}.get(mt, ""),
      qkv_bias=True if mt == "qwen2" else bias,
      o_bias=False if mt == "qwen2" else bias,
      mlp_bias=bool(_get(cfg, "mlp_bias", False)) if mt == "llama" else False,
      clip_qkv=float(_get(cfg, "clip_qkv")) if mt == "olmo" and _get(cfg, "clip_qkv") else None,
      embed_scale=float(np.float32(d ** 0.5)) if gemma else None,
      attn_scale=float(pre_attn) ** -0.5 if pre_attn else hd ** -0.5,
      # Gemma-3 keeps attn_logit_softcapping in its config but never applies it (HF 5).
      attn_softcap=(float(_get(cfg, "attn_logit_softcapping"))
                    if mt == "gemma2" and _get(cfg, "attn_logit_softcapping") else None),
      # Gemma3ForConditionalGeneration never soft-caps its logits (Gemma3ForCausalLM does);
      # the released Gemma-3 configs have none either way.
      final_softcap=(float(_get(cfg, "final_logit_softcapping"))
                     if mt in ("gemma2", "gemma3_text") and not multimodal
                     and _get(cfg, "final_logit_softcapping") else None),
      windows=windows, layer_rope=layer_rope, ropes=ropes,
      num_experts=experts, top_k=int(_get(cfg, "num_experts_per_tok", 0)) if experts else 0,
      tie_embeddings=bool(_get(cfg, "tie_word_embeddings", gemma)),
  )


# ----- building blocks ----------------------------------------------------------------------

class Linear(nn.Module):
  """``x @ kernel (+ bias)``, kernel [in, out] (a torch Linear's weight transposed)."""
  features: int
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    return common.dense(x, kernel, bias, self.dtype)   # [..., I] -> [..., O] float32


class Table(nn.Module):
  """The token embedding table ``embedding [V, D]`` (returned whole: looked up, and read
  again as the tied LM head)."""
  num: int
  features: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("embedding", nn.initializers.normal(0.02), (self.num, self.features))


class Norm(nn.Module):
  """RMSNorm ``w * x / rms(x)``, Gemma's ``(1 + w) * ...``, or OLMo-1's LayerNorm without
  parameters; float32 over the last axis."""
  kind: str
  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    if self.kind == "layer_np":
      mean = x.mean(-1, keepdims=True)
      var = jnp.square(x - mean).mean(-1, keepdims=True)
      return (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + self.eps)
    init = nn.initializers.zeros if self.kind == "rms_offset" else nn.initializers.ones
    w = self.param("scale", init, (x.shape[-1],))
    return y * (1.0 + w) if self.kind == "rms_offset" else w * y


def attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: float,
              dtype: Any, softcap: float | None = None, bias: jax.Array | None = None) -> jax.Array:
  """Grouped-query softmax attention, the XLA path.

  q: [B, T, N, hd]; k, v: [B, S, K, hd] with N a multiple of K (query head n reads kv
  head n // (N / K), HF's repeat_kv); allowed: [B, T, S] bool; bias: [B, N, T or 1, S]
  float32 added after the scale and soft-cap (BLOOM's ALiBi). -> [B, T, N, hd] float32.
  """
  b, t, n, hd = q.shape
  kh = k.shape[2]
  qg = q.reshape(b, t, kh, n // kh, hd)
  prec = common.precision(dtype)
  # [B, T, K, G, hd] x [B, S, K, hd] -> [B, K, G, T, S]
  logits = jnp.einsum("btkgd,bskd->bkgts", qg.astype(dtype), k.astype(dtype),
                      precision=prec, preferred_element_type=jnp.float32) * scale
  if softcap is not None:
    logits = jnp.tanh(logits / softcap) * softcap
  if bias is not None:
    logits = logits + bias.reshape(b, kh, n // kh, bias.shape[2], bias.shape[3])
  # finfo.min, not -inf, as HF: a pad query that sees no key stays finite.
  logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  # [B, K, G, T, S] x [B, S, K, hd] -> [B, T, K, G, hd]
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(dtype), v.astype(dtype),
                   precision=prec, preferred_element_type=jnp.float32)
  return out.reshape(b, t, n, hd)


def flash_attention(q, k, v, lengths, scale, window: int | None, dtype,
                    implementation: str = "cudnn") -> jax.Array:
  """``jax.nn.dot_product_attention`` with the cuDNN (flash) kernel: memory linear in T.
  Needs right padding (real tokens first: ``lengths`` [B] int32); the arguments give the
  mask of :func:`attention` (causal, keys < length, q - k < window). A cuDNN refusal
  falls back to the XLA form of the same call, logged (``attention.py``)."""
  return attention_lib.dot_product_attention(
      q, k, v, scale=scale, dtype=dtype, impl=implementation, model="decoder",
      is_causal=True, lengths=lengths, window=window)


def allowed_mask(mask: jax.Array, window: int | None) -> jax.Array:
  """[B, T] attention mask -> [B, T, S] bool: causal, real keys, q - k < window."""
  t = mask.shape[1]
  idx = jnp.arange(t)
  ok = idx[None, :] <= idx[:, None]                     # [T, S] causal
  if window:
    ok = ok & (idx[:, None] - idx[None, :] < window)    # HF sliding_window_overlay
  return ok[None] & (mask[:, None, :] > 0)


class Attention(nn.Module):
  spec: DecoderSpec
  layer: int
  dtype: Any = jnp.float32
  impl: str = "einsum"

  @nn.compact
  def __call__(self, x, allowed, cos_sin, lengths):
    s, dt = self.spec, self.dtype
    b, t, _ = x.shape
    q = Linear(s.num_heads * s.head_dim, s.qkv_bias, dt, name="q_proj")(x)
    k = Linear(s.num_kv_heads * s.head_dim, s.qkv_bias, dt, name="k_proj")(x)
    v = Linear(s.num_kv_heads * s.head_dim, s.qkv_bias, dt, name="v_proj")(x)
    if s.clip_qkv is not None:   # OLMo-1
      q, k, v = (jnp.clip(a, -s.clip_qkv, s.clip_qkv) for a in (q, k, v))
    if s.qk_norm == "full":      # OLMo-2: over all heads, before the split
      q = Norm(s.norm, s.norm_eps, name="q_norm")(q)
      k = Norm(s.norm, s.norm_eps, name="k_norm")(k)
    q = q.reshape(b, t, s.num_heads, s.head_dim)
    k = k.reshape(b, t, s.num_kv_heads, s.head_dim)
    v = v.reshape(b, t, s.num_kv_heads, s.head_dim)
    if s.qk_norm == "head":      # Qwen3, Gemma-3: per head, before RoPE
      q = Norm(s.norm, s.norm_eps, name="q_norm")(q)
      k = Norm(s.norm, s.norm_eps, name="k_norm")(k)
    cos, sin = cos_sin
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    window = s.windows[self.layer]
    if self.impl == "cudnn":
      out = flash_attention(q, k, v, lengths, s.attn_scale, window, dt)
    elif self.impl == "xla":   # the mask of the einsum form, whole
      out = attention_lib.dot_product_attention(
          q, k, v, scale=s.attn_scale, dtype=dt, impl="xla", model="decoder",
          mask=allowed[window][:, None])
    else:
      attention_lib.record("decoder", "einsum")
      out = attention(q, k, v, allowed[window], s.attn_scale, dt, s.attn_softcap)
    return Linear(s.hidden_size, s.o_bias, dt, name="o_proj")(out.reshape(b, t, -1))


class MLP(nn.Module):
  """``down(act(gate(x)) * up(x))``: SwiGLU (silu) / GeGLU (gelu_pytorch_tanh)."""
  spec: DecoderSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = self.spec
    gate = Linear(s.intermediate_size, s.mlp_bias, self.dtype, name="gate_proj")(x)
    up = Linear(s.intermediate_size, s.mlp_bias, self.dtype, name="up_proj")(x)
    return Linear(s.hidden_size, s.mlp_bias, self.dtype, name="down_proj")(
        common.activation(s.act)(gate) * up)


def route(router_logits: jax.Array, top_k: int) -> jax.Array:
  """Mixtral's router (HF ``MixtralTopKRouter``): softmax over experts in float32, the
  top-k probabilities renormalised to sum to 1, zero for the other experts.
  router_logits [..., E] -> weights [..., E] float32."""
  probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
  top, idx = jax.lax.top_k(probs, top_k)                      # [..., k]; ties: lower index
  top = top / jnp.sum(top, axis=-1, keepdims=True)
  return jnp.sum(jax.nn.one_hot(idx, probs.shape[-1], dtype=jnp.float32) * top[..., None],
                 axis=-2)


class MoE(nn.Module):
  """Mixtral's sparse MoE block. Every expert runs on every token and the outputs are
  weighted by :func:`route` (zero outside the top-k): the same sum as HF's per-expert
  gather (E / k times the matmul work, in exchange for dense, shardable matmuls)."""
  spec: DecoderSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s, dt = self.spec, self.dtype
    e, d, i = s.num_experts, s.hidden_size, s.intermediate_size
    weights = route(Linear(e, False, dt, name="router")(x), s.top_k)   # [B, T, E]
    init = nn.initializers.normal(0.02)
    gate_k = self.param("gate_kernel", init, (e, d, i))
    up_k = self.param("up_kernel", init, (e, d, i))
    down_k = self.param("down_kernel", init, (e, i, d))
    prec = common.precision(dt)
    xe = x.astype(dt)
    # [B, T, D] x [E, D, I] -> [B, T, E, I]
    gate = jnp.einsum("btd,edi->btei", xe, gate_k.astype(dt), precision=prec,
                      preferred_element_type=jnp.float32)
    up = jnp.einsum("btd,edi->btei", xe, up_k.astype(dt), precision=prec,
                    preferred_element_type=jnp.float32)
    h = common.activation(s.act)(gate) * up * weights[..., None]
    # [B, T, E, I] x [E, I, D] -> [B, T, D] (sum over experts)
    return jnp.einsum("btei,eid->btd", h.astype(dt), down_k.astype(dt), precision=prec,
                      preferred_element_type=jnp.float32)


class Layer(nn.Module):
  spec: DecoderSpec
  layer: int
  dtype: Any = jnp.float32
  impl: str = "einsum"

  @nn.compact
  def __call__(self, x, allowed, cos_sin, lengths):
    s = self.spec

    def norm(role, y):
      return Norm(s.norm, s.norm_eps, name=f"{role}_norm")(y) if role in s.norms else y

    h = Attention(s, self.layer, self.dtype, self.impl, name="attn")(
        norm("attn_in", x), allowed, cos_sin, lengths)
    x = x + norm("attn_out", h)
    ffn = (MoE(s, self.dtype, name="moe") if s.num_experts else MLP(s, self.dtype, name="mlp"))
    return x + norm("mlp_out", ffn(norm("mlp_in", x)))


class Decoder(nn.Module):
  """HF ``*ForCausalLM`` forward with every hidden state pooled (module docstring)."""
  spec: DecoderSpec
  dtype: Any = jnp.float32
  # attention.IMPLS: "einsum" (``attention``), "xla" / "cudnn" (jax.nn.dot_product_attention;
  # cuDNN's flash kernel needs right padding); ``select_attention`` chooses.
  impl: str = "einsum"

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, pool: str = "",
               scores: bool = False):
    s = self.spec
    pool = pool or POOLS[0]
    if pool not in POOLS:
      raise ValueError(f"unknown decoder pool {pool!r}; choose one of {POOLS}")
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError("the decoder expects input_ids and attention_mask of the same shape "
                       f"[B, T]; got {input_ids.shape} and {attention_mask.shape}")
    # Pad ids may lie past the vocabulary (an added "[PAD]"): JAX's gather would give NaN
    # rows, which 0-weight attention still spreads (0 * NaN); they are masked anyway.
    input_ids = jnp.where(attention_mask > 0, input_ids, 0)
    table = Table(s.vocab_size, s.hidden_size, name="embed_tokens")()   # [V, D]
    x = jnp.take(table, input_ids, axis=0).astype(jnp.float32)
    if s.embed_scale is not None:   # Gemma: sqrt(hidden_size), as a float32 scalar
      x = x * s.embed_scale
    mask = attention_mask.astype(jnp.int32)
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)   # real-token positions
    tables = [rope.cos_sin(r, positions, lengths) for r in s.ropes]
    allowed = ({w: allowed_mask(mask, w) for w in set(s.windows)} if self.impl != "cudnn"
               else None)
    hidden = [x]
    for i in range(s.num_layers):
      x = Layer(s, i, self.dtype, self.impl, name=f"layers_{i}")(
          x, allowed, tables[s.layer_rope[i]], lengths)
      hidden.append(x)
    x = Norm(s.norm, s.norm_eps, name="final_norm")(x)
    hidden[-1] = x   # HF: the last hidden state is after the final norm
    feats = tuple(common.pool_tokens(h, mask, pool) for h in hidden)
    if not scores:
      return feats
    if s.tie_embeddings:
      logits = common.dense(x, table.T, None, self.dtype)   # [B, T, D] x [D, V]
    else:
      logits = Linear(s.vocab_size, False, self.dtype, name="lm_head")(x)
    if s.final_softcap is not None:   # Gemma-2
      logits = jnp.tanh(logits / s.final_softcap) * s.final_softcap
    return feats, lm_scores.token_nats(logits, input_ids, mask)


def build(hf_config: Any, dtype: Any = jnp.float32) -> Decoder:
  """The Flax decoder for a HF config; ``dtype`` = matmul operands (float32 / bfloat16).
  Its attention is chosen for the default devices (``select_attention``; ``encoders.load``
  chooses again for the devices of its mesh)."""
  dtype = common.compute_dtype(dtype, "decoder")
  return select_attention(Decoder(spec_from_config(hf_config), dtype=dtype),
                          jax.devices()[0].platform)


def select_attention(module: Decoder, platform: str, requested: str = "auto") -> Decoder:
  """The module with the attention for ``platform`` (registry contract;
  ``attention.choose``): on GPUs in bf16 cuDNN's flash kernel (memory linear in T),
  XLA's fused op on TPUs / fp32 GPUs, the einsum form on CPUs and for Gemma-2's logit
  soft-capping (which jax.nn.dot_product_attention lacks)."""
  s = module.spec
  impl = attention_lib.resolve(requested, platform, module.dtype, head_dim=s.head_dim,
                               einsum_only=s.attn_softcap is not None, what=s.model_type)
  return module.clone(impl=impl)


def init_shapes(module: Decoder) -> Any:
  """The module's parameter shapes, lm_head included (``scores=True``)."""
  ids = jnp.zeros((1, 8), jnp.int32)
  return jax.eval_shape(lambda: module.init(jax.random.key(0), ids, ids + 1, scores=True))


# ----- conversion ----------------------------------------------------------------------------

# Known and deliberately unused: RoPE buffers old checkpoints stored; with tied embeddings
# an lm_head copy of the token table some checkpoints keep anyway.
_IGNORED = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)


def convert(state_dict: Mapping[str, Any], hf_config: Any) -> dict[str, Any]:
  """HF ``*ForCausalLM`` checkpoint -> Flax params of :func:`build`, strictly.

  Matmul weights come back as ``lazy`` views (torch ``[out, in]`` read as ``[in, out]``;
  Mixtral's experts stacked), so ``partition.place`` reads each device's slice only;
  norms are float32 numpy. Keys with and without the ``model.`` prefix are accepted.
  Mixtral experts: the hub layout (``block_sparse_moe.experts.E.w1/w2/w3``, what
  ``save_pretrained`` writes) or transformers 5's fused ``mlp.experts.gate_up_proj``.
  Raises ``convert.ConversionError`` listing missing / unexpected / misshaped keys.
  """
  s = spec_from_config(hf_config)
  ignore = _IGNORED + ((r"lm_head\.weight",) if s.tie_embeddings else ())
  prefixes = ("model.",)
  if _get(hf_config, "model_type") == "gemma3":
    # Gemma3ForConditionalGeneration: the language model under "language_model.model."
    # (hub / save_pretrained) or "model.language_model." (transformers 5 in memory);
    # the vision tower and projector are not part of the text features.
    prefixes = ("language_model.model.", "model.language_model.", "language_model.", "model.")
    ignore += (r"vision_tower\..*", r"multi_modal_projector\..*")
  sd = StateDict(state_dict, prefixes=prefixes, ignore=ignore)
  d, hd = s.hidden_size, s.head_dim

  def linear(name, n_in, n_out, bias):
    p = {"kernel": lazy.Permuted(sd.view(f"{name}.weight", (n_out, n_in)))}
    if bias:
      p["bias"] = sd.take(f"{name}.bias", (n_out,))
    return p

  def norm(name, n):
    return {"scale": sd.take(f"{name}.weight", (n,))}

  hf_norm = {"attn_in": "input_layernorm",
             "attn_out": "post_attention_layernorm",
             "mlp_in": ("pre_feedforward_layernorm" if "attn_out" in s.norms
                        else "post_attention_layernorm"),
             "mlp_out": "post_feedforward_layernorm"}
  params: dict[str, Any] = {"embed_tokens": {"embedding": sd.view("embed_tokens.weight",
                                                                  (s.vocab_size, d))}}
  for i in range(s.num_layers):
    p = f"layers.{i}"
    attn = {"q_proj": linear(f"{p}.self_attn.q_proj", d, s.num_heads * hd, s.qkv_bias),
            "k_proj": linear(f"{p}.self_attn.k_proj", d, s.num_kv_heads * hd, s.qkv_bias),
            "v_proj": linear(f"{p}.self_attn.v_proj", d, s.num_kv_heads * hd, s.qkv_bias),
            "o_proj": linear(f"{p}.self_attn.o_proj", s.num_heads * hd, d, s.o_bias)}
    if s.qk_norm:
      nq, nk = (hd, hd) if s.qk_norm == "head" else (s.num_heads * hd, s.num_kv_heads * hd)
      attn["q_norm"], attn["k_norm"] = norm(f"{p}.self_attn.q_norm", nq), norm(
          f"{p}.self_attn.k_norm", nk)
    layer: dict[str, Any] = {"attn": attn}
    if s.norm != "layer_np":
      for role in s.norms:
        layer[f"{role}_norm"] = norm(f"{p}.{hf_norm[role]}", d)
    if s.num_experts:
      layer["moe"] = _convert_experts(sd, f"{p}", s)
    else:
      i_sz = s.intermediate_size
      layer["mlp"] = {"gate_proj": linear(f"{p}.mlp.gate_proj", d, i_sz, s.mlp_bias),
                      "up_proj": linear(f"{p}.mlp.up_proj", d, i_sz, s.mlp_bias),
                      "down_proj": linear(f"{p}.mlp.down_proj", i_sz, d, s.mlp_bias)}
    params[f"layers_{i}"] = layer
  if s.norm != "layer_np":
    params["final_norm"] = norm("norm", d)
  if not s.tie_embeddings:
    params["lm_head"] = {"kernel": lazy.Permuted(sd.view("lm_head.weight", (s.vocab_size, d)))}
  sd.finish(f"{s.model_type} checkpoint (num_hidden_layers={s.num_layers}, hidden_size={d})")
  return params


def _convert_experts(sd: StateDict, prefix: str, s: DecoderSpec) -> dict[str, Any]:
  e, d, i = s.num_experts, s.hidden_size, s.intermediate_size
  fused = f"{prefix}.mlp.experts.gate_up_proj"
  if fused in sd:   # transformers 5's in-memory layout
    gate_up = sd.view(fused, (e, 2 * i, d))
    down = sd.view(f"{prefix}.mlp.experts.down_proj", (e, d, i))
    return {"router": {"kernel": lazy.Permuted(sd.view(f"{prefix}.mlp.gate.weight", (e, d)))},
            "gate_kernel": lazy.Permuted(lazy.Gathered(gate_up, range(i), 1), (0, 2, 1)),
            "up_kernel": lazy.Permuted(lazy.Gathered(gate_up, range(i, 2 * i), 1), (0, 2, 1)),
            "down_kernel": lazy.Permuted(down, (0, 2, 1))}
  moe = f"{prefix}.block_sparse_moe"

  def stacked(w, shape):
    return lazy.Stacked([lazy.Permuted(sd.view(f"{moe}.experts.{j}.{w}.weight", shape))
                         for j in range(e)])

  return {"router": {"kernel": lazy.Permuted(sd.view(f"{moe}.gate.weight", (e, d)))},
          "gate_kernel": stacked("w1", (i, d)),   # [E, D, I]
          "up_kernel": stacked("w3", (i, d)),
          "down_kernel": stacked("w2", (d, i))}   # [E, I, D]
