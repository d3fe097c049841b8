"""GPT-2 (every size) as a frozen Flax text encoder, numerically matching HF ``GPT2Model``.

Architecture module of the encoder registry (contract in ``registry.py``):

    module = build(hf_config, dtype)           # flax.linen.Module
    feats = module.apply({"params": params}, input_ids, attention_mask, pool="mean")
    # input_ids, attention_mask: [B, T] int32 (right padding; 1 = real token)
    # feats: tuple of L + 1 arrays [B, D] float32 -- HF ``hidden_states`` semantics:
    #   feats[0] = token + position embeddings, feats[i] = output of block i,
    #   feats[L] = ln_f(output of block L) (== HF ``last_hidden_state``), each pooled.
    params = convert(state_dict, hf_config)    # strict HF -> Flax conversion

Numerics follow ``transformers.models.gpt2.modeling_gpt2`` (5.x): learned absolute
positions ``arange(T)`` (what HF computes when no ``position_ids`` are given, whatever the
padding), causal attention with the key padding mask, HF's Conv1D layout (``y = x @ W + b``
with ``W [in, out]``, so weights copy without a transpose), the config's activation
(``gelu_new`` for the released checkpoints), layer-norm epsilon, ``n_inner``,
``scale_attn_weights``, ``scale_attn_by_inverse_layer_idx`` and ``reorder_and_upcast_attn``.

Mixed precision (``dtype=jnp.bfloat16``): matmul operands are bf16 with float32
accumulation and float32 results (``preferred_element_type``), while the residual stream,
layer norms, softmax and pooling stay float32 -- the same roundings as PyTorch
``autocast(bfloat16)``. Plain bf16-in/bf16-out dots would round the accumulator and, on
XLA:CPU, miss the bf16 matrix instructions (AMX / AVX512-BF16; docs/design.md, pitfalls). Kernels may be passed already
cast to bf16 (``load`` does); casting inside is then a no-op.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from platonic_jax.encoders import attention, common, decoder, lm_scores
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("gpt2",)
MODALITY = "text"
SCORES = True   # next-token losses for Encoder.bits_per_byte (GPT2LMHeadModel's head)
# "mean": masked mean over real tokens (the Platonic protocol, Huh et al. 2024, appendix);
# "last": the last real token (what a causal LM "summarises" into).
POOLS = ("mean", "last")

# XLA:CPU: micro-batches of 8 sequences (encoders/core.py; see dinov2.py): +3% at batch
# 16 x 80 tokens on the project's 2-core CPU; smaller ones lose to per-step overhead.
CPU_MICRO_BATCH = 8

# Megatron-style tensor parallelism over the mesh's "model" axis (encoders/partition.py):
# the first matmul of attention / MLP split by output columns, the second by input rows,
# so each block needs one all-reduce per matmul pair; the token table split by rows.
PARTITION_RULES = (
    (r"wte/embedding", ("model", None)),
    (r"h_\d+/(attn/c_attn|mlp/c_fc)/kernel", (None, "model")),
    (r"h_\d+/(attn/c_attn|mlp/c_fc)/bias", ("model",)),
    (r"h_\d+/(attn|mlp)/c_proj/kernel", ("model", None)),
)

# Checkpoint keys that are known and deliberately unused (regexes on names without the
# "transformer." prefix): the causal-mask buffers old checkpoints stored, and the task
# heads of GPT2LMHeadModel / DoubleHeads / SequenceClassification / QA / TokenClassification,
# which are not part of GPT2Model's hidden states.
_IGNORED = (r"h\.\d+\.attn\.(bias|masked_bias)", r"lm_head\..*", r"multiple_choice_head\..*",
            r"score\..*", r"qa_outputs\..*", r"classifier\..*")
# Cross-attention weights exist when add_cross_attention=True but GPT2Model only uses them
# with encoder_hidden_states, which a feature extractor never passes.
_IGNORED_CROSS = (r"h\.\d+\.crossattention\..*", r"h\.\d+\.ln_cross_attn\..*")


@dataclasses.dataclass(frozen=True)
class GPT2Spec:
  """The fields of a HF ``GPT2Config`` that change GPT2Model's numerics."""
  vocab_size: int
  n_positions: int
  n_embd: int
  n_layer: int
  n_head: int
  n_inner: int
  activation_function: str
  layer_norm_epsilon: float
  scale_attn_weights: bool
  scale_attn_by_inverse_layer_idx: bool
  reorder_and_upcast_attn: bool
  add_cross_attention: bool
  tie_word_embeddings: bool


def _field(cfg: Any, name: str, default: Any) -> Any:
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def spec_from_config(hf_config: Any) -> GPT2Spec:
  """Reads and validates a ``GPT2Config`` (or its ``config.json`` dict).

  Raises ValueError naming the field for configurations GPT2Model cannot run or that
  this module does not implement.
  """
  model_type = _field(hf_config, "model_type", "gpt2")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"gpt2.build got a config of model_type {model_type!r}; it implements "
                     f"{MODEL_TYPES}")
  n_embd = int(_field(hf_config, "n_embd", _field(hf_config, "hidden_size", 768)))
  n_head = int(_field(hf_config, "n_head", _field(hf_config, "num_attention_heads", 12)))
  if n_embd % n_head:
    raise ValueError(f"GPT-2 config: n_embd={n_embd} is not divisible by n_head={n_head}")
  n_inner = _field(hf_config, "n_inner", None)
  act = _field(hf_config, "activation_function", "gelu_new")
  try:
    common.activation(act)
  except ValueError as e:
    raise ValueError(f"GPT-2 config: activation_function={act!r}: {e}") from None
  return GPT2Spec(
      vocab_size=int(_field(hf_config, "vocab_size", 50257)),
      n_positions=int(_field(hf_config, "n_positions",
                             _field(hf_config, "max_position_embeddings", 1024))),
      n_embd=n_embd,
      n_layer=int(_field(hf_config, "n_layer", _field(hf_config, "num_hidden_layers", 12))),
      n_head=n_head,
      n_inner=int(n_inner) if n_inner is not None else 4 * n_embd,
      activation_function=act,
      layer_norm_epsilon=float(_field(hf_config, "layer_norm_epsilon", 1e-5)),
      scale_attn_weights=bool(_field(hf_config, "scale_attn_weights", True)),
      scale_attn_by_inverse_layer_idx=bool(
          _field(hf_config, "scale_attn_by_inverse_layer_idx", False)),
      reorder_and_upcast_attn=bool(_field(hf_config, "reorder_and_upcast_attn", False)),
      add_cross_attention=bool(_field(hf_config, "add_cross_attention", False)),
      tie_word_embeddings=bool(_field(hf_config, "tie_word_embeddings", True)),
  )


class Dense(nn.Module):
  """HF Conv1D: ``y = x @ kernel + bias`` with ``kernel [in, out]``; float32 result."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return common.dense(x, kernel, bias, self.dtype)  # [B, T, D] -> [B, T, E] float32


class Embed(nn.Module):
  """A lookup table ``embedding [num, D]``; rows are gathered, then made float32."""
  num: int
  features: int

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    table = self.param("embedding", nn.initializers.normal(0.02), (self.num, self.features))
    return jnp.take(table, ids, axis=0).astype(jnp.float32)


class LayerNorm(nn.Module):
  """torch.nn.LayerNorm over the last axis in float32 (``common.layer_norm``: two-pass
  variance; the fast E[x^2]-E[x]^2 form loses digits). Params ``scale``, ``bias`` [D]."""
  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    return common.layer_norm(x, self.param("scale", nn.initializers.ones, (d,)),
                             self.param("bias", nn.initializers.zeros, (d,)), self.eps)


def _layer_norm(spec: GPT2Spec, name: str) -> LayerNorm:
  return LayerNorm(spec.layer_norm_epsilon, name=name)


class Attention(nn.Module):
  """Causal multi-head self-attention of GPT-2 block ``layer_idx``; ``impl`` one of
  ``attention.IMPLS`` (``select_attention``)."""
  spec: GPT2Spec
  layer_idx: int
  dtype: Any = jnp.float32
  impl: str = "einsum"

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array, lengths: jax.Array) -> jax.Array:
    """x: [B, T, D] float32; allowed: [B, 1, T, T] bool (query i may see key j);
    lengths: [B] int32 real tokens (right padding)."""
    spec = self.spec
    b, t, d = x.shape
    h = spec.n_head
    qkv = Dense(3 * d, self.dtype, name="c_attn")(x)  # [B, T, 3D]: q | k | v
    q, k, v = (a.reshape(b, t, h, d // h) for a in jnp.split(qkv, 3, axis=-1))
    scale = 1.0
    if spec.scale_attn_weights:
      scale = (d // h) ** -0.5
    if spec.scale_attn_by_inverse_layer_idx:
      scale /= float(self.layer_idx + 1)
    if self.impl != "einsum":
      # The same mask two ways: the XLA form takes it whole; cuDNN builds it from the
      # causal flag and the lengths (right padding), so it never reads a [T, T] mask.
      cudnn = self.impl == "cudnn"
      out = attention.dot_product_attention(
          q, k, v, scale=scale, dtype=self.dtype, impl=self.impl, model="gpt2",
          mask=None if cudnn else allowed, is_causal=cudnn, lengths=lengths if cudnn else None)
      return Dense(d, self.dtype, name="c_proj")(out.reshape(b, t, d))
    attention.record("gpt2", "einsum")
    # reorder_and_upcast_attn: HF computes q k^T from float32 operands even under autocast.
    qk_dtype = jnp.float32 if spec.reorder_and_upcast_attn else self.dtype
    # [B, Tq, H, hd] x [B, Tk, H, hd] -> [B, H, Tq, Tk]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(qk_dtype), k.astype(qk_dtype),
                        preferred_element_type=jnp.float32, precision=common.precision(qk_dtype))
    # finfo.min, not -inf, as HF: a row with no visible key (padding) stays finite.
    logits = jnp.where(allowed, logits * scale, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)  # float32 softmax
    # [B, H, Tq, Tk] x [B, Tk, H, hd] -> [B, Tq, H, hd]
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v.astype(self.dtype),
                     preferred_element_type=jnp.float32, precision=common.precision(self.dtype))
    return Dense(d, self.dtype, name="c_proj")(out.reshape(b, t, d))


class MLP(nn.Module):
  spec: GPT2Spec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Dense(self.spec.n_inner, self.dtype, name="c_fc")(x)
    y = common.activation(self.spec.activation_function)(y)  # float32 activation, as autocast
    return Dense(self.spec.n_embd, self.dtype, name="c_proj")(y)


class Block(nn.Module):
  """Pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(.))."""
  spec: GPT2Spec
  layer_idx: int
  dtype: Any = jnp.float32
  attn_impl: str = "einsum"

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array, lengths: jax.Array) -> jax.Array:
    x = x + Attention(self.spec, self.layer_idx, self.dtype, self.attn_impl, name="attn")(
        _layer_norm(self.spec, "ln_1")(x), allowed, lengths)
    return x + MLP(self.spec, self.dtype, name="mlp")(_layer_norm(self.spec, "ln_2")(x))


pool_tokens = common.pool_tokens   # shared with the decoder family


class GPT2(nn.Module):
  """HF ``GPT2Model`` forward with every hidden state pooled (see module docstring).
  ``attn_impl``: the attention implementation (``select_attention``)."""
  spec: GPT2Spec
  dtype: Any = jnp.float32
  attn_impl: str = "einsum"

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               pool: str = "", scores: bool = False):
    """input_ids, attention_mask: [B, T] int -> tuple of L + 1 arrays [B, D] float32;
    with ``scores`` also [B] summed next-token nats (``lm_scores.token_nats``) of
    GPT2LMHeadModel's head (tied to ``wte`` unless the config unties it)."""
    spec = self.spec
    pool = pool or POOLS[0]
    if pool not in POOLS:
      raise ValueError(f"unknown GPT-2 pool {pool!r}; choose one of {POOLS}")
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(f"GPT-2 expects input_ids and attention_mask of the same shape [B, T]; "
                       f"got {input_ids.shape} and {attention_mask.shape}")
    b, t = input_ids.shape
    if t > spec.n_positions:
      raise ValueError(f"sequence length {t} exceeds GPT-2's n_positions={spec.n_positions}; "
                       f"tokenize with max_length <= {spec.n_positions}")
    input_ids = jnp.where(attention_mask > 0, input_ids, 0)   # pad ids past the vocab
    # Positions arange(T) whatever the padding, as HF GPT2Model without position_ids.
    x = (Embed(spec.vocab_size, spec.n_embd, name="wte")(input_ids)
         + Embed(spec.n_positions, spec.n_embd, name="wpe")(jnp.arange(t))[None])
    causal = jnp.tril(jnp.ones((t, t), bool))
    allowed = causal[None, None] & (attention_mask[:, None, None, :] > 0)  # [B, 1, T, T]
    lengths = jnp.sum(attention_mask > 0, axis=1).astype(jnp.int32)        # [B]
    hidden = [x]
    for i in range(spec.n_layer):
      x = Block(spec, i, self.dtype, self.attn_impl, name=f"h_{i}")(x, allowed, lengths)
      hidden.append(x)
    x = hidden[-1] = _layer_norm(spec, "ln_f")(x)  # HF: the last hidden state is after ln_f
    feats = tuple(pool_tokens(h, attention_mask, pool) for h in hidden)
    if not scores:
      return feats
    if spec.tie_word_embeddings:
      table = self.variables["params"]["wte"]["embedding"]
      logits = common.dense(x, table.T, None, self.dtype)   # [B, T, D] x [D, V]
    else:
      logits = decoder.Linear(spec.vocab_size, False, self.dtype, name="lm_head")(x)
    return feats, lm_scores.token_nats(logits, input_ids, attention_mask)


def build(hf_config: Any, dtype: Any = jnp.float32) -> GPT2:
  """The Flax GPT-2 for a HF ``GPT2Config`` (or config dict); ``dtype`` = matmul operands.
  Its attention is chosen for the default devices (``encoders.load`` chooses again for
  the devices of its mesh)."""
  dtype = common.compute_dtype(dtype, "GPT-2")
  return select_attention(GPT2(spec_from_config(hf_config), dtype=dtype),
                          jax.devices()[0].platform)


def select_attention(module: GPT2, platform: str, requested: str = "auto") -> GPT2:
  """The module with the attention for ``platform`` (registry contract;
  ``attention.choose``: cuDNN flash attention for bf16 on GPUs, XLA's fused op on TPUs,
  the einsum form on CPUs). ``reorder_and_upcast_attn`` under bf16 takes q k^T from
  float32 operands, which jax.nn.dot_product_attention cannot: the einsum form."""
  s = module.spec
  bf16 = jnp.dtype(module.dtype) != jnp.float32
  impl = attention.resolve(requested, platform, module.dtype, head_dim=s.n_embd // s.n_head,
                           einsum_only=s.reorder_and_upcast_attn and bf16, what="GPT-2")
  return module.clone(attn_impl=impl)


def convert(state_dict: Mapping[str, Any], hf_config: Any) -> dict[str, Any]:
  """HF GPT-2 checkpoint ``{name: array}`` -> Flax params of :func:`build` (float32 numpy).

  Accepts GPT2Model keys (``wte.weight``, ``h.0.attn.c_attn.weight``, ...) and the
  ``transformer.``-prefixed keys of GPT2LMHeadModel & co.; task heads and causal-mask
  buffers are ignored. Raises ``convert.ConversionError`` listing every missing,
  unexpected and misshaped key.
  """
  spec = spec_from_config(hf_config)
  ignore = _IGNORED + (_IGNORED_CROSS if spec.add_cross_attention else ())
  sd = StateDict(state_dict, prefixes=("transformer.",), ignore=ignore)
  d, inner = spec.n_embd, spec.n_inner

  def dense(prefix, n_in, n_out):
    # HF Conv1D stores weight [in, out]: the same layout as our kernel, no transpose.
    return {"kernel": sd.take(f"{prefix}.weight", (n_in, n_out)),
            "bias": sd.take(f"{prefix}.bias", (n_out,))}

  def norm(prefix):
    return {"scale": sd.take(f"{prefix}.weight", (d,)), "bias": sd.take(f"{prefix}.bias", (d,))}

  params: dict[str, Any] = {
      "wte": {"embedding": sd.take("wte.weight", (spec.vocab_size, d))},
      "wpe": {"embedding": sd.take("wpe.weight", (spec.n_positions, d))},
  }
  for i in range(spec.n_layer):
    p = f"h.{i}"
    params[f"h_{i}"] = {
        "ln_1": norm(f"{p}.ln_1"),
        "attn": {"c_attn": dense(f"{p}.attn.c_attn", d, 3 * d),
                 "c_proj": dense(f"{p}.attn.c_proj", d, d)},
        "ln_2": norm(f"{p}.ln_2"),
        "mlp": {"c_fc": dense(f"{p}.mlp.c_fc", d, inner),
                "c_proj": dense(f"{p}.mlp.c_proj", inner, d)},
    }
  params["ln_f"] = norm("ln_f")
  if not spec.tie_word_embeddings:   # an untied GPT2LMHeadModel head
    params["lm_head"] = {"kernel": sd.take("lm_head.weight", (spec.vocab_size, d)).T}
  sd.finish(f"GPT-2 checkpoint (n_layer={spec.n_layer}, n_embd={d})")
  return params
