"""Hugging Face ViT-style checkpoints in the ViT family (``vit.py``): ``ViTModel``,
``ViTMAEModel``, ``CLIPVisionModel`` (and the vision tower of ``CLIPModel``),
``Dinov2WithRegistersModel``; plus the DINOv2 layer layout that ``dinov2.py`` shares.

Features follow the ViT family (the Platonic release): one per block, the last before
the final norm, equal to HF's ``hidden_states[1:]``; the ``pre_logits`` pool of the last
layer is HF's ``last_hidden_state[:, 0]`` (ViT, ViTMAE, Dinov2WithRegisters) or
``pooler_output`` (CLIP: ``post_layernorm`` of the class token). Position embeddings are
resampled for other input sizes as HF's ``interpolate_pos_encoding=True`` does (bicubic;
antialiased for Dinov2WithRegisters only, as transformers does).

ViTMAE runs every patch (no random masking at inference): HF's ViTMAEModel with
``mask_ratio=0`` gives the same features up to the order of the patch tokens (it
shuffles them by its noise), so the class token and the patch mean are equal.

Preprocessing is the checkpoint's ``preprocessor_config.json`` (``preprocess.py``).
Heads are known and unused: ViT's ``pooler`` (dense + tanh) and ``classifier``,
ViTMAE's pre-training ``decoder``, CLIPModel's text tower and projections.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import vit
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("vit", "vit_mae", "clip_vision_model", "clip", "dinov2_with_registers")
MODALITY = vit.MODALITY
POOLS = vit.POOLS
CPU_MICRO_BATCH = vit.CPU_MICRO_BATCH
PARTITION_RULES = vit.PARTITION_RULES
cpu_variant = vit.cpu_variant
select_attention = vit.select_attention   # attention kernel for the mesh (attention.py)


def _square(value, what: str, name: str) -> int:
  if isinstance(value, (tuple, list)):
    if value[0] != value[1]:
      raise ValueError(f"{name}: {what} {value} is not square; only square {what}s are supported")
    value = value[0]
  return int(value)


def _image_size(cfg) -> tuple[int, int]:
  s = cfg.image_size
  return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))


def vision_config(hf_config):
  """CLIPModel's vision tower config; every other config as it is."""
  return hf_config.vision_config if hf_config.model_type == "clip" else hf_config


def dinov2_mlp(cfg) -> tuple[int, bool, str]:
  """(hidden width, gated, activation) of a HF Dinov2 / Dinov2WithRegisters MLP, as HF
  computes them (SwiGLU: ``(int(hidden * 2 / 3) + 7) // 8 * 8``, SiLU)."""
  hidden = int(cfg.hidden_size * cfg.mlp_ratio)
  if cfg.use_swiglu_ffn:
    return (int(hidden * 2 / 3) + 7) // 8 * 8, True, "silu"
  return hidden, False, cfg.hidden_act


def spec(hf_config) -> vit.ViTSpec:
  """The ViTSpec of a HF ViT / ViTMAE / CLIP(Vision) / Dinov2(WithRegisters) config."""
  cfg = vision_config(hf_config)
  t = cfg.model_type
  name = f"HF {type(cfg).__name__}"
  if getattr(cfg, "num_channels", 3) != 3:
    raise ValueError(f"{name}: num_channels={cfg.num_channels}; only RGB is supported")
  common = dict(dim=cfg.hidden_size, depth=cfg.num_hidden_layers,
                num_heads=cfg.num_attention_heads,
                patch_size=_square(cfg.patch_size, "patch_size", name), image_size=_image_size(cfg),
                eps=cfg.layer_norm_eps, name=name)
  if t in ("vit", "vit_mae"):
    return vit.ViTSpec(**common, mlp_hidden=cfg.intermediate_size, act=cfg.hidden_act,
                       qkv_bias=bool(cfg.qkv_bias), pos_antialias=False).check()
  if t == "clip_vision_model":
    return vit.ViTSpec(**common, mlp_hidden=cfg.intermediate_size, act=cfg.hidden_act,
                       patch_bias=False, pre_norm=True, pos_antialias=False).check()
  if t in ("dinov2", "dinov2_with_registers"):
    hidden, gated, act = dinov2_mlp(cfg)
    return vit.ViTSpec(**common, mlp_hidden=hidden, gated=gated, act=act,
                       qkv_bias=bool(getattr(cfg, "qkv_bias", True)), layer_scale=True,
                       reg_tokens=int(getattr(cfg, "num_register_tokens", 0)),
                       pos_antialias=t == "dinov2_with_registers").check()
  raise ValueError(f"{name}: model_type {t!r} is not a ViT-style HF model")


def build(hf_config, dtype=jnp.float32) -> vit.VisionTransformer:
  return vit.build(spec(hf_config), dtype)


# HF layer layouts: our block parameter -> the HF submodule name within a layer.
_LAYOUTS = {
    "vit": dict(layers="encoder.layer", norm1="layernorm_before", norm2="layernorm_after",
                q="attention.attention.query", k="attention.attention.key",
                v="attention.attention.value", proj="attention.output.dense",
                fc1="intermediate.dense", fc2="output.dense", final="layernorm"),
    "clip": dict(layers="encoder.layers", norm1="layer_norm1", norm2="layer_norm2",
                 q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                 proj="self_attn.out_proj", fc1="mlp.fc1", fc2="mlp.fc2", final="post_layernorm"),
    "dinov2": dict(layers="encoder.layer", norm1="norm1", norm2="norm2",
                   q="attention.attention.query", k="attention.attention.key",
                   v="attention.attention.value", proj="attention.output.dense",
                   fc1="mlp.fc1", fc2="mlp.fc2", final="layernorm",
                   ls1="layer_scale1.lambda1", ls2="layer_scale2.lambda1"),
}


def convert_layers(sd: StateDict, s: vit.ViTSpec, layout: dict) -> dict:
  """The blocks and final norm of a HF layer layout -> {"blocks_i": ..., "norm": ...}."""
  d = s.dim
  fc1_out = 2 * s.mlp_hidden if s.gated else s.mlp_hidden
  fc1, fc2 = layout["fc1"], layout["fc2"]
  if s.gated:   # HF Dinov2SwiGLUFFN: weights_in = [gate | up], weights_out
    fc1, fc2 = "mlp.weights_in", "mlp.weights_out"

  def norm(name):
    return {"scale": sd.take(f"{name}.weight", (d,)), "bias": sd.take(f"{name}.bias", (d,))}

  def dense(name, n_in, n_out):
    return {"kernel": sd.take(f"{name}.weight", (n_out, n_in)).T,   # torch [out, in] -> [in, out]
            "bias": sd.take(f"{name}.bias", (n_out,))}

  out = {}
  for i in range(s.depth):
    p = f"{layout['layers']}.{i}"
    qkv = [sd.take(f"{p}.{layout[n]}.weight", (d, d)).T for n in ("q", "k", "v")]
    attn = {"qkv": {"kernel": np.concatenate(qkv, axis=1)},
            "proj": dense(f"{p}.{layout['proj']}", d, d)}
    if s.qkv_bias:
      attn["qkv"]["bias"] = np.concatenate([sd.take(f"{p}.{layout[n]}.bias", (d,))
                                            for n in ("q", "k", "v")])
    block = {"norm1": norm(f"{p}.{layout['norm1']}"), "attn": attn,
             "norm2": norm(f"{p}.{layout['norm2']}"),
             "mlp": {"fc1": dense(f"{p}.{fc1}", d, fc1_out),
                     "fc2": dense(f"{p}.{fc2}", s.mlp_hidden, d)}}
    if s.layer_scale:
      block["ls1"] = sd.take(f"{p}.{layout['ls1']}", (d,))
      block["ls2"] = sd.take(f"{p}.{layout['ls2']}", (d,))
    out[f"blocks_{i}"] = block
  out["norm"] = norm(layout["final"])
  return out


def convert_embeddings(sd: StateDict, s: vit.ViTSpec, clip: bool) -> dict:
  """Patch embedding, position table and prefix tokens of a HF ViT-style model. The
  class token's position embedding is folded into it (registers have none)."""
  d, p, c = s.dim, s.patch_size, s.in_chans
  grid = s.grid[0] * s.grid[1]
  if clip:
    w = sd.take("embeddings.patch_embedding.weight", (d, c, p, p))
    pos = sd.take("embeddings.position_embedding.weight", (1 + grid, d))
    tokens = [sd.take("embeddings.class_embedding", (d,))]
  else:
    w = sd.take("embeddings.patch_embeddings.projection.weight", (d, c, p, p))
    pos = sd.take("embeddings.position_embeddings", (1, 1 + grid, d))[0]
    tokens = [sd.take("embeddings.cls_token", (1, 1, d))]
    if s.reg_tokens:
      tokens.append(sd.take("embeddings.register_tokens", (1, s.reg_tokens, d)))
  out = {"patch_embed": {"kernel": vit.patch_kernel(w, s)},
         "pos_embed": pos[1:], "prefix": vit.prefix_tokens(tokens, pos[:1])}
  if s.patch_bias:
    out["patch_embed"]["bias"] = sd.take("embeddings.patch_embeddings.projection.bias", (d,))
  return out


# transformers 5 renames checkpoints in memory (conversion_mapping.py) but saves and
# publishes the original names; accept the in-memory names too, mapped back to originals.
_NEW_TO_ORIGINAL = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.down_proj.", ".mlp.weights_out."),
)


def dinov2_original_names(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A Dinov2(WithRegisters) state dict with transformers 5's in-memory names mapped
  back to the published ones (the SwiGLU gate / up projections concatenated)."""
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
  """HF ViT / ViTMAE / CLIP(Vision) / Dinov2(WithRegisters) weights -> vit params (strict)."""
  t = hf_config.model_type
  s = spec(hf_config)
  if t in ("vit", "vit_mae"):
    sd = StateDict(state_dict, prefixes=("vit.",),
                   ignore=(r"pooler\..*", r"classifier\..*", r"decoder\..*",
                           r"embeddings\.mask_token"))
    layout = _LAYOUTS["vit"]
  elif t in ("clip", "clip_vision_model"):
    sd = StateDict(state_dict, prefixes=("vision_model.",),
                   ignore=(r"text_model\..*", r"text_projection\..*", r"visual_projection\..*",
                           r"logit_scale", r"embeddings\.position_ids"))
    layout = _LAYOUTS["clip"]
  else:
    sd = StateDict(dinov2_original_names(state_dict), prefixes=("dinov2.",),
                   ignore=(r"embeddings\.mask_token", r"classifier\..*"))
    layout = _LAYOUTS["dinov2"]
  params = convert_embeddings(sd, s, clip=layout is _LAYOUTS["clip"])
  if s.pre_norm:
    params["norm_pre"] = {"scale": sd.take("pre_layrnorm.weight", (s.dim,)),
                          "bias": sd.take("pre_layrnorm.bias", (s.dim,))}
  params.update(convert_layers(sd, s, layout))
  sd.finish(f"{s.name} checkpoint")
  return params
