"""Resampling learned 2-D position embeddings to another patch grid, as PyTorch does it.

Checkpoints store one embedding per patch of the grid they were trained on; an input of
another size needs the grid resampled. Each reference resamples with
``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``:

- timm's ``resample_abs_pos_embed`` (``timm/layers/pos_embed.py``) and transformers'
  ``Dinov2WithRegisters`` pass ``antialias=True``: PyTorch's separable anti-aliased filter
  (``aten/src/ATen/native/cpu/UpSampleKernel.cpp``, ``_compute_index_ranges_weights`` with
  ``HelperInterpCubic::aa_filter``): Keys' cubic with a = -0.5, support widened by the
  downscale factor, taps cut at the border and renormalised (PIL's scheme);
- transformers' ViT, ViTMAE, CLIP and DINOv2 pass no antialias: the cubic convolution with
  a = -0.75 over 4 taps whose indices are clamped at the border.

Both are linear maps along each axis, written here as [n_out, n_in] float64 matrices and
applied with one einsum (jax.image.resize uses a = -0.5 without renormalised borders and
antialiases differently, so it matches neither).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _cubic(x: float, a: float) -> float:
  x = abs(x)
  if x < 1:
    return ((a + 2) * x - (a + 3)) * x * x + 1
  if x < 2:
    return (((x - 5) * x + 8) * x - 4) * a
  return 0.0


@functools.lru_cache(maxsize=None)
def bicubic_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
  """[n_out, n_in] float64 matrix of torch ``interpolate(mode="bicubic",
  align_corners=False, antialias=antialias)`` along one axis, given ``size=n_out``."""
  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  if not antialias:
    for o in range(n_out):
      src = scale * (o + 0.5) - 0.5
      i0 = math.floor(src)
      t = src - i0
      for off in (-1, 0, 1, 2):
        m[o, min(max(i0 + off, 0), n_in - 1)] += _cubic(t - off, -0.75)
    return m
  support = 2.0 * max(scale, 1.0)
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  for o in range(n_out):
    center = scale * (o + 0.5)
    lo = max(int(center - support + 0.5), 0)   # C++ static_cast<int64_t>: truncation
    hi = min(int(center + support + 0.5), n_in)
    w = np.array([_cubic((j - center + 0.5) * invscale, -0.5) for j in range(lo, hi)])
    m[o, lo:hi] = w / w.sum()
  return m


def resample(grid_embed: jax.Array, old: tuple[int, int], new: tuple[int, int],
             antialias: bool) -> jax.Array:
  """Patch position embeddings [old_h * old_w, D] -> [new_h * new_w, D] float32, row-major
  over (h, w) as the patch tokens; returned unchanged when the grids are equal."""
  if tuple(old) == tuple(new):
    return grid_embed
  (oh, ow), (nh, nw) = old, new
  if grid_embed.shape[0] != oh * ow:
    raise ValueError(f"{grid_embed.shape[0]} position embeddings do not form a {oh}x{ow} grid")
  mh = jnp.asarray(bicubic_matrix(oh, nh, antialias), jnp.float32)
  mw = jnp.asarray(bicubic_matrix(ow, nw, antialias), jnp.float32)
  grid = grid_embed.reshape(oh, ow, -1).astype(jnp.float32)
  out = jnp.einsum("hi,ijd,wj->hwd", mh, grid, mw,  # [nh, oh] x [oh, ow, D] x [nw, ow] -> [nh, nw, D]
                   precision=jax.lax.Precision.HIGHEST)
  return out.reshape(nh * nw, -1)
