"""timm's eval preprocessing, reproduced with PIL and numpy (no torch, no torchvision).

The Platonic release preprocesses every vision model with

    create_transform(**resolve_data_config(model.pretrained_cfg, model=model))

which, in eval mode (``timm/data/config.py`` ``resolve_data_config``,
``timm/data/transforms_factory.py`` ``transforms_imagenet_eval``, timm 1.0), is:

1. the data config from the checkpoint's ``pretrained_cfg``: ``input_size`` (default
   (3, 224, 224)), ``interpolation`` (bicubic), ``mean`` / ``std`` (ImageNet),
   ``crop_pct`` (0.875), ``crop_mode`` (center);
2. ``scale_size = floor(size / crop_pct)`` per side, then by ``crop_mode``:
   - ``center``: a square target resizes the *short* side to ``scale_size``
     (torchvision ``Resize(int)``: long side ``int(scale * long / short)``), a
     non-square one keeps the aspect ratio to cover ``scale_size`` (timm
     ``ResizeKeepRatio``: both sides ``round(side / min ratio)``); then torchvision
     ``CenterCrop`` (offsets ``int(round((side - crop) / 2))``, zero padding if smaller);
   - ``squash``: resize to ``scale_size`` exactly, then ``CenterCrop``;
   - ``border``: ``ResizeKeepRatio(longest=1)`` (fit inside), then timm's
     ``CenterCropOrPad`` with the mean colour as fill;
   every resize is ``PIL.Image.resize`` on the 8-bit image (torchvision's PIL path);
3. ``ToTensor`` (uint8 / 255 in float32) and ``Normalize`` ((x - mean) / std in float32).

Images are first converted with ``PIL.Image.convert("RGB")``, the rule of timm's own
datasets (``ImageDataset(input_img_mode="RGB")``): alpha is dropped, not composited
(the release's WIT images are RGB; timm's transform alone would pass other modes on
with their own channel count). Tests compare every pixel with timm's transform on odd
sizes and modes (L, RGBA, P, CMYK, 16-bit).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageOps

from platonic_jax.encoders import preprocess

# timm/data/constants.py
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_CROP_MODE = "center"
CROP_MODES = ("center", "squash", "border")

# timm/data/transforms.py str_to_pil_interp (= torchvision's pil_modes_mapping).
_PIL_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                 "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
                 "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}


@dataclasses.dataclass(frozen=True)
class TimmImageSpec:
  """The data config of a timm checkpoint (``resolve_data_config`` output, eval mode)."""
  input_size: tuple[int, int, int] = (3, 224, 224)
  interpolation: str = "bicubic"
  mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
  std: tuple[float, ...] = IMAGENET_DEFAULT_STD
  crop_pct: float = DEFAULT_CROP_PCT
  crop_mode: str = DEFAULT_CROP_MODE

  @classmethod
  def from_pretrained_cfg(cls, cfg: Mapping[str, Any]) -> "TimmImageSpec":
    """``resolve_data_config(pretrained_cfg)`` without command-line args (the release's
    call): falsy entries fall back to timm's defaults as timm does."""
    spec = cls(
        input_size=tuple(int(v) for v in (cfg.get("input_size") or (3, 224, 224))),
        interpolation=cfg.get("interpolation") or "bicubic",
        mean=tuple(float(v) for v in (cfg.get("mean") or IMAGENET_DEFAULT_MEAN)),
        std=tuple(float(v) for v in (cfg.get("std") or IMAGENET_DEFAULT_STD)),
        crop_pct=float(cfg.get("crop_pct") or DEFAULT_CROP_PCT),
        crop_mode=cfg.get("crop_mode") or DEFAULT_CROP_MODE)
    return spec.check()

  def check(self) -> "TimmImageSpec":
    problems = []
    if len(self.input_size) != 3 or self.input_size[0] != 3:
      problems.append(f"input_size {self.input_size} (need (3, H, W): RGB models only)")
    if self.interpolation not in _PIL_RESAMPLE:
      problems.append(f"interpolation {self.interpolation!r} (supported: {sorted(_PIL_RESAMPLE)})")
    if self.crop_mode not in CROP_MODES:
      problems.append(f"crop_mode {self.crop_mode!r} (supported: {CROP_MODES})")
    if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
      problems.append(f"mean {self.mean} / std {self.std} (need 3 values, std > 0)")
    if problems:
      raise ValueError("timm pretrained_cfg: unsupported preprocessing: " + "; ".join(problems)
                       + ". Fix: correct config.json's pretrained_cfg.")
    return self

  def output_size(self) -> tuple[int, int]:
    return self.input_size[1], self.input_size[2]

  def _scale_size(self) -> tuple[int, int]:
    h, w = self.output_size()
    return math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)

  def resize_and_crop(self, image: Image.Image) -> Image.Image:
    """Steps 2 of the module docstring on an RGB PIL image -> the [H, W] crop."""
    resample = _PIL_RESAMPLE[self.interpolation]
    h, w = self.output_size()
    sh, sw = self._scale_size()
    if self.crop_mode == "squash":
      image = _resize(image, (sh, sw), resample)
      return _center_crop(image, h, w)
    if self.crop_mode == "border":
      image = _resize(image, _keep_ratio_size(image, (sh, sw), longest=1.0), resample)
      return _center_crop(image, h, w, fill=tuple(round(255 * v) for v in self.mean))
    if sh == sw:
      image = _resize(image, _short_side_size(image, sh), resample)
    else:
      image = _resize(image, _keep_ratio_size(image, (sh, sw), longest=0.0), resample)
    return _center_crop(image, h, w)

  def apply(self, item: Any, index: int = 0) -> np.ndarray:
    """One image -> [H, W, 3] float32, as timm's eval transform (then HWC)."""
    image = preprocess.open_image(item, index)
    try:
      if image.mode != "RGB":
        image = image.convert("RGB")
      image = self.resize_and_crop(image)
    except Exception as e:  # noqa: BLE001 -- re-raised with the index the user needs
      raise ValueError(f"image {index} cannot be read: {type(e).__name__}: {e}") from e
    x = np.asarray(image, np.uint8).astype(np.float32) / np.float32(255)   # torch .div(255)
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def _resize(image: Image.Image, hw: tuple[int, int], resample) -> Image.Image:
  """torchvision F.resize on a PIL image: unchanged when already that size."""
  if (image.height, image.width) == tuple(hw):
    return image
  return image.resize((hw[1], hw[0]), resample)


def _short_side_size(image: Image.Image, size: int) -> tuple[int, int]:
  """torchvision _compute_resized_output_size with one size: (new_h, new_w)."""
  h, w = image.height, image.width
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  return (new_long, new_short) if w <= h else (new_short, new_long)


def _keep_ratio_size(image: Image.Image, target: tuple[int, int],
                     longest: float) -> tuple[int, int]:
  """timm ResizeKeepRatio.get_params without the random parts: (new_h, new_w)."""
  ratio_h, ratio_w = image.height / target[0], image.width / target[1]
  ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
  return round(image.height / ratio), round(image.width / ratio)


def _center_crop(image: Image.Image, ch: int, cw: int, fill=(0, 0, 0)) -> Image.Image:
  """torchvision F.center_crop on a PIL image (zero padding when smaller), or with
  ``fill`` timm's center_crop_or_pad (the same arithmetic, a given padding colour)."""
  h, w = image.height, image.width
  if cw > w or ch > h:
    ltrb = ((cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0,
            (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0)
    image = ImageOps.expand(image, border=ltrb, fill=tuple(int(v) for v in fill))
    h, w = image.height, image.width
    if (h, w) == (ch, cw):
      return image
  top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
  return image.crop((left, top, left + cw, top + ch))
