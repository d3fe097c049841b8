"""Which attention path a model takes (encoders/attention.py): the platform table, the
checks of a forced path, the once-per-path log, and the kernels on random inputs. (The
paths' numbers on whole models against transformers: tests/test_attention_paths.py.)"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest

from platonic_jax.encoders import attention, decoder, vit


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch):
  monkeypatch.setattr(attention, "_logged", set())
  monkeypatch.setattr(attention, "_taken", {})


@pytest.mark.parametrize("platform,dtype,head_dim,einsum_only,want", [
    ("cpu", jnp.float32, 64, False, "einsum"),
    ("cpu", jnp.bfloat16, 64, False, "einsum"),
    ("gpu", jnp.bfloat16, 64, False, "cudnn"),
    ("gpu", jnp.bfloat16, 256, False, "cudnn"),
    ("gpu", jnp.bfloat16, 288, False, "xla"),     # past cuDNN flash's head dims
    ("gpu", jnp.bfloat16, 60, False, "xla"),      # not a multiple of 8
    ("gpu", jnp.float32, 64, False, "xla"),       # cuDNN flash has no fp32
    ("gpu", jnp.bfloat16, 64, True, "einsum"),    # soft-capping: not expressible
    ("tpu", jnp.bfloat16, 64, False, "xla"),
    ("tpu", jnp.float32, 128, False, "xla"),
])
def test_choose_maps_platform_dtype_and_model_to_a_path(platform, dtype, head_dim,
                                                       einsum_only, want):
  assert attention.choose(platform, dtype, head_dim=head_dim, einsum_only=einsum_only) == want
  assert attention.resolve("auto", platform, dtype, head_dim=head_dim,
                           einsum_only=einsum_only) == want


def test_resolve_rejects_unknown_and_impossible_paths():
  with pytest.raises(ValueError, match=r"attention='flash': allowed \('auto', 'einsum'"):
    attention.resolve("flash", "gpu", jnp.bfloat16, head_dim=64)
  with pytest.raises(ValueError, match="gemma2: attention='xla' cannot compute"):
    attention.resolve("xla", "gpu", jnp.bfloat16, head_dim=64, einsum_only=True, what="gemma2")
  assert attention.resolve("einsum", "gpu", jnp.bfloat16, head_dim=64) == "einsum"


def test_record_logs_each_model_and_path_once(caplog):
  with caplog.at_level(logging.INFO):
    for _ in range(3):
      attention.record("m", "xla")
    attention.record("m", "einsum")
  lines = [r.getMessage() for r in caplog.records if "m attention" in r.getMessage()]
  assert lines == ["m attention: xla", "m attention: einsum"]
  assert attention.taken("m") == "einsum" and attention.taken("other") is None


@pytest.mark.parametrize("window", [None, 3])
def test_fused_calls_equal_the_einsum_form_on_random_inputs(window):
  """The kernels alone, torch-free (so the newest-JAX CI leg checks the
  jax.nn.dot_product_attention API too): causal + padding (+ window) as a whole mask
  (XLA) and as flag + lengths (cuDNN's form, here refused by jax and run by XLA)."""
  rng = np.random.default_rng(0)
  b, t, n, k, hd = 3, 7, 4, 2, 8
  q, kk, v = (rng.normal(size=(b, t, h, hd)).astype(np.float32) for h in (n, k, k))
  lengths = np.array([7, 4, 1], np.int32)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  allowed = decoder.allowed_mask(jnp.asarray(mask), window)            # [B, T, S]
  ref = np.asarray(decoder.attention(q, kk, v, allowed, 0.3, jnp.float32))
  xla = attention.dot_product_attention(q, kk, v, scale=0.3, dtype=jnp.float32, impl="xla",
                                        model="t", mask=allowed[:, None])
  assert attention.taken("t") == "xla"
  np.testing.assert_allclose(np.asarray(xla), ref, rtol=1e-5, atol=1e-6)
  cudnn_form = attention.dot_product_attention(
      q, kk, v, scale=0.3, dtype=jnp.float32, impl="cudnn", model="t", is_causal=True,
      lengths=jnp.asarray(lengths), window=window)
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(cudnn_form)[real], ref[real], rtol=1e-5, atol=1e-6)
  bf16 = attention.dot_product_attention(q, kk, v, scale=0.3, dtype=jnp.bfloat16, impl="xla",
                                         model="t", mask=allowed[:, None])
  assert bf16.dtype == jnp.float32
  ref16 = np.asarray(decoder.attention(q, kk, v, allowed, 0.3, jnp.bfloat16))
  np.testing.assert_allclose(np.asarray(bf16), ref16, rtol=0, atol=3e-2)
  assert np.abs(np.asarray(bf16) - ref).max() > 1e-5   # the operands really were bf16


def test_vit_fused_attention_equals_the_cpu_groups():
  rng = np.random.default_rng(1)
  q, k, v = (rng.normal(size=(4, 9, 2, 8)).astype(np.float32) for _ in range(3))
  groups = np.asarray(vit.attention(q, k, v, 0.35, jnp.float32, group=2))
  for impl in ("xla", "einsum"):
    got = vit.attention(q, k, v, 0.35, jnp.float32, group=0, impl=impl)
    np.testing.assert_allclose(np.asarray(got), groups, rtol=1e-5, atol=1e-6)
