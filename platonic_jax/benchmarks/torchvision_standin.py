"""A small stand-in for the torchvision modules that timm imports, for the ViT family's
tests and benchmark (``tests/test_encoders_vit.py``, ``benchmarks/encoders.py``), which
run timm's PyTorch code as the reference; the encoders themselves never import it.

Why: timm imports torchvision at import time, but the registry's torchvision wheels are
CUDA builds that fail to import beside the CPU torch the tests run on (``libtorch_cuda.so`` not found), and installing one would also make
transformers switch its image processors to a torchvision backend. timm's *model* code
needs only torch; its eval transform needs the few torchvision transforms below, which on
PIL images are thin wrappers around PIL operations.

:func:`import_timm` puts these modules into ``sys.modules`` while timm is imported (only
when a real torchvision cannot be imported: with a working one it is used), so timm's
real code runs, and takes them out again afterwards. The eval-path pieces (``Compose``,
``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize`` and the functions they call)
reproduce torchvision 0.28's PIL path line for line (``torchvision/transforms/
functional.py``: ``resize``, ``_compute_resized_output_size``, ``center_crop``,
``to_tensor``, ``normalize``; ``_functional_pil.py``: ``resize``, ``crop``, ``pad``), so
they are the "PIL operations timm's eval transform performs". Every other name
(datasets, augmentations, ops) is a placeholder class that raises if it is ever
instantiated, never a silent substitute.
"""

from __future__ import annotations

import enum
import importlib.machinery
import numbers
import sys
import types

import numpy as np
from PIL import Image, ImageOps

_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
            "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
            "torchvision.utils")


def _placeholder(module: str, name: str) -> type:
  def init(self, *args, **kwargs):
    raise NotImplementedError(
        f"{module}.{name} is not part of the tests' torchvision stand-in "
        "(tests/torchvision_standin.py), which provides only timm's eval transforms")
  return type(name, (), {"__init__": init, "__module__": module})


class _Module(types.ModuleType):
  """A module whose unknown capitalised attributes are placeholder classes."""

  def __getattr__(self, name):
    if name[:1].isupper():
      cls = _placeholder(self.__name__, name)
      setattr(self, name, cls)
      return cls
    raise AttributeError(
        f"module {self.__name__!r} (torchvision stand-in) has no attribute {name!r}")


class InterpolationMode(enum.Enum):
  """torchvision.transforms.InterpolationMode."""
  NEAREST = "nearest"
  NEAREST_EXACT = "nearest-exact"
  BILINEAR = "bilinear"
  BICUBIC = "bicubic"
  BOX = "box"
  HAMMING = "hamming"
  LANCZOS = "lanczos"


# torchvision.transforms.functional.pil_modes_mapping
_PIL_MODES = {InterpolationMode.NEAREST: 0, InterpolationMode.BILINEAR: 2,
              InterpolationMode.BICUBIC: 3, InterpolationMode.NEAREST_EXACT: 0,
              InterpolationMode.BOX: 4, InterpolationMode.HAMMING: 5, InterpolationMode.LANCZOS: 1}


def _require_pil(img):
  if not isinstance(img, Image.Image):
    raise TypeError(f"the torchvision stand-in handles PIL images only, got {type(img).__name__}")


def get_image_num_channels(img) -> int:
  _require_pil(img)
  return len(img.getbands())


def get_dimensions(img) -> list[int]:
  _require_pil(img)
  return [get_image_num_channels(img), img.height, img.width]


def get_image_size(img) -> list[int]:
  _require_pil(img)
  return [img.width, img.height]


def _compute_resized_output_size(image_size, size, max_size=None) -> list[int]:
  h, w = image_size
  short, long = (w, h) if w <= h else (h, w)
  if len(size) == 1:   # the smaller edge to size[0], the other by the aspect ratio
    requested_new_short = size[0]
    new_short, new_long = requested_new_short, int(requested_new_short * long / short)
    if max_size is not None and new_long > max_size:
      new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  else:
    new_w, new_h = size[1], size[0]
  return [new_h, new_w]


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
  _require_pil(img)
  if isinstance(interpolation, int):
    interpolation = {v: k for k, v in _PIL_MODES.items()}[interpolation]
  if isinstance(size, int):
    size = [size]
  output_size = _compute_resized_output_size((img.height, img.width), list(size), max_size)
  if [img.height, img.width] == output_size:
    return img
  return img.resize(tuple(output_size[::-1]), _PIL_MODES[interpolation])


def crop(img, top: int, left: int, height: int, width: int):
  _require_pil(img)
  return img.crop((left, top, left + width, top + height))


def pad(img, padding, fill=0, padding_mode="constant"):
  _require_pil(img)
  if padding_mode != "constant":
    raise NotImplementedError("the torchvision stand-in pads with a constant only")
  if isinstance(padding, list):
    padding = tuple(padding)
  channels = get_image_num_channels(img)
  if isinstance(fill, (int, float)) and channels > 1:
    fill = tuple([fill] * channels)
  if isinstance(fill, (list, tuple)):
    fill = tuple(int(x) for x in (fill * channels if len(fill) == 1 else fill))
  if img.mode == "P":
    palette = img.getpalette()
    out = ImageOps.expand(img, border=padding, fill=fill)
    out.putpalette(palette)
    return out
  return ImageOps.expand(img, border=padding, fill=fill)


def center_crop(img, output_size):
  if isinstance(output_size, numbers.Number):
    output_size = (int(output_size), int(output_size))
  elif isinstance(output_size, (tuple, list)) and len(output_size) == 1:
    output_size = (output_size[0], output_size[0])
  _, image_height, image_width = get_dimensions(img)
  crop_height, crop_width = output_size
  if crop_width > image_width or crop_height > image_height:
    padding_ltrb = [
        (crop_width - image_width) // 2 if crop_width > image_width else 0,
        (crop_height - image_height) // 2 if crop_height > image_height else 0,
        (crop_width - image_width + 1) // 2 if crop_width > image_width else 0,
        (crop_height - image_height + 1) // 2 if crop_height > image_height else 0,
    ]
    img = pad(img, padding_ltrb, fill=0)
    _, image_height, image_width = get_dimensions(img)
    if crop_width == image_width and crop_height == image_height:
      return img
  crop_top = int(round((image_height - crop_height) / 2.0))
  crop_left = int(round((image_width - crop_width) / 2.0))
  return crop(img, crop_top, crop_left, crop_height, crop_width)


def pil_to_tensor(pic):
  import torch
  _require_pil(pic)
  img = torch.as_tensor(np.array(pic, copy=True))
  img = img.view(pic.size[1], pic.size[0], get_image_num_channels(pic))
  return img.permute((2, 0, 1))


def to_tensor(pic):
  import torch
  _require_pil(pic)
  mode_to_nptype = {"I": np.int32, "I;16" if sys.byteorder == "little" else "I;16B": np.int16,
                    "F": np.float32}
  img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
  if pic.mode == "1":
    img = 255 * img
  img = img.view(pic.size[1], pic.size[0], get_image_num_channels(pic))
  img = img.permute((2, 0, 1)).contiguous()
  if img.dtype == torch.uint8:
    return img.to(dtype=torch.get_default_dtype()).div(255)
  return img


def normalize(tensor, mean, std, inplace=False):
  import torch
  if not inplace:
    tensor = tensor.clone()
  mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
  std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
  if mean.ndim == 1:
    mean = mean.view(-1, 1, 1)
  if std.ndim == 1:
    std = std.view(-1, 1, 1)
  return tensor.sub_(mean).div_(std)


def _setup_size(size):
  if isinstance(size, numbers.Number):
    return int(size), int(size)
  if isinstance(size, (tuple, list)) and len(size) == 1:
    return size[0], size[0]
  return tuple(size)


class Compose:
  def __init__(self, transforms):
    self.transforms = list(transforms)

  def __call__(self, img):
    for t in self.transforms:
      img = t(img)
    return img


class Resize:
  def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    self.size, self.interpolation = size, interpolation
    self.max_size, self.antialias = max_size, antialias

  def __call__(self, img):
    return resize(img, self.size, self.interpolation, self.max_size, self.antialias)


class CenterCrop:
  def __init__(self, size):
    self.size = _setup_size(size)

  def __call__(self, img):
    return center_crop(img, self.size)


class ToTensor:
  def __call__(self, pic):
    return to_tensor(pic)


class Normalize:
  def __init__(self, mean, std, inplace=False):
    self.mean, self.std, self.inplace = mean, std, inplace

  def __call__(self, tensor):
    return normalize(tensor, self.mean, self.std, self.inplace)


def _functional_module() -> types.ModuleType:
  m = _Module("torchvision.transforms.functional")
  for fn in (get_image_num_channels, get_dimensions, get_image_size, resize, crop, pad,
             center_crop, pil_to_tensor, to_tensor, normalize):
    setattr(m, fn.__name__, fn)
  m.InterpolationMode = InterpolationMode
  m.pil_modes_mapping = dict(_PIL_MODES)
  return m


def _real_torchvision_works() -> bool:
  try:
    import torchvision  # noqa: F401
    import torchvision.transforms  # noqa: F401
    return True
  except Exception:  # noqa: BLE001 -- a CUDA build beside a CPU torch raises OSError / ImportError
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
      del sys.modules[name]
    return False


def import_timm():
  """``import timm`` (and ``timm.data``) with the stand-in in ``sys.modules`` for the
  duration of the import only, unless a real torchvision imports.

  Returns ``(timm, standin_used)``. timm's modules keep the references they bound at
  import (``torchvision.transforms as transforms``, ``... functional as F``); afterwards
  ``torchvision`` is absent again, so ``importlib.util.find_spec("torchvision")`` is None
  and transformers keeps its PIL image-processor backend in the same process.
  """
  import importlib
  if "timm" in sys.modules:
    return sys.modules["timm"], _STANDIN_USED[0]
  if _real_torchvision_works():
    _STANDIN_USED[0] = False
    return importlib.import_module("timm"), False
  modules = _build()
  sys.modules.update(modules)
  try:
    timm = importlib.import_module("timm")
    importlib.import_module("timm.data")
  finally:
    for name in modules:
      sys.modules.pop(name, None)
  _STANDIN_USED[0] = True
  return timm, True


_STANDIN_USED = [False]


def _build() -> dict[str, types.ModuleType]:
  modules = {name: _Module(name) for name in _MODULES}
  modules["torchvision.transforms.functional"] = _functional_module()
  tv = modules["torchvision"]
  tv.IS_PLATONIC_JAX_STANDIN = True
  tv.__version__ = "0.0+platonic-jax-test-standin"
  tr = modules["torchvision.transforms"]
  for cls in (Compose, Resize, CenterCrop, ToTensor, Normalize):
    setattr(tr, cls.__name__, cls)
  tr.InterpolationMode = InterpolationMode
  tr.functional = modules["torchvision.transforms.functional"]
  tv.transforms, tv.ops, tv.datasets, tv.utils = (
      tr, modules["torchvision.ops"], modules["torchvision.datasets"], modules["torchvision.utils"])
  modules["torchvision.ops"].misc = modules["torchvision.ops.misc"]
  for name, module in modules.items():
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
  return modules
