"""The attention kernels of the transformer encoders (encoders/attention.py).

Every path is forced on CPU and compared with the hand-written einsum path and with
transformers' PyTorch models; the path that actually traced is read back from
``attention.taken`` (and the log), so a path that silently fell back fails here.
(cuDNN itself needs an NVIDIA GPU: on CPU a forced "cudnn" must be refused by jax and
the fall-back must be logged and recorded as "xla".)
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_fixtures as fx
from platonic_jax import encoders
from platonic_jax.encoders import attention, decoder, gpt2, vit
from platonic_jax.encoders import tokenize as tok_lib

TEXTS = ["a dog runs across the grass",
         "two children are playing with a red ball in the park near the lake",
         "a man", "the pigeons sit on the roof of the market while people walk near the lake"]
FP32_TOL, BF16_TOL = 1e-4, 2e-2


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch):
  """Each test sees its own first trace (the log is once per process otherwise)."""
  monkeypatch.setattr(attention, "_logged", set())
  monkeypatch.setattr(attention, "_taken", {})


# ----- GPT-2 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2_ckpt(tmp_path_factory):
  return fx.tiny_gpt2(str(tmp_path_factory.mktemp("gpt2")))


def _gpt2_reference(model, tok, texts, pool):
  batch = tok(texts, padding="longest", return_tensors="pt")
  with torch.no_grad():
    out = model(**batch, output_hidden_states=True)
  m = batch["attention_mask"].double().numpy()
  hs = [h.double().numpy() for h in out.hidden_states]
  if pool == "mean":
    return np.stack([np.einsum("btd,bt->bd", h, m) / m.sum(1, keepdims=True) for h in hs])
  last = m.sum(1).astype(int) - 1
  return np.stack([h[np.arange(len(texts)), last] for h in hs])


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_gpt2_forced_xla_path_equals_einsum_and_torch(gpt2_ckpt, pool, caplog):
  directory, model = gpt2_ckpt
  auto = encoders.load(directory)
  assert auto.module.attn_impl == "einsum"          # CPU: the tuned einsum form
  want = auto.encode(TEXTS, batch_size=4, layers="all", pool=pool)
  assert attention.taken("gpt2") == "einsum"
  with caplog.at_level(logging.INFO):
    fused = encoders.load(directory, attention="xla")
    got = fused.encode(TEXTS, batch_size=4, layers="all", pool=pool)
    fused.encode(TEXTS[:1], batch_size=2, pool=pool)     # a second compile: no new line
  assert fused.module.attn_impl == "xla" and attention.taken("gpt2") == "xla"
  assert [r.getMessage() for r in caplog.records
          if r.getMessage().startswith("gpt2 attention")] == ["gpt2 attention: xla"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  ref = _gpt2_reference(model, tok_lib.load_tokenizer(directory), TEXTS, pool)
  assert max(fx.rel_error(a, b) for a, b in zip(got, ref)) < FP32_TOL


def test_gpt2_xla_path_in_bf16_and_config_variants(tmp_path):
  directory, model = fx.tiny_gpt2(str(tmp_path), seed=1, scale_attn_by_inverse_layer_idx=True)
  tok = tok_lib.load_tokenizer(directory)
  ref = _gpt2_reference(model, tok, TEXTS, "mean")
  fp32 = encoders.load(directory, attention="xla").encode(TEXTS, batch_size=4, layers="all")
  assert max(fx.rel_error(a, b) for a, b in zip(fp32, ref)) < FP32_TOL
  bf16 = encoders.load(directory, dtype="bfloat16", attention="xla")
  got = bf16.encode(TEXTS, batch_size=4, layers="all")
  errs = [fx.rel_error(a, b) for a, b in zip(got, ref)]
  assert 1e-6 < max(errs) < BF16_TOL, errs
  assert attention.taken("gpt2") == "xla"


def test_gpt2_upcast_attention_in_bf16_stays_on_einsum(tmp_path):
  directory, _ = fx.tiny_gpt2(str(tmp_path), reorder_and_upcast_attn=True)
  assert encoders.load(directory, dtype="bfloat16").module.attn_impl == "einsum"
  with pytest.raises(ValueError, match="GPT-2: attention='xla' cannot compute"):
    encoders.load(directory, dtype="bfloat16", attention="xla")
  # float32 q k^T is what the fused op computes anyway
  assert encoders.load(directory, attention="xla").module.attn_impl == "xla"


def test_forced_cudnn_without_a_gpu_falls_back_logged_and_recorded(gpt2_ckpt, caplog):
  """jax refuses cuDNN on CPU: the call runs the XLA form, warns, and records "xla" --
  the path that ran, never the one that was asked for."""
  directory, _ = gpt2_ckpt
  want = encoders.load(directory).encode(TEXTS, batch_size=4, layers="all")
  enc = encoders.load(directory, attention="cudnn")
  with caplog.at_level(logging.WARNING):
    got = enc.encode(TEXTS, batch_size=4, layers="all")
  assert "gpt2 attention: cuDNN unavailable" in caplog.text
  assert attention.taken("gpt2") == "xla"
  # cuDNN's way of masking (causal flag + lengths) gives the same real-token features
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----- the ViT family (DINOv2) -----------------------------------------------------------------

def test_dinov2_forced_xla_path_equals_the_cpu_groups_and_torch(tmp_path):
  directory, model = fx.tiny_dinov2(str(tmp_path))
  images = fx.random_images(5, seed=1)
  cpu = encoders.load(directory)
  assert (cpu.module.attention_impl, cpu.module.attention_group) == (
      "einsum", vit.CPU_ATTENTION_GROUP)
  want = cpu.encode(images, batch_size=8, layers="all")
  assert attention.taken("vit") == "einsum"
  fused = encoders.load(directory, attention="xla")
  assert (fused.module.attention_impl, fused.module.attention_group) == ("xla", 0)
  got = fused.encode(images, batch_size=8, layers="all")
  assert attention.taken("vit") == "xla"
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with torch.no_grad():
    out = model(torch.from_numpy(fx.hf_pixel_values(directory, images)))
  assert fx.rel_error(got[-1], out.pooler_output.double().numpy()) < FP32_TOL
  bf = encoders.load(directory, dtype="bfloat16", attention="xla").encode(images, batch_size=8)
  assert fx.rel_error(bf, out.pooler_output.double().numpy()) < BF16_TOL


def test_vit_select_attention_by_platform(tmp_path):
  directory, _ = fx.tiny_dinov2(str(tmp_path))
  module = encoders.load(directory).module
  for platform, dtype, want in (("gpu", jnp.bfloat16, ("cudnn", 0)),
                                ("gpu", jnp.float32, ("xla", 0)),
                                ("tpu", jnp.bfloat16, ("xla", 0)),
                                ("cpu", jnp.float32, ("einsum", 0))):
    m = vit.select_attention(module.clone(dtype=dtype, attention_group=0), platform)
    assert (m.attention_impl, m.attention_group) == want, platform
    # the CPU groups (cpu_variant) join the einsum form only, never a fused one
    assert vit.cpu_variant(m, {})[0].attention_group == (
        vit.CPU_ATTENTION_GROUP if want[0] == "einsum" else 0)


# ----- the decoder family ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["mistral", "qwen2"])   # sliding window; GQA + biases
def test_decoder_forced_xla_path_equals_einsum_and_torch(variant, tmp_path):
  directory, model = fx.tiny_decoder(str(tmp_path), variant)
  auto = encoders.load(directory)
  assert auto.module.impl == "einsum"
  want, bpb = auto.encode(TEXTS, batch_size=4, layers="all", bits_per_byte=True)
  fused = encoders.load(directory, attention="xla")
  got, got_bpb = fused.encode(TEXTS, batch_size=4, layers="all", bits_per_byte=True)
  assert attention.taken("decoder") == "xla"
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(got_bpb, bpb, rtol=1e-5)
  tok = tok_lib.load_release_tokenizer(directory)
  tok.padding_side = "right"
  batch = tok(TEXTS, padding="longest", return_tensors="pt")
  with torch.no_grad():
    out = model(**batch, output_hidden_states=True)
  m = batch["attention_mask"].double().numpy()
  ref = [np.einsum("btd,bt->bd", h.double().numpy(), m) / m.sum(1, keepdims=True)
         for h in out.hidden_states]
  assert max(fx.rel_error(a, b) for a, b in zip(got, ref)) < FP32_TOL


def test_decoder_select_attention_by_platform(tmp_path):
  import transformers
  directory, _ = fx.tiny_decoder(str(tmp_path / "m"), "mistral")
  config = transformers.AutoConfig.from_pretrained(directory)
  module = decoder.build(config, jnp.bfloat16)
  assert module.impl == "einsum"     # the default devices here are CPUs
  assert decoder.select_attention(module, "gpu").impl == "xla"   # head_dim 4: not cuDNN's
  module = module.clone(spec=dataclasses.replace(module.spec, head_dim=64))
  assert decoder.select_attention(module, "gpu").impl == "cudnn"
  assert decoder.select_attention(module.clone(dtype=jnp.float32), "gpu").impl == "xla"
  assert decoder.select_attention(module, "tpu").impl == "xla"
  capped, _ = fx.tiny_decoder(str(tmp_path / "g"), "gemma2")
  gemma = decoder.build(transformers.AutoConfig.from_pretrained(capped), jnp.bfloat16)
  assert decoder.select_attention(gemma, "gpu").impl == "einsum"   # logit soft-capping
  assert gpt2.select_attention(gpt2.GPT2(gpt2.spec_from_config({}), jnp.bfloat16),
                               "gpu").attn_impl == "cudnn"


def test_encoder_without_selectable_attention_rejects_a_forced_path(tmp_path):
  directory, _ = fx.tiny_resnet(str(tmp_path))
  with pytest.raises(ValueError, match="has no selectable attention"):
    encoders.load(directory, attention="xla")
