"""DINOv2 (Hugging Face ``Dinov2Config``: ViT-S/B/L/g, patch 14) as a member of the ViT
family (``vit.py``): pre-norm blocks with a CLS token, LayerScale, GELU MLP or (giant)
SwiGLU FFN, and HF's bicubic position-embedding interpolation (no antialias) for inputs
whose patch grid differs from the checkpoint's (``image_size / patch_size``).

Features keep HF's ``hidden_states`` convention (``features="hidden_states"``), unlike the
rest of the family: layer 0 = embeddings (patches + CLS + positions), then one per
block; the last one is taken *after* the final layer norm, so its default ``"cls"`` pool
equals HF's ``pooler_output``. Pools: ``"cls"`` (the CLS token), ``"mean"`` (mean over
patch tokens, CLS excluded). (The timm ids ``timm/vit_*_dinov2.*`` and
``Dinov2WithRegistersModel`` give the study's per-block features instead.)
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import vit, vit_hf

MODEL_TYPES = ("dinov2",)
MODALITY = "image"
POOLS = ("cls", "mean")
PARTITION_RULES = vit.PARTITION_RULES

# XLA:CPU: a device's batch runs in micro-batches of 4 images (encoders/core.py), whose
# activations ([4 x 257, D], the MLP's [4 x 257, 4 D]) stay in the caches. At batch 16 on
# the project's 2-core CPU: DINOv2-S 12.2 -> 13.4 img/s, DINOv2-B 3.3 -> 3.8 img/s.
CPU_MICRO_BATCH = vit.CPU_MICRO_BATCH


def build(hf_config, dtype=jnp.float32) -> vit.VisionTransformer:
  return vit.build(vit_hf.spec(hf_config), dtype, features="hidden_states")


# CPU meshes: attention in groups of samples side by side (vit.attention); same bits.
cpu_variant = vit.cpu_variant
select_attention = vit.select_attention   # attention kernel for the mesh (attention.py)


def convert(state_dict: Mapping[str, np.ndarray], hf_config) -> dict:
  """HF Dinov2Model (or Dinov2ForImageClassification) weights -> ViT-family params.

  ``embeddings.mask_token`` (pre-training only) and a classifier head are known and unused.
  """
  return vit_hf.convert(state_dict, hf_config)
