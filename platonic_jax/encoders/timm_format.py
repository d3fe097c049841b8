"""timm checkpoints of Vision Transformers (hub ``timm/<name>`` or a local directory).

timm's hub format (``timm.models.save_for_hf``, read back by ``load_model_config_from_hf``):
``config.json`` with ``architecture`` (a timm model function, e.g.
``vit_base_patch16_224``), ``pretrained_cfg`` (preprocessing, input size), optionally
``num_classes`` and ``model_args`` (keyword overrides of the model function, e.g.
``{"depth": 2}`` for a non-default size), and ``model.safetensors`` with timm's key names
(``blocks.3.attn.qkv.weight``, ...). No torch or timm is needed to read it.

A timm architecture is a Python function whose defaults live in timm's code (norm
epsilon, activation, SwiGLU, register tokens are not in config.json), so the
architectures this family accepts are listed in :data:`ARCHITECTURES`, each with the
arguments its timm function passes to ``VisionTransformer``; tests build every one of
them with timm on the meta device and compare the parameter layout.

Registry contract (``registry.py``): ``MODEL_TYPES = ("timm_vit",)`` is the model type
of the :class:`TimmConfig` that :func:`read_config` returns (``core.load`` reads a
directory whose config.json has an ``architecture`` and no ``model_type`` this way).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import timm_preprocess, vit
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("timm_vit",)
MODALITY = vit.MODALITY
POOLS = vit.POOLS
CPU_MICRO_BATCH = vit.CPU_MICRO_BATCH
PARTITION_RULES = vit.PARTITION_RULES
cpu_variant = vit.cpu_variant
select_attention = vit.select_attention   # attention kernel for the mesh (attention.py)

_CLIP = dict(pre_norm=True, eps=1e-5)          # norm_layer=partial(LayerNorm, eps=1e-5)
_DINOV2 = dict(patch_size=14, init_values=1e-5)
_GIANT_SWIGLU = dict(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2,
                     mlp_layer="swiglu_packed", act_layer="silu")
_REG4 = dict(reg_tokens=4, no_embed_class=True)


def _sizes(patch, dim, depth, heads, **kw):
  return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, **kw)


# timm architecture -> the VisionTransformer arguments its model function passes
# (timm/models/vision_transformer.py, timm 1.0.31); ``eps`` stands for the norm layer's
# epsilon, ``mlp_layer="swiglu_packed"`` for SwiGLUPacked. The image size comes from the
# checkpoint's pretrained_cfg (timm's build_model_with_cfg), or model_args.
ARCHITECTURES: dict[str, dict] = {
    # Plain ViTs (AugReg, MAE, DeiT-style weights): class token, GELU, final norm.
    "vit_tiny_patch16_224": _sizes(16, 192, 12, 3),
    "vit_tiny_patch16_384": _sizes(16, 192, 12, 3),
    "vit_small_patch32_224": _sizes(32, 384, 12, 6),
    "vit_small_patch16_224": _sizes(16, 384, 12, 6),
    "vit_small_patch16_384": _sizes(16, 384, 12, 6),
    "vit_small_patch8_224": _sizes(8, 384, 12, 6),
    "vit_base_patch32_224": _sizes(32, 768, 12, 12),
    "vit_base_patch32_384": _sizes(32, 768, 12, 12),
    "vit_base_patch16_224": _sizes(16, 768, 12, 12),
    "vit_base_patch16_384": _sizes(16, 768, 12, 12),
    "vit_base_patch8_224": _sizes(8, 768, 12, 12),
    "vit_large_patch32_224": _sizes(32, 1024, 24, 16),
    "vit_large_patch16_224": _sizes(16, 1024, 24, 16),
    "vit_large_patch16_384": _sizes(16, 1024, 24, 16),
    "vit_large_patch14_224": _sizes(14, 1024, 24, 16),
    "vit_huge_patch14_224": _sizes(14, 1280, 32, 16),
    # Global-average-pool ViTs: no class token, the mean of the normed patch tokens.
    "vit_base_patch16_gap_224": _sizes(16, 768, 12, 16, global_pool="avg", class_token=False,
                                     fc_norm=False),
    "vit_huge_patch14_gap_224": _sizes(14, 1280, 32, 16, global_pool="avg", class_token=False,
                                     fc_norm=False),
    # DINOv2: LayerScale; giant: SwiGLU-packed MLP; reg4: 4 registers, no class position.
    "vit_small_patch14_dinov2": dict(_DINOV2, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch14_dinov2": dict(_DINOV2, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch14_dinov2": dict(_DINOV2, embed_dim=1024, depth=24, num_heads=16),
    "vit_giant_patch14_dinov2": dict(_DINOV2, **_GIANT_SWIGLU),
    "vit_small_patch14_reg4_dinov2": dict(_DINOV2, **_REG4, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch14_reg4_dinov2": dict(_DINOV2, **_REG4, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch14_reg4_dinov2": dict(_DINOV2, **_REG4, embed_dim=1024, depth=24,
                                          num_heads=16),
    "vit_giant_patch14_reg4_dinov2": dict(_DINOV2, **_REG4, **_GIANT_SWIGLU),
    # CLIP image towers: norm_pre, no patch bias, LayerNorm eps 1e-5; QuickGELU variants.
    "vit_base_patch32_clip_224": _sizes(32, 768, 12, 12, **_CLIP),
    "vit_base_patch16_clip_224": _sizes(16, 768, 12, 12, **_CLIP),
    "vit_base_patch16_clip_384": _sizes(16, 768, 12, 12, **_CLIP),
    "vit_large_patch14_clip_224": _sizes(14, 1024, 24, 16, **_CLIP),
    "vit_large_patch14_clip_336": _sizes(14, 1024, 24, 16, **_CLIP),
    "vit_huge_patch14_clip_224": _sizes(14, 1280, 32, 16, **_CLIP),
    "vit_huge_patch14_clip_336": _sizes(14, 1280, 32, 16, **_CLIP),
    "vit_base_patch32_clip_quickgelu_224": _sizes(32, 768, 12, 12, **_CLIP, act_layer="quick_gelu"),
    "vit_base_patch16_clip_quickgelu_224": _sizes(16, 768, 12, 12, **_CLIP, act_layer="quick_gelu"),
    "vit_large_patch14_clip_quickgelu_224": _sizes(14, 1024, 24, 16, **_CLIP,
                                                   act_layer="quick_gelu"),
    "vit_huge_patch14_clip_quickgelu_224": _sizes(14, 1280, 32, 16, **_CLIP,
                                                  act_layer="quick_gelu"),
}

# The 17 vision models of the Platonic study (the release's tasks.py), by timm id.
STUDY_MODELS = (
    "vit_tiny_patch16_224.augreg_in21k", "vit_small_patch16_224.augreg_in21k",
    "vit_base_patch16_224.augreg_in21k", "vit_large_patch16_224.augreg_in21k",
    "vit_base_patch16_224.mae", "vit_large_patch16_224.mae", "vit_huge_patch14_224.mae",
    "vit_small_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2.lvd142m",
    "vit_large_patch14_dinov2.lvd142m", "vit_giant_patch14_dinov2.lvd142m",
    "vit_base_patch16_clip_224.laion2b", "vit_large_patch14_clip_224.laion2b",
    "vit_huge_patch14_clip_224.laion2b", "vit_base_patch16_clip_224.laion2b_ft_in12k",
    "vit_large_patch14_clip_224.laion2b_ft_in12k", "vit_huge_patch14_clip_224.laion2b_ft_in12k",
)

# timm activation names (timm/layers/create_act.py) -> common.activation names.
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "silu": "silu", "swish": "silu",
         "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# VisionTransformer arguments: the defaults of its __init__ that this family models ...
_DEFAULTS = dict(img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token",
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True,
                 proj_bias=True, init_values=None, class_token=True, pos_embed="learn",
                 no_embed_class=False, reg_tokens=0, pre_norm=False, final_norm=True,
                 fc_norm=None, act_layer="gelu", mlp_layer="mlp", eps=1e-6)
# ... arguments that do not change the inference forward ...
_INERT = {"drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate",
          "drop_path_rate", "weight_init", "fix_init", "dynamic_img_size", "strict_img_size",
          "pretrained_strict", "out_indices", "feature_cfg"}
# ... and the values of other arguments that it can run (anything else is an error).
_NEUTRAL = {"qk_norm": False, "scale_attn_norm": False, "scale_mlp_norm": False,
            "dynamic_img_pad": False, "pool_include_prefix": False, "use_naflex": False}


def is_timm_checkpoint(directory: str) -> bool:
  """Whether ``directory/config.json`` is in timm's format (``architecture``, no
  ``model_type``)."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    cfg = json.load(f)
  return "architecture" in cfg and "model_type" not in cfg


@dataclasses.dataclass(frozen=True)
class TimmConfig:
  """A timm checkpoint's config: what ``timm.create_model`` would build, as a ViTSpec."""
  architecture: str
  pretrained_cfg: Mapping[str, Any]
  model_args: Mapping[str, Any]
  spec: vit.ViTSpec
  num_classes: int
  image_spec: timm_preprocess.TimmImageSpec
  no_embed_class: bool = False   # pos_embed covers the patches only (DINOv2 with registers)
  model_type: str = "timm_vit"

  @property
  def image_size(self) -> tuple[int, int]:   # core.Encoder's fallback input size
    return self.spec.image_size


_FIX = ("Fix: use one of the supported architectures, or add this one to ARCHITECTURES in "
        "platonic_jax/encoders/timm_format.py (docs/encoders.md, 'Adding an architecture').")


def model_kwargs(architecture: str, pretrained_cfg: Mapping[str, Any],
                 model_args: Mapping[str, Any]) -> dict:
  """The VisionTransformer arguments timm.create_model uses: the architecture's own,
  overridden by ``model_args``, with num_classes / global_pool / in_chans / img_size
  taken from ``pretrained_cfg`` when not given (timm ``_update_default_model_kwargs``)."""
  if architecture not in ARCHITECTURES:
    raise ValueError(f"timm architecture {architecture!r} is not supported by platonic_jax's "
                     f"ViT family (supported: {', '.join(sorted(ARCHITECTURES))}). {_FIX}")
  kw = dict(_DEFAULTS, **ARCHITECTURES[architecture])
  for key, value in model_args.items():
    if key in _INERT:
      continue
    if key in _NEUTRAL:
      if value != _NEUTRAL[key]:
        raise ValueError(f"timm model_args {key}={value!r} ({architecture}) is not supported by "
                         f"platonic_jax's ViT family (only {_NEUTRAL[key]!r}). {_FIX}")
      continue
    if key not in _DEFAULTS or key in ("eps", "mlp_layer"):
      raise ValueError(f"timm model_args {key!r} ({architecture}) is not supported by "
                       f"platonic_jax's ViT family. {_FIX}")
    kw[key] = value
  # model_args win, then pretrained_cfg (timm's setdefault order).
  if "num_classes" not in model_args and (pretrained_cfg.get("num_classes") or -1) >= 0:
    kw["num_classes"] = pretrained_cfg["num_classes"]
  if "global_pool" not in model_args and pretrained_cfg.get("global_pool"):
    kw["global_pool"] = pretrained_cfg["global_pool"]
  input_size = pretrained_cfg.get("input_size")
  if input_size is not None:
    if "in_chans" not in model_args:
      kw["in_chans"] = input_size[0]
    if "img_size" not in model_args and pretrained_cfg.get("fixed_input_size", False):
      kw["img_size"] = tuple(input_size[-2:])
  return kw


def spec_from_kwargs(kw: Mapping[str, Any], name: str) -> vit.ViTSpec:
  """VisionTransformer arguments -> ViTSpec (timm's __init__ logic for the modelled ones)."""
  act = kw["act_layer"] or "gelu"
  if act not in _ACTS:
    raise ValueError(f"{name}: timm act_layer {act!r} is not supported (supported: "
                     f"{sorted(_ACTS)}). {_FIX}")
  if kw["pos_embed"] not in ("learn", "", "none"):
    raise ValueError(f"{name}: pos_embed {kw['pos_embed']!r} is not supported. {_FIX}")
  if kw["global_pool"] not in ("token", "avg"):
    raise ValueError(f"{name}: global_pool {kw['global_pool']!r} is not supported by "
                     f"platonic_jax's ViT family (supported: 'token', 'avg'). {_FIX}")
  size = kw["img_size"]
  size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
  dim = int(kw["embed_dim"])
  gated = kw["mlp_layer"] == "swiglu_packed"
  hidden = int(dim * kw["mlp_ratio"])
  use_fc_norm = kw["global_pool"] == "avg" if kw["fc_norm"] is None else bool(kw["fc_norm"])
  return vit.ViTSpec(
      dim=dim, depth=int(kw["depth"]), num_heads=int(kw["num_heads"]),
      mlp_hidden=hidden // 2 if gated else hidden, patch_size=int(kw["patch_size"]),
      image_size=size, act=_ACTS[act], gated=gated, qkv_bias=bool(kw["qkv_bias"]),
      proj_bias=bool(kw["proj_bias"]), patch_bias=not kw["pre_norm"],
      layer_scale=bool(kw["init_values"]), class_token=bool(kw["class_token"]),
      reg_tokens=int(kw["reg_tokens"]), pos_embed=kw["pos_embed"] == "learn",
      pre_norm=bool(kw["pre_norm"]), final_norm=bool(kw["final_norm"]),
      fc_norm=bool(kw["final_norm"]) and use_fc_norm, global_pool=kw["global_pool"],
      eps=float(kw["eps"]), pos_antialias=True, in_chans=int(kw["in_chans"]),
      name=f"timm {name}").check()


def config_from_dict(cfg: Mapping[str, Any]) -> TimmConfig:
  """A parsed timm config.json -> TimmConfig (timm ``_parse_model_cfg`` + create_model)."""
  if "pretrained_cfg" not in cfg:   # legacy single-dict form
    pretrained = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features")}
  else:
    pretrained = dict(cfg["pretrained_cfg"])
  if "num_classes" in cfg:
    pretrained["num_classes"] = cfg["num_classes"]
  architecture = cfg["architecture"]
  model_args = dict(cfg.get("model_args") or {})
  kw = model_kwargs(architecture, pretrained, model_args)
  if kw["in_chans"] != 3:
    raise ValueError(f"timm {architecture}: in_chans={kw['in_chans']}; only RGB models are "
                     "supported")
  spec = spec_from_kwargs(kw, architecture)
  return TimmConfig(architecture=architecture, pretrained_cfg=pretrained, model_args=model_args,
                    spec=spec, num_classes=int(kw["num_classes"]),
                    no_embed_class=bool(kw["no_embed_class"]),
                    image_spec=timm_preprocess.TimmImageSpec.from_pretrained_cfg(pretrained))


def read_config(directory: str) -> TimmConfig:
  with open(os.path.join(directory, "config.json")) as f:
    return config_from_dict(json.load(f))


def image_spec(directory: str, config: TimmConfig) -> timm_preprocess.TimmImageSpec:
  """Registry hook: the preprocessing of this checkpoint (its pretrained_cfg)."""
  return config.image_spec


def build(config: TimmConfig, dtype=jnp.float32) -> vit.VisionTransformer:
  return vit.build(config.spec, dtype)


def convert(state_dict: Mapping[str, np.ndarray], config: TimmConfig) -> dict:
  """timm VisionTransformer weights (timm's key names) -> vit.VisionTransformer params.

  The classifier ``head`` (and the legacy ``pre_logits``) is known and unused: features
  stop at the pooled embedding.
  """
  s = config.spec
  sd = StateDict(state_dict, ignore=(r"head\..*", r"pre_logits\..*"))
  d, p, c = s.dim, s.patch_size, s.in_chans
  hidden_in = 2 * s.mlp_hidden if s.gated else s.mlp_hidden
  grid = s.grid[0] * s.grid[1]

  def take(name, *shape):
    return sd.take(name, shape)

  def norm(name):
    return {"scale": take(f"{name}.weight", d), "bias": take(f"{name}.bias", d)}

  def dense(name, n_in, n_out, bias=True):
    out = {"kernel": take(f"{name}.weight", n_out, n_in).T}   # torch [out, in] -> [in, out]
    if bias:
      out["bias"] = take(f"{name}.bias", n_out)
    return out

  patch = take("patch_embed.proj.weight", d, c, p, p)
  params = {"patch_embed": {"kernel": vit.patch_kernel(patch, s)}}
  if s.patch_bias:
    params["patch_embed"]["bias"] = take("patch_embed.proj.bias", d)
  # timm's no_embed_class: positions only for patches; else for the prefix tokens too.
  pos_prefix = np.zeros((0, d), np.float32)
  if s.pos_embed:
    n_pos_prefix = 0 if config.no_embed_class else s.num_prefix
    pos = take("pos_embed", 1, n_pos_prefix + grid, d)[0]
    pos_prefix, params["pos_embed"] = pos[:n_pos_prefix], pos[n_pos_prefix:]
  tokens = []
  if s.class_token:
    tokens.append(take("cls_token", 1, 1, d))
  if s.reg_tokens:
    tokens.append(take("reg_token", 1, s.reg_tokens, d))
  if tokens:
    params["prefix"] = vit.prefix_tokens(tokens, pos_prefix)
  if s.pre_norm:
    params["norm_pre"] = norm("norm_pre")
  for i in range(s.depth):
    b = f"blocks.{i}"
    block = {
        "norm1": norm(f"{b}.norm1"),
        "attn": {"qkv": dense(f"{b}.attn.qkv", d, 3 * d, s.qkv_bias),
                 "proj": dense(f"{b}.attn.proj", d, d, s.proj_bias)},
        "norm2": norm(f"{b}.norm2"),
        "mlp": {"fc1": dense(f"{b}.mlp.fc1", d, hidden_in, s.proj_bias),
                "fc2": dense(f"{b}.mlp.fc2", s.mlp_hidden, d, s.proj_bias)},
    }
    if s.layer_scale:
      block["ls1"] = take(f"{b}.ls1.gamma", d)
      block["ls2"] = take(f"{b}.ls2.gamma", d)
    params[f"blocks_{i}"] = block
  if s.final_norm:
    params["fc_norm" if s.fc_norm else "norm"] = norm("fc_norm" if s.fc_norm else "norm")
  sd.finish(f"timm {config.architecture} checkpoint (config.json: depth {s.depth}, "
            f"embed_dim {d}, patch {p}, image {s.image_size[0]}x{s.image_size[1]})")
  return params
