"""Frozen Flax encoders loading Hugging Face checkpoints (ResNet, GPT-2, DINOv2).

    from platonic_jax import encoders
    enc = encoders.load("microsoft/resnet-18", dtype="float32")
    enc.modality, enc.dim, enc.num_layers
    feats = enc.encode(images, batch_size=64)          # np [N, D]
    feats = enc.encode(images, layers="all")           # np [L, N, D] (list if widths differ)

Architectures are registered in ``registry.py`` (one module per architecture).
"""

from platonic_jax.encoders.convert import ConversionError
from platonic_jax.encoders.core import Encoder, load, resolve
from platonic_jax.encoders.registry import REGISTRY, supported

__all__ = ["ConversionError", "Encoder", "load", "resolve", "REGISTRY", "supported"]
