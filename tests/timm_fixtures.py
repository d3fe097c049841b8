"""Tiny random timm and transformers ViT checkpoints, built offline, and their references.

timm is imported through ``platonic_jax.benchmarks.torchvision_standin.import_timm`` (see
that module for why:
timm's own model and data code runs; only torchvision's few PIL transforms are stood in).
Each builder saves a checkpoint in the format users load (timm: ``save_for_hf`` ->
config.json + model.safetensors; transformers: ``save_pretrained`` + the image
processor) and returns ``(directory, torch_model)``, the model being the reference.
"""

from __future__ import annotations

import numpy as np

import hf_fixtures as fx
from platonic_jax.benchmarks import torchvision_standin

try:
  _TIMM, STANDIN_USED = torchvision_standin.import_timm()
except ImportError as e:   # a collection error, not a skip: the reference is required
  raise ImportError(
      "timm is the ViT family's reference and is not installed: run `pip install --no-deps "
      "timm==1.0.31` (not in the test extra: its torchvision requirement would pull a CUDA "
      f"torch; see README and platonic_jax/benchmarks/torchvision_standin.py). ({e})") from e


def timm():
  """The timm package (imported with the torchvision stand-in when needed)."""
  return _TIMM


def tiny_timm(directory: str, name: str, seed: int = 0, dim: int = 32, heads: int = 2,
              depth: int = 2, img_size=None, input_size=None, cfg=None, **model_args):
  """``timm.create_model(name, pretrained=False, depth, embed_dim, num_heads, ...)`` with
  random weights, saved with ``timm.models.save_for_hf`` (safetensors).

  ``name`` may carry a pretrained tag (``vit_base_patch16_clip_224.laion2b``): its
  pretrained_cfg (mean / std / crop_pct) is the one saved. ``img_size`` is the trained
  size (position grid); ``input_size`` (H, W), when given, is the preprocessing size
  written to pretrained_cfg, so a different size makes the model resample positions
  (the reference then runs timm with ``dynamic_img_size=True``). ``cfg`` overlays other
  pretrained_cfg fields (crop_pct, crop_mode, interpolation, mean, std).
  """
  import torch
  t = timm()
  overlay = dict(cfg or {})
  kw = dict(model_args)
  if img_size is not None:
    kw["img_size"] = img_size
  if input_size is not None:
    overlay["input_size"] = (3,) + tuple(input_size)
    kw["dynamic_img_size"] = True
  torch.manual_seed(seed)
  model = t.create_model(name, pretrained=False, depth=depth, embed_dim=dim, num_heads=heads,
                         pretrained_cfg_overlay=overlay or None, **kw).eval()
  fx.randomize(model, seed)
  t.models.save_for_hf(model, directory, safe_serialization=True)
  return str(directory), model


def timm_reference(model, images):
  """timm's eval transform (the release's) on ``images`` -> (pixels [N, 3, H, W] torch,
  per-block outputs [L] of [N, T, D] float64 numpy, pre-logits [N, D] float64)."""
  import torch
  t = timm()
  transform = t.data.create_transform(**t.data.resolve_data_config(model.pretrained_cfg,
                                                                   model=model))
  from PIL import Image
  pil = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
  x = torch.stack([transform(im.convert("RGB")) for im in pil])
  outs = []
  hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
  with torch.no_grad():
    feats = model.forward_features(x)
    pre_logits = model.forward_head(feats, pre_logits=True)
  for h in hooks:
    h.remove()
  return x, [o.double().numpy() for o in outs], pre_logits.double().numpy()


def hf_reference(model, pixel_values, **kwargs):
  """A transformers ViT-style model on NCHW pixels -> (per-block hidden states [L] of
  [N, T, D] float64 numpy, the model output)."""
  import torch
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(pixel_values), output_hidden_states=True,
                interpolate_pos_encoding=True, **kwargs)
  return [h.double().numpy() for h in out.hidden_states[1:]], out


def tiny_hf_vit(directory: str, kind: str, seed: int = 0, image_size: int = 32,
                crop=(48, 40), **overrides):
  """A 2-layer HF ViT-style model (D=32, 4 heads) trained at ``image_size`` with an
  image processor whose output is ``crop`` (H, W), usually another grid (positions
  interpolated). ``kind``: vit | vit_mae | clip | dinov2_reg | dinov2_reg_swiglu."""
  import torch
  import transformers as T
  torch.manual_seed(seed)
  common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=image_size)
  resize = {"height": crop[0], "width": crop[1]}
  if kind in ("vit", "vit_mae"):
    cfg_cls, model_cls = ((T.ViTConfig, T.ViTModel) if kind == "vit" else
                          (T.ViTMAEConfig, T.ViTMAEModel))
    kw = dict(common, intermediate_size=64, patch_size=16)
    if kind == "vit_mae":
      kw["mask_ratio"] = 0.0
    proc = T.ViTImageProcessor(size=resize, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
  elif kind == "clip":
    cfg_cls, model_cls = T.CLIPVisionConfig, T.CLIPVisionModel
    kw = dict(common, intermediate_size=64, patch_size=16)
    proc = T.CLIPImageProcessor(size={"shortest_edge": max(crop) + 3},
                                crop_size=resize)
  else:
    cfg_cls, model_cls = T.Dinov2WithRegistersConfig, T.Dinov2WithRegistersModel
    kw = dict(common, patch_size=14, mlp_ratio=2, num_register_tokens=3,
              use_swiglu_ffn=kind.endswith("swiglu"), image_size=28)
    proc = T.BitImageProcessor(size={"shortest_edge": max(crop) + 4}, crop_size=resize,
                               resample=3, image_mean=[0.485, 0.456, 0.406],
                               image_std=[0.229, 0.224, 0.225])
  kw.update(overrides)
  model = model_cls(cfg_cls(**kw)).eval()
  fx.randomize(model, seed)
  model.save_pretrained(directory)
  proc.save_pretrained(directory)
  return str(directory), model


def pil_modes(seed: int = 3, size=(41, 53)):
  """The same random picture in the PIL modes users feed: RGB, L, RGBA, LA, P, CMYK,
  16-bit grayscale (I;16) and 1-bit, plus an odd-sized RGB."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  rgb = Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8))
  rgba = Image.fromarray(rng.integers(0, 256, size[::-1] + (4,), dtype=np.uint8), "RGBA")
  wide16 = Image.fromarray(rng.integers(0, 65536, (29, 77), dtype=np.uint16))   # I;16
  return {"RGB": rgb, "L": rgb.convert("L"), "RGBA": rgba, "LA": rgba.convert("LA"),
          "P": rgb.convert("P"), "CMYK": rgb.convert("CMYK"), "I;16": wide16,
          "1": rgb.convert("1"), "RGB 13x301": Image.fromarray(
              rng.integers(0, 256, (13, 301, 3), dtype=np.uint8))}
