"""Offline stand-ins for the Platonic study's inputs: a ``minhuh/prh``-layout dataset
(parquet with an ``image`` struct and a ``text`` list per row), feature files in the
release's ``.pt`` format, and the sweep's config pointed at them."""

from __future__ import annotations

import io
import os

import numpy as np

import hf_fixtures as fx
from platonic_jax.prh import models as models_lib

# Two language and two vision models of different families, in the release's names.
LANGUAGE_PT = {"bigscience/bloomz-tiny": (4, 48, "bfloat16"), "huggyllama/llama-tiny": (5, 40,
                                                                                      "float32")}
VISION_PT = {"vit_tiny_patch16_224.augreg_in21k": (3, 32, None),   # [N, L, D]
             "vit_small_patch14_dinov2.lvd142m": (3, (16, 24, 32), None)}  # a per-layer list


def fake_prh(root: str, n: int = 40, seed: int = 0) -> str:
  """``root/data/train-00000-of-00001.parquet``: n PNG images, two captions each (the
  hub layout of ``minhuh/prh``; ``datasets`` stores an Image as {bytes, path})."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from PIL import Image
  images, texts = [], []
  for i, im in enumerate(fx.random_images(n, seed)):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(im)).save(buf, format="PNG")
    images.append({"bytes": buf.getvalue(), "path": f"{i}.png"})
    texts.append([f"{fx.GPT2_CORPUS[i % 6]} {i}", f"a second caption of image {i}"])
  struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
  table = pa.table({"image": pa.array(images, struct), "text": pa.array(texts,
                                                                        pa.list_(pa.string()))})
  os.makedirs(os.path.join(root, "data"), exist_ok=True)
  pq.write_table(table, os.path.join(root, "data", "train-00000-of-00001.parquet"))
  return root


def _layers(z, widths, seed):
  """Layer l sees the shared latent z through its own map, with noise growing with l
  (so layer pairs score differently), plus a few large outliers (the clamp matters)."""
  rng = np.random.default_rng(seed)
  out = []
  for l, d in enumerate(widths):
    x = z @ rng.standard_normal((z.shape[1], d)) + (0.6 + 0.5 * l) * rng.standard_normal(
        (z.shape[0], d))
    x[rng.integers(0, z.shape[0], 3), rng.integers(0, d, 3)] += 40.0
    out.append(x.astype(np.float32))
  return out


def release_files(directory: str, n: int = 120, seed: int = 0) -> dict[str, str]:
  """One ``extract_features.py``-format file per model of LANGUAGE_PT / VISION_PT:
  {"feats": [N, L, D] (bf16 for one language model, as the release's bf16 models
  write), or a list of [N, D_l] tensors, "num_params", and for language models "mask",
  "loss", "bpb"}. Returns {model name: path}."""
  import torch
  os.makedirs(directory, exist_ok=True)
  z = np.random.default_rng(seed).standard_normal((n, 6))
  paths = {}
  for i, (name, (num, width, dtype)) in enumerate(LANGUAGE_PT.items()):
    layers = _layers(z, [width] * num, seed + 10 + i)
    feats = torch.from_numpy(np.stack(layers, 1)).to(getattr(torch, dtype))
    d = {"feats": feats, "num_params": 1_000_000 * (i + 1),
         "mask": torch.ones(n, 7, dtype=torch.long), "loss": torch.tensor(3.0 - i),
         "bpb": torch.tensor(1.2 - 0.3 * i)}
    paths[name] = os.path.join(directory, models_lib.release_filename(name, "language"))
    torch.save(d, paths[name])
  for i, (name, (num, width, _)) in enumerate(VISION_PT.items()):
    widths = [width] * num if isinstance(width, int) else list(width)
    layers = _layers(z, widths, seed + 20 + i)
    feats = (torch.from_numpy(np.stack(layers, 1)) if isinstance(width, int)
             else [torch.from_numpy(x) for x in layers])
    paths[name] = os.path.join(directory, models_lib.release_filename(name, "vision"))
    torch.save({"feats": feats, "num_params": 5_000_000 * (i + 1)}, paths[name])
  return paths


def sweep_config(workdir_inputs: dict, **overrides):
  """configs/prh.py with the fields set (dotted names), unlocked."""
  from configs import prh
  c = prh.get_config()
  c.unlock()
  for path, value in {**workdir_inputs, **overrides}.items():
    node = c
    *parents, last = path.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  return c
