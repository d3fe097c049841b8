"""The release's own feature files, read directly.

``minyoungg/platonic-rep`` ``extract_features.py`` saves one ``torch.save`` dict per
model: ``{"feats": [N, L, D] tensor (or a list of L per-layer [N, D_l] tensors),
"num_params": int}`` and, for language models, ``"mask"`` ([N, T] attention mask),
``"loss"`` and ``"bpb"`` (0-d tensors: the means over the N captions). They are read
with ``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain
containers only, no pickled code runs. torch is needed only here (an optional runtime
dependency: a missing torch is an error saying how to install a CPU build).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from platonic_jax import errors

REQUIRED = ("feats",)


@dataclasses.dataclass
class LayerFeatures:
  """One model's features for scoring.

  layers: [L, N, D] float32, or a list of L arrays [N, D_l] when the widths differ (the
    release's list form; each layer is then outlier-clamped on its own, as its
    ``compute_alignment`` does). num_params: parameter count (None if unknown).
  bpb, loss: language models: mean bits per byte and next-token loss (nats) over the
    captions; None for vision models. origin: the file or entry it came from.
  """
  layers: object
  num_params: int | None
  bpb: float | None
  loss: float | None
  origin: str

  @property
  def num_layers(self) -> int:
    return len(self.layers)

  @property
  def num_samples(self) -> int:
    return int(self.layers[0].shape[0])

  @property
  def stacked(self) -> bool:
    return isinstance(self.layers, np.ndarray)


def _torch():
  try:
    import torch  # noqa: PLC0415 - optional: only the release's files need it
  except ImportError:
    raise errors.InputError(
        "reading the release's .pt feature files needs PyTorch, which is not installed. Fix: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu (a CPU build is "
        "enough; nothing else of this package needs torch)") from None
  return torch


def _array(torch, x, path: str, what: str) -> np.ndarray:
  if not isinstance(x, torch.Tensor):
    raise errors.InputError(f"{path}: {what} is a {type(x).__name__}, not a tensor; expected the "
                            "dict extract_features.py saves")
  return x.detach().to(torch.float32).cpu().numpy()


def _scalar(torch, d: dict, key: str, path: str) -> float | None:
  if key not in d or d[key] is None:
    return None
  v = d[key]
  v = float(v.float().mean()) if isinstance(v, torch.Tensor) else float(v)
  if not np.isfinite(v):
    raise errors.InputError(f"{path}: {key!r} is {v}; re-extract this model's features")
  return v


def check_finite(layers, origin: str) -> None:
  """Every layer finite, or an InputError naming the file, the layer and the fix."""
  for i, layer in enumerate(layers):
    bad = ~np.isfinite(layer)
    if bad.any():
      row = int(np.argwhere(bad)[0][0])
      raise errors.InputError(
          f"{origin}: layer {i} has {int(bad.sum())} NaN/Inf value(s) (first in sample {row}); "
          "re-extract this model's features (in float32 if they were half precision) or drop "
          "the model from the sweep")


def load(path: str) -> LayerFeatures:
  """The features in one release ``.pt`` file, checked: a dict with ``feats`` [N, L, D]
  (or a list of [N, D_l]), every layer finite, the same N in every layer."""
  torch = _torch()
  if not os.path.exists(path):
    raise errors.InputError(f"no such feature file: {path}")
  try:
    d = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
    raise errors.InputError(
        f"{path} cannot be read as a feature file ({type(e).__name__}: {str(e)[:300]}); it must "
        "be a torch.save dict of tensors as extract_features.py writes (loaded with "
        "weights_only=True: files holding pickled objects are refused)") from None
  if not isinstance(d, dict) or "feats" not in d:
    keys = sorted(d) if isinstance(d, dict) else type(d).__name__
    raise errors.InputError(
        f"{path} has no 'feats' (it holds {keys}); a feature file of the release is a dict "
        "with 'feats' = [N, L, D] (or a list of per-layer [N, D] tensors), 'num_params' and, "
        "for language models, 'loss' and 'bpb'. Re-extract it with extract_features.py")
  feats = d["feats"]
  if isinstance(feats, (list, tuple)):
    if not feats:
      raise errors.InputError(f"{path}: 'feats' is an empty list")
    layers = [_array(torch, f, path, f"feats[{i}]") for i, f in enumerate(feats)]
    bad = [i for i, x in enumerate(layers) if x.ndim != 2]
    if bad:
      raise errors.InputError(f"{path}: feats[{bad[0]}] has shape {layers[bad[0]].shape}; each "
                              "per-layer tensor must be [N, D]")
    if len({x.shape[0] for x in layers}) != 1:
      raise errors.InputError(f"{path}: the layers hold different numbers of samples "
                              f"{sorted({x.shape[0] for x in layers})}")
  else:
    arr = _array(torch, feats, path, "feats")
    if arr.ndim == 2:
      arr = arr[:, None]
    if arr.ndim != 3:
      raise errors.InputError(f"{path}: 'feats' has shape {tuple(arr.shape)}; expected "
                              "[N, L, D] (samples, layers, width)")
    layers = np.ascontiguousarray(np.moveaxis(arr, 1, 0))  # [N, L, D] -> [L, N, D]
  check_finite(layers, path)
  num_params = d.get("num_params")
  num_params = int(num_params) if num_params is not None else None
  return LayerFeatures(layers, num_params, _scalar(torch, d, "bpb", path),
                       _scalar(torch, d, "loss", path), path)
