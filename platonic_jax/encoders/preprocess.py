"""Image preprocessing that reproduces the Hugging Face image processors numerically.

Reads ``preprocessor_config.json`` and applies what transformers' PIL backend does
(``BitImageProcessor`` of DINOv2, ``ConvNextImageProcessor`` of microsoft/resnet-*, and
the plain resize / center-crop / rescale / normalize of ViT-style processors):

1. to RGB: images with alpha (RGBA, LA, palette with transparency) are composited on
   white, everything else (L, CMYK, P, I;16, ...) goes through ``PIL.Image.convert("RGB")``;
2. resize with PIL on uint8 (``shortest_edge``: short side to the size, long side
   ``int(size * long / short)``; ConvNext with ``shortest_edge < 384`` resizes to
   ``int(shortest_edge / crop_pct)`` and center-crops to ``shortest_edge``);
3. center crop (``top = (h - crop_h) // 2``; zero-padded if the image is smaller);
4. rescale in float64 then float32, normalize in float32.

Hand-written (instead of calling the HF processor) to return NHWC float32 batches
directly and to name the index of an unreadable image; tests check it against
``AutoImageProcessor`` bit for bit on uint8 inputs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """The fields of ``preprocessor_config.json`` that define the pixels a model sees."""
  processor: str = "BitImageProcessor"
  do_resize: bool = True
  size: dict | None = None            # {"shortest_edge": s} or {"height": h, "width": w}
  resample: int = 3                   # PIL.Image.Resampling value (3 = BICUBIC)
  crop_pct: float | None = None       # ConvNext only
  do_center_crop: bool = False
  crop_size: dict | None = None
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  image_mean: tuple = IMAGENET_MEAN
  image_std: tuple = IMAGENET_STD
  do_convert_rgb: bool = True

  @property
  def is_convnext(self) -> bool:
    return self.processor.startswith("ConvNext")

  @classmethod
  def from_dict(cls, d: dict) -> "ImageSpec":
    proc = d.get("image_processor_type") or d.get("feature_extractor_type") or "BitImageProcessor"
    convnext = proc.startswith("ConvNext")
    size = d.get("size", {"shortest_edge": 384 if convnext else 224})
    if isinstance(size, int):  # legacy configs: an int means shortest edge (ConvNext) / square
      size = {"shortest_edge": size} if convnext else {"height": size, "width": size}
    crop = d.get("crop_size")
    if isinstance(crop, int):
      crop = {"height": crop, "width": crop}
    return cls(
        processor=proc, do_resize=d.get("do_resize", True), size=size,
        resample=int(d.get("resample", 3)),
        crop_pct=d.get("crop_pct", 224 / 256) if convnext else None,
        do_center_crop=d.get("do_center_crop", not convnext and crop is not None),
        crop_size=crop, do_rescale=d.get("do_rescale", True),
        rescale_factor=d.get("rescale_factor", 1 / 255), do_normalize=d.get("do_normalize", True),
        image_mean=tuple(d.get("image_mean", IMAGENET_MEAN)),
        image_std=tuple(d.get("image_std", IMAGENET_STD)),
        do_convert_rgb=d.get("do_convert_rgb", True))

  @classmethod
  def from_dir(cls, directory: str) -> "ImageSpec":
    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.exists(path):
      raise ValueError(f"{directory} has no preprocessor_config.json: save the model's image "
                       "processor there (AutoImageProcessor...save_pretrained(dir))")
    with open(path) as f:
      return cls.from_dict(json.load(f))

  def apply(self, item: Any, index: int = 0) -> np.ndarray:
    """One image -> [H, W, 3] float32 (:func:`preprocess_one`)."""
    return preprocess_one(item, self, index)

  def output_size(self) -> tuple[int, int] | None:
    """(H, W) of every processed image, or None when it depends on the input."""
    if self.do_center_crop and self.crop_size:
      return self.crop_size["height"], self.crop_size["width"]
    if self.do_resize and self.size:
      if "height" in self.size and "width" in self.size:
        return self.size["height"], self.size["width"]
      if self.is_convnext and "shortest_edge" in self.size:
        s = self.size["shortest_edge"]
        return s, s
    return None


def convert_rgb(image: Image.Image) -> Image.Image:
  """transformers' ``convert_to_rgb`` rule: images with alpha (RGBA, LA, palette with
  transparency) are composited on white; every other mode goes through
  ``Image.convert("RGB")``; RGB images are returned as they are."""
  if image.mode == "RGB":
    return image
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def open_image(item: Any, index: int) -> Image.Image:
  """A PIL image, in its own mode, from a PIL image, an [H, W] / [H, W, 1|3|4] uint8 array,
  encoded bytes or a file path. Raises ValueError naming ``index`` when it cannot be read."""
  try:
    if isinstance(item, (str, os.PathLike)):
      with Image.open(item) as im:
        im.load()
        return im
    if isinstance(item, (bytes, bytearray, memoryview)):
      image = Image.open(io.BytesIO(bytes(item)))
      image.load()
      return image
    if isinstance(item, Image.Image):
      return item
    if isinstance(item, np.ndarray):
      return _from_array(item)
    raise TypeError(f"unsupported type {type(item).__name__} (expected a PIL image, a uint8 "
                    "[H, W(, C)] array, encoded bytes or a path)")
  except Exception as e:  # noqa: BLE001 -- re-raised with the index the user needs
    raise ValueError(f"image {index} cannot be read: {type(e).__name__}: {e}") from e


def to_rgb(item: Any, index: int) -> Image.Image:
  """:func:`open_image`, then transformers' RGB rule (:func:`convert_rgb`)."""
  image = open_image(item, index)
  try:
    return convert_rgb(image)
  except Exception as e:  # noqa: BLE001 -- re-raised with the index the user needs
    raise ValueError(f"image {index} cannot be read: {type(e).__name__}: {e}") from e


def _from_array(a: np.ndarray) -> Image.Image:
  if a.dtype != np.uint8:
    raise TypeError(f"array images must be uint8 in [0, 255], got {a.dtype}")
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim == 2:
    return Image.fromarray(a, "L")
  if a.ndim == 3 and a.shape[-1] in (3, 4):
    return Image.fromarray(a, "RGB" if a.shape[-1] == 3 else "RGBA")
  raise TypeError(f"array images must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got {a.shape}")


def _shortest_edge_size(h: int, w: int, size: int) -> tuple[int, int]:
  """transformers get_resize_output_image_size(default_to_square=False)."""
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  return (new_long, new_short) if w <= h else (new_short, new_long)


def _resize(image: Image.Image, hw: tuple[int, int], resample: int) -> Image.Image:
  return image.resize((hw[1], hw[0]), resample=resample)


def _center_crop(a: np.ndarray, ch: int, cw: int) -> np.ndarray:
  """transformers center_crop on [H, W, C]: floor offsets; zero-pad when too small."""
  h, w = a.shape[:2]
  top, left = (h - ch) // 2, (w - cw) // 2
  if top >= 0 and left >= 0:
    return a[top:top + ch, left:left + cw]
  nh, nw = max(ch, h), max(cw, w)
  canvas = np.zeros((nh, nw) + a.shape[2:], a.dtype)
  tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)   # ceil, as transformers
  canvas[tp:tp + h, lp:lp + w] = a
  top, left = (nh - ch) // 2, (nw - cw) // 2
  return canvas[top:top + ch, left:left + cw]


def preprocess_one(item: Any, spec: ImageSpec, index: int = 0) -> np.ndarray:
  """One image -> [H, W, 3] float32 exactly as the HF image processor makes it."""
  # HF skips RGB conversion only when do_convert_rgb is False; the models need 3 channels
  # anyway, so we always convert (identical for RGB inputs).
  image = to_rgb(item, index)
  size = spec.size or {}
  a = None
  if spec.do_resize:
    if spec.is_convnext:
      s = size["shortest_edge"]
      if s < 384:
        image = _resize(image, _shortest_edge_size(image.height, image.width,
                                                   int(s / spec.crop_pct)), spec.resample)
        a = _center_crop(np.asarray(image), s, s)
      else:
        image = _resize(image, (s, s), spec.resample)
    elif "shortest_edge" in size:
      image = _resize(image, _shortest_edge_size(image.height, image.width,
                                                 size["shortest_edge"]), spec.resample)
    elif "height" in size and "width" in size:
      image = _resize(image, (size["height"], size["width"]), spec.resample)
    else:
      raise ValueError(f"unsupported preprocessor size {size}")
  if a is None:
    a = np.asarray(image)
  if spec.do_center_crop and spec.crop_size:
    a = _center_crop(a, spec.crop_size["height"], spec.crop_size["width"])
  if spec.do_rescale:
    x = (a.astype(np.float64) * spec.rescale_factor).astype(np.float32)
  else:
    x = a.astype(np.float32)
  if spec.do_normalize:
    x = (x - np.asarray(spec.image_mean, np.float32)) / np.asarray(spec.image_std, np.float32)
  return x


def preprocess(items: Sequence[Any], spec: Any, start: int = 0) -> np.ndarray:
  """Images -> [N, H, W, 3] float32. ``start`` offsets the index named in errors.

  ``spec``: an :class:`ImageSpec` or any image spec with the same two methods,
  ``apply(item, index) -> [H, W, 3] float32`` and ``output_size()`` (e.g. timm's,
  ``encoders/timm_preprocess.py``).
  """
  arrays = [spec.apply(item, start + i) for i, item in enumerate(items)]
  shapes = {a.shape for a in arrays}
  if len(shapes) > 1:
    raise ValueError(f"processed images differ in size {sorted(shapes)}: the preprocessor "
                     "config has no fixed output size (set crop_size / do_center_crop)")
  return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.float32)
