"""Frozen Flax encoders loading Hugging Face checkpoints (ResNet, GPT-2, DINOv2, and the
decoder LMs: Llama, Mistral, Mixtral, Gemma 1-3, OLMo 1-2, Qwen2-3, BLOOM).

    from platonic_jax import encoders
    enc = encoders.load("microsoft/resnet-18", dtype="float32")
    enc.modality, enc.dim, enc.num_layers
    feats = enc.encode(images, batch_size=64)          # np [N, D]
    feats = enc.encode(images, layers="all")           # np [L, N, D] (list if widths differ)
    lm = encoders.load("mistralai/Mistral-7B-v0.1", model_parallel=8)   # sharded params
    feats, bpb = lm.encode(texts, layers="all", bits_per_byte=True)    # [L+1, N, D], [N]

Architectures are registered in ``registry.py`` (one module per architecture).

The names below are imported on first use, so ``platonic_jax.encoders.preprocess`` (numpy
and PIL only) can be imported by the data loader's worker processes without jax / flax.
"""

import importlib

_EXPORTS = {"ConversionError": "convert", "Encoder": "core", "load": "core",
            "resolve": "core", "REGISTRY": "registry", "supported": "registry"}

__all__ = list(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"platonic_jax.encoders.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'platonic_jax.encoders' has no attribute {name!r}")
