"""The encoder benchmark's roofline inputs: the model FLOP count and the matmul peak."""

from __future__ import annotations

import numpy as np
import transformers

from platonic_jax.benchmarks import encoders as bench
from platonic_jax.encoders import registry


def test_model_gflop_counts_every_matmul_of_one_sample():
  """Against the analytic matmul count of a small DINOv2 (patch embedding, dense layers,
  both attention matmuls, here 40% of the total): XLA's count adds only elementwise work
  (norms, softmax, GELU), a few percent. (``_model_gflop`` costs the plain module: the
  CPU variant's attention loop over groups of samples would be counted once.)"""
  d, layers, side, patch = 64, 2, 224, 14
  config = transformers.Dinov2Config(hidden_size=d, num_attention_heads=4,
                                     num_hidden_layers=layers, mlp_ratio=4,
                                     image_size=side, patch_size=patch)
  images = np.zeros((8, side, side, 3), np.float32)
  gflop = bench._model_gflop(registry.get("dinov2"), config, (images,))
  patches = (side // patch) ** 2
  t = patches + 1
  dense = layers * (4 * d * d + 2 * d * 4 * d)          # qkv + out, fc1 + fc2
  analytic = (2 * t * dense + layers * 4 * t * t * d + 2 * patches * 3 * patch * patch * d) / 1e9
  assert 1.0 <= gflop / analytic < 1.15, (gflop, analytic)


def test_gemm_peak_is_a_finite_rate_for_both_libraries():
  peaks = bench._gemm_peak(["fp32", "bf16"], shapes=((64, 32, 48),), reps=2)
  assert set(peaks) == {"fp32", "bf16"}
  for xla, torch_rate in peaks.values():
    assert np.isfinite(xla) and xla > 0 and np.isfinite(torch_rate) and torch_rate > 0

