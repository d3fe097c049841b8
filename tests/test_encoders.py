"""Encoder core, ResNet and DINOv2 vs transformers PyTorch (CPU) on tiny random checkpoints.

Offline: checkpoints are built here (tests/hf_fixtures.py) with ``save_pretrained`` and
saved image-processor configs; raw images go in, features come out and are compared with
the HF image processor + PyTorch model (``output_hidden_states``), pooled in float64.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_fixtures as fx  # noqa: E402
from platonic_jax import encoders  # noqa: E402
from platonic_jax.encoders import convert as convert_lib  # noqa: E402
from platonic_jax.encoders import (auto_dtype, dinov2, pos_embed, preprocess, registry,  # noqa: E402
                                   resnet, vit)

FP32_TOL, BF16_TOL = 1e-4, 2e-2


def _torch_hidden(model, directory, images):
  pv = fx.hf_pixel_values(directory, images)
  with torch.no_grad():
    return model(torch.from_numpy(pv), output_hidden_states=True)


@pytest.fixture(scope="module", params=["basic", "bottleneck"])
def resnet_ckpt(request, tmp_path_factory):
  return fx.tiny_resnet(str(tmp_path_factory.mktemp(f"resnet_{request.param}")), request.param)


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "swiglu"])
def dinov2_ckpt(request, tmp_path_factory):
  return fx.tiny_dinov2(str(tmp_path_factory.mktemp("dinov2")), swiglu=request.param)


@pytest.fixture(scope="module")
def images():
  return fx.random_images(5, seed=1)


# ----- preprocessing -------------------------------------------------------------------

def _pil_modes():
  rng = np.random.default_rng(3)
  rgb = Image.fromarray(rng.integers(0, 256, (41, 53, 3), dtype=np.uint8))
  rgba = Image.fromarray(rng.integers(0, 256, (47, 38, 4), dtype=np.uint8), "RGBA")
  pal_t = rgb.convert("P")
  pal_t.info["transparency"] = 0
  return {"RGB": rgb, "L": rgb.convert("L"), "RGBA": rgba, "LA": rgba.convert("LA"),
          "CMYK": rgb.convert("CMYK"), "P": rgb.convert("P"), "P+transparency": pal_t,
          "I;16": rgb.convert("L").convert("I;16")}


@pytest.mark.parametrize("builder", ["resnet", "dinov2"])
def test_preprocess_matches_hf_image_processor(builder, tmp_path):
  """ConvNext (resnet) and Bit (DINOv2) processors: the same float32 pixels, all PIL modes."""
  d = str(tmp_path)
  if builder == "resnet":
    fx.tiny_resnet(d)
  else:
    fx.tiny_dinov2(d)
  spec = preprocess.ImageSpec.from_dir(d)
  modes = _pil_modes()
  ours = preprocess.preprocess(list(modes.values()), spec)
  ref = fx.hf_pixel_values(d, list(modes.values())).transpose(0, 2, 3, 1)
  for i, mode in enumerate(modes):
    np.testing.assert_allclose(ours[i], ref[i], atol=1e-6, err_msg=mode)
  # uint8 arrays (gray, RGB, RGBA) equal their PIL equivalents.
  arr = np.asarray(modes["RGBA"])
  np.testing.assert_array_equal(preprocess.preprocess([arr], spec)[0], ours[2])


def test_preprocess_reads_legacy_resnet18_config(tmp_path):
  """microsoft/resnet-18 ships a legacy feature-extractor config (int size, crop_pct)."""
  cfg = {"crop_pct": 0.875, "do_normalize": True, "do_resize": True,
         "feature_extractor_type": "ConvNextFeatureExtractor",
         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
         "resample": 3, "size": 64}
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
  spec = preprocess.ImageSpec.from_dir(str(tmp_path))
  assert spec.output_size() == (64, 64)
  imgs = fx.random_images(3, sizes=((80, 120), (150, 70), (64, 64)))
  ref = fx.hf_pixel_values(str(tmp_path), imgs).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(preprocess.preprocess(imgs, spec), ref, atol=1e-6)


def test_preprocess_accepts_paths_and_bytes(tmp_path, resnet_ckpt):
  spec = preprocess.ImageSpec.from_dir(resnet_ckpt[0])
  img = Image.fromarray(fx.random_images(1)[0])
  path = tmp_path / "x.png"
  img.save(path)
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  out = preprocess.preprocess([img, str(path), buf.getvalue()], spec)
  np.testing.assert_array_equal(out[0], out[1])
  np.testing.assert_array_equal(out[0], out[2])


# ----- parity ----------------------------------------------------------------------------

@pytest.fixture(params=["direct", "winograd"])
def conv_algorithm(request, monkeypatch):
  """ResNet's 3x3 stride-1 convs as on a full-size CPU model without AMX: direct below
  WINOGRAD_MIN_CHANNELS (all of the tiny model's), or every one as Winograd. (On an AMX
  host bf16 would take the conv dots: test_resnet_parity_conv_dots.)"""
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda *a: False)
  if request.param == "winograd":
    monkeypatch.setattr(resnet, "WINOGRAD_MIN_CHANNELS", 1)
  return request.param


def test_resnet_parity_fp32_all_layers(resnet_ckpt, images, conv_algorithm):
  directory, model = resnet_ckpt
  out = _torch_hidden(model, directory, images)
  enc = encoders.load(directory)
  assert enc.module.winograd_min_channels == resnet.WINOGRAD_MIN_CHANNELS  # CPU variant
  assert enc.modality == "image" and enc.num_layers == len(out.hidden_states)
  feats = enc.encode(images, batch_size=8, layers="all")
  assert isinstance(feats, list)  # widths differ: one [N, D_l] per layer
  for l, (f, h) in enumerate(zip(feats, out.hidden_states)):
    ref = h.double().mean((2, 3)).numpy()
    assert f.shape == ref.shape and f.dtype == np.float32
    assert fx.rel_error(f, ref) < FP32_TOL, l
  last = enc.encode(images, batch_size=8)   # default: last layer == HF pooler_output
  assert fx.rel_error(last, out.pooler_output[:, :, 0, 0].numpy()) < FP32_TOL
  mx = enc.encode(images, batch_size=8, layers=[-1], pool="max")
  assert fx.rel_error(mx[0], out.hidden_states[-1].amax((2, 3)).numpy()) < FP32_TOL


def test_resnet_parity_bf16(resnet_ckpt, images, conv_algorithm):
  directory, model = resnet_ckpt
  out = _torch_hidden(model, directory, images)
  feats = encoders.load(directory, dtype="bfloat16").encode(images, batch_size=8, layers="all")
  for l, (f, h) in enumerate(zip(feats, out.hidden_states)):
    assert f.dtype == np.float32
    assert fx.rel_error(f, h.double().mean((2, 3)).numpy()) < BF16_TOL, l


def test_resnet_parity_conv_dots(resnet_ckpt, images, monkeypatch):
  """The CPU variant of bf16 on an AMX CPU -- every convolution as dots (conv_dots.py),
  in micro-batches, without YNNPACK -- here forced for fp32 too (and for the tiny model's
  few channels), so its whole network is checked against PyTorch at fp32's tolerance."""
  from platonic_jax.encoders import conv_dots
  monkeypatch.setattr(resnet, "_amx_bf16", lambda module: True)
  monkeypatch.setattr(conv_dots, "MIN_CHANNELS", 1)
  directory, model = resnet_ckpt
  out = _torch_hidden(model, directory, images)
  for dtype, tol in (("float32", FP32_TOL), ("bfloat16", BF16_TOL)):
    enc = encoders.load(directory, dtype=dtype)
    assert enc.module.conv_as_dots and enc.module.winograd_min_channels == 0
    assert enc.cpu_choice.knobs() == (True, True, False)   # dots, micro-batches, no YNNPACK
    feats = enc.encode(images, batch_size=8, layers="all")
    for l, (f, h) in enumerate(zip(feats, out.hidden_states)):
      assert fx.rel_error(f, h.double().mean((2, 3)).numpy()) < tol, (dtype, l)


def _conv_float64(x, kernel, stride, padding):
  """Zero-padded k x k convolution, NHWC x HWIO, summed tap by tap in float64."""
  k = kernel.shape[0]
  xp = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  ho = (x.shape[1] + 2 * padding - k) // stride + 1
  wo = (x.shape[2] + 2 * padding - k) // stride + 1
  return sum(np.einsum("bhwc,cd->bhwd",
                       xp[:, dy:dy + stride * (ho - 1) + 1:stride,
                          dx:dx + stride * (wo - 1) + 1:stride], kernel[dy, dx])
             for dy in range(k) for dx in range(k))


@pytest.mark.parametrize("h,w,k,stride,c", [
    (7, 7, 3, 1, 16), (6, 10, 3, 1, 16), (1, 1, 3, 1, 16), (5, 2, 3, 1, 16),  # 3x3 / 1
    (6, 10, 3, 2, 16), (7, 9, 3, 2, 16),                                       # strided
    (5, 3, 1, 1, 32), (5, 3, 1, 2, 32), (11, 9, 7, 2, 16), (9, 8, 5, 1, 16),   # 1x1, 7x7, 5x5
    (8, 8, 3, 1, 3)])                                                          # < MIN_CHANNELS
@pytest.mark.parametrize("dtype,tol", [("float32", 2e-6), ("bfloat16", 2e-2)])
def test_conv_dots_match_float64_convolution(h, w, k, stride, c, dtype, tol):
  from platonic_jax.encoders import conv_dots
  rng = np.random.default_rng(h * 100 + w * 10 + k)
  x = rng.standard_normal((2, h, w, c)).astype(np.float32)
  kernel = rng.standard_normal((k, k, c, 5)).astype(np.float32)
  y = conv_dots.conv(x, kernel, stride, k // 2, jax.numpy.dtype(dtype))
  ref = _conv_float64(x, kernel, stride, k // 2)
  assert y.shape == ref.shape and y.dtype == np.float32
  assert fx.rel_error(np.asarray(y), ref) < tol


@pytest.mark.parametrize("h,w", [(7, 7), (6, 10), (1, 1), (5, 2)])
@pytest.mark.parametrize("dtype,tol", [("float32", 2e-6), ("bfloat16", 2e-2)])
def test_winograd_conv3x3_matches_float64_direct_convolution(h, w, dtype, tol):
  from platonic_jax.encoders import winograd
  rng = np.random.default_rng(h * 10 + w)
  x = rng.standard_normal((2, h, w, 5)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
  y = winograd.conv3x3(x, winograd.transform_filter(kernel), jax.numpy.dtype(dtype))
  ref = _conv_float64(x, kernel, 1, 1)
  assert y.shape == ref.shape and y.dtype == np.float32
  assert fx.rel_error(np.asarray(y), ref) < tol
  with pytest.raises(ValueError, match=r"needs a \[3, 3, C, D\] kernel"):
    winograd.transform_filter(kernel[:2])


def test_dinov2_parity_non_native_size(dinov2_ckpt, images):
  """Trained on a 2x2 patch grid, fed 42x56 crops (3x4 grid): positions interpolated.
  The mean-of-patches pool at layer 0 checks the interpolated positions directly."""
  directory, model = dinov2_ckpt
  out = _torch_hidden(model, directory, images)
  assert out.hidden_states[0].shape[1] == 1 + 3 * 4
  enc = encoders.load(directory)
  assert enc.module.attention_group == vit.CPU_ATTENTION_GROUP   # the CPU variant
  cls = enc.encode(images, batch_size=8, layers="all")
  mean = enc.encode(images, batch_size=8, layers="all", pool="mean")
  hs = [h.double().numpy() for h in out.hidden_states[:-1]] + [out.last_hidden_state.double().numpy()]
  assert cls.shape == (len(hs), len(images), 32)
  for l, h in enumerate(hs):
    assert fx.rel_error(cls[l], h[:, 0]) < FP32_TOL, l
    assert fx.rel_error(mean[l], h[:, 1:].mean(1)) < FP32_TOL, l
  assert fx.rel_error(enc.encode(images, batch_size=8), out.pooler_output.numpy()) < FP32_TOL
  bf = encoders.load(directory, dtype="bfloat16").encode(images, batch_size=8, layers="all",
                                                         pool="mean")
  for l, h in enumerate(hs):
    assert fx.rel_error(bf[l], h[:, 1:].mean(1)) < BF16_TOL, l


@pytest.mark.parametrize("n_in,n_out", [(4, 7), (5, 3), (6, 6), (2, 9)])
def test_position_interpolation_matches_torch_bicubic(n_in, n_out):
  """HF Dinov2's interpolation: torch bicubic without antialias (pos_embed.resample)."""
  rng = np.random.default_rng(0)
  grid = rng.normal(size=(1, 5, n_in, n_in)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(grid), size=(n_out, n_out + 1),
                                        mode="bicubic", align_corners=False).numpy()
  ours = np.asarray(pos_embed.resample(grid[0].reshape(5, -1).T, (n_in, n_in),
                                       (n_out, n_out + 1), antialias=False))
  np.testing.assert_allclose(ours, ref[0].reshape(5, -1).T, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 4, 6, 7, 12])
@pytest.mark.parametrize("group", [0, 4])
def test_attention_matches_float64_softmax_attention(batch, group):
  """Batched attention (group 0: jax.nn.dot_product_attention) and the CPU form (groups
  of samples side by side, lax.map over groups) for batches that are one group (1, 4),
  several (12), or leave a ragged divisor (6 -> 3, 7 -> 1)."""
  rng = np.random.default_rng(batch)
  q, k, v = (rng.normal(size=(batch, 9, 3, 4)) for _ in range(3))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) * 0.5
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ref = np.einsum("bhqk,bkhd->bqhd", probs, v)
  ours = vit.attention(*(np.float32(x) for x in (q, k, v)), 0.5, np.float32, group)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-6)


# ----- batching, devices, streaming ------------------------------------------------------

def test_eight_devices_equal_one_and_batching_is_invisible(dinov2_ckpt, num_devices):
  directory, _ = dinov2_ckpt
  imgs = fx.random_images(11, seed=2)
  enc8 = encoders.load(directory)
  enc1 = encoders.load(directory, devices=jax.devices()[:1])
  assert enc8.mesh.size == num_devices and enc1.mesh.size == 1
  a = enc8.encode(imgs, batch_size=8, layers="all")        # 2 batches, the last padded
  b = enc1.encode(imgs, batch_size=3, layers="all")        # 4 batches, the last padded
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The streaming form yields per-batch results in order, from a generator.
  parts = list(enc8.encode_iter((im for im in imgs), batch_size=8, layers=[0, 2]))
  assert [p.shape for p in parts] == [(2, 8, 32), (2, 3, 32)]
  np.testing.assert_array_equal(np.concatenate(parts, axis=1), a[[0, 2]])


def test_layers_argument_shapes_and_errors(resnet_ckpt, images):
  enc = encoders.load(resnet_ckpt[0])
  feats = enc.encode(images[:2], batch_size=8, layers=[0, -1])
  assert [f.shape for f in feats] == [(2, enc.dims[0]), (2, enc.dim)]
  with pytest.raises(ValueError, match="out of range"):
    enc.encode(images, layers=[enc.num_layers])
  with pytest.raises(ValueError, match="unknown pool"):
    enc.encode(images, pool="cls")
  with pytest.raises(ValueError, match="layers must be"):
    enc.encode(images, layers="last")


def test_encode_logs_progress_with_count_and_total(resnet_ckpt, images, monkeypatch, caplog):
  from platonic_jax.encoders import core
  monkeypatch.setattr(core, "PROGRESS_EVERY_S", 0.0)   # log after every batch
  enc = encoders.load(resnet_ckpt[0])
  with caplog.at_level("INFO", logger=core.__name__):
    enc.encode(images * 4, batch_size=8)      # 20 items in batches of 8 (8 devices)
    list(enc.encode_iter(iter(images * 2), batch_size=8))   # a generator: no total
  lines = [r.getMessage() for r in caplog.records if "encoded" in r.getMessage()]
  counts = [line.split("encoded ")[1].split(" items")[0] for line in lines]
  assert counts == ["8/20", "16/20", "20/20", "8", "10"], lines


# ----- errors ------------------------------------------------------------------------------

def test_unreadable_image_names_its_index(resnet_ckpt):
  enc = encoders.load(resnet_ckpt[0])
  items = fx.random_images(3) + [b"definitely not an image"]
  with pytest.raises(ValueError, match=r"image 3 cannot be read"):
    enc.encode(items, batch_size=2)   # index is global, not within the second batch
  with pytest.raises(ValueError, match=r"image 1 cannot be read"):
    enc.encode([items[0], np.zeros((4, 4, 2), np.uint8)])


def _state_dict(directory):
  return convert_lib.read_state_dict(directory)


def test_strict_conversion_lists_missing_unexpected_misshaped(resnet_ckpt, dinov2_ckpt):
  for module, (directory, _) in ((resnet, resnet_ckpt), (dinov2, dinov2_ckpt)):
    config = transformers.AutoConfig.from_pretrained(directory)
    sd = _state_dict(directory)
    module.convert(sd, config)  # the intact checkpoint converts
    keys = sorted(k for k in sd if k.endswith("weight"))
    gone, bent = keys[1], keys[-1]
    bad = dict(sd)
    del bad[gone]
    bad["surprise.weight"] = np.zeros(3, np.float32)
    bad[bent] = np.zeros(bad[bent].shape + (1,), np.float32)
    with pytest.raises(encoders.ConversionError) as e:
      module.convert(bad, config)
    msg = str(e.value)
    stripped = lambda k: k.removeprefix("resnet.")  # noqa: E731
    assert "missing" in msg and stripped(gone) in msg
    assert "unexpected" in msg and "surprise.weight" in msg
    assert "misshaped" in msg and stripped(bent) in msg


def test_load_fails_on_a_broken_checkpoint_file(resnet_ckpt, tmp_path):
  from safetensors.numpy import save_file
  directory = str(tmp_path / "broken")
  shutil.copytree(resnet_ckpt[0], directory)
  sd = _state_dict(directory)
  key = "resnet.embedder.embedder.convolution.weight"
  del sd[key]
  save_file(sd, os.path.join(directory, "model.safetensors"))
  with pytest.raises(encoders.ConversionError, match="embedder.embedder.convolution.weight"):
    encoders.load(directory)


def test_check_params_catches_a_converter_that_forgets_a_leaf(resnet_ckpt):
  directory, _ = resnet_ckpt
  config = transformers.AutoConfig.from_pretrained(directory)
  params = resnet.convert(_state_dict(directory), config)
  module = resnet.build(config)
  expected = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  convert_lib.check_params(params, expected["params"])
  del params["embedder"]["bias"]
  with pytest.raises(encoders.ConversionError, match="embedder.*bias"):
    convert_lib.check_params(params, expected["params"])


def test_unsupported_model_type_names_supported_ones(tmp_path):
  transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=8).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="unsupported model_type 'bert'.*dinov2, .*gemma.*gpt2, llama.*resnet"):
    encoders.load(str(tmp_path))


def test_missing_hub_model_offline_is_a_clear_error():
  assert os.environ.get("HF_HUB_OFFLINE") == "1"
  with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
    encoders.load("no-such-user/no-such-model")


@pytest.mark.parametrize("path", ["/no/such/dir", "./nope", "runs/a/b", "ckpt/"])
def test_a_local_path_that_does_not_exist_says_so(path):
  with pytest.raises(ValueError, match="no such directory"):
    encoders.load(path)


def test_a_corrupt_safetensors_file_is_named(resnet_ckpt, tmp_path):
  directory, _ = resnet_ckpt
  shutil.copytree(directory, tmp_path / "ckpt")
  path = tmp_path / "ckpt" / "model.safetensors"
  path.write_bytes(path.read_bytes()[:100])  # truncated
  with pytest.raises(ValueError, match=f"{path} cannot be read as safetensors.*corrupt"):
    encoders.load(str(tmp_path / "ckpt"))


def test_pytorch_bin_checkpoint_reads_like_safetensors(resnet_ckpt, tmp_path):
  directory, model = resnet_ckpt
  sd = _state_dict(directory)
  shutil.copy(os.path.join(directory, "config.json"), tmp_path)
  torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, tmp_path / "pytorch_model.bin")
  sd_bin = convert_lib.read_state_dict(str(tmp_path))
  assert sd_bin.keys() == sd.keys()
  for k in sd:
    np.testing.assert_array_equal(sd_bin[k], sd[k])


def test_registry_contract():
  for model_type, module in registry.REGISTRY.items():
    assert model_type in module.MODEL_TYPES and module.POOLS
  with pytest.raises(ValueError, match="supported model types"):
    registry.get("bert")


def test_micro_batch_choice():
  from platonic_jax.encoders.core import micro_batch
  assert [micro_batch(b, 4) for b in (16, 6, 9, 7, 4, 3)] == [4, 3, 3, 0, 0, 0]
  assert micro_batch(16, 8) == 8 and micro_batch(12, 8) == 6 and micro_batch(11, 8) == 0
  assert micro_batch(64, 0) == 0


@pytest.mark.parametrize("arch", ["dinov2", "gpt2", "resnet"])
def test_cpu_micro_batches_give_the_whole_batch_features(arch, tmp_path, monkeypatch):
  """The CPU micro-batch lax.map (CPU_MICRO_BATCH) against the batch run whole."""
  from platonic_jax.encoders import gpt2
  module = {"dinov2": dinov2, "gpt2": gpt2, "resnet": resnet}[arch]
  if arch == "dinov2":
    directory, _ = fx.tiny_dinov2(str(tmp_path), swiglu=False)
    items = fx.random_images(12, seed=4)
  elif arch == "resnet":
    directory, _ = fx.tiny_resnet(str(tmp_path), "basic")
    items = fx.random_images(12, seed=4)
  else:
    directory, _ = fx.tiny_gpt2(str(tmp_path))
    items = [f"caption number {i} " + "word " * (i % 5) for i in range(12)]
  one = jax.devices()[:1]  # the whole batch on one device: 12 -> 4 micro-batches of 3
  monkeypatch.setattr(module, "CPU_MICRO_BATCH", 3, raising=False)   # ResNet has none
  micro = encoders.load(directory, devices=one).encode(items, batch_size=12, layers="all")
  monkeypatch.setattr(module, "CPU_MICRO_BATCH", 0)
  whole = encoders.load(directory, devices=one).encode(items, batch_size=12, layers="all")
  assert len(micro) == len(whole)
  for m, w in zip(micro, whole):   # ResNet: a list of [N, D_l]; others: [L, N, D]
    np.testing.assert_allclose(m, w, rtol=1e-5, atol=1e-6)


# ----- text through load() (GPT-2 module and tokenizer are the text helper's) -------------

def test_text_encoder_through_load_matches_torch_and_counts_truncation(tmp_path):
  (tmp_path / "gpt2").mkdir()
  directory, model = fx.tiny_gpt2(str(tmp_path / "gpt2"))
  enc = encoders.load(directory, max_length=12)
  texts = ["a dog runs across the grass", "a man",
           "two children are playing with a red ball near the lake in the park today"]
  feats = enc.encode(texts, batch_size=8, layers="all")
  assert enc.modality == "text" and enc.num_truncated == 1
  tok = transformers.GPT2Tokenizer.from_pretrained(directory)
  tok.pad_token = tok.eos_token
  batch = tok(texts, padding="longest", truncation=True, max_length=12, return_tensors="pt")
  with torch.no_grad():
    out = model(**batch, output_hidden_states=True)
  m = batch["attention_mask"].double().numpy()
  for l, h in enumerate(out.hidden_states):
    ref = np.einsum("btd,bt->bd", h.double().numpy(), m) / m.sum(1, keepdims=True)
    assert fx.rel_error(feats[l], ref) < FP32_TOL, l
  # A caption's features do not depend on its batch mates or the batch size.
  alone = enc.encode(texts[1:2], batch_size=8)
  np.testing.assert_allclose(alone[0], feats[-1][1], rtol=1e-5, atol=1e-6)


def test_load_auto_is_float32_on_cpu_and_bad_names_fail(tmp_path):
  directory, _ = fx.tiny_resnet(str(tmp_path))
  enc = encoders.load(directory, dtype="auto")
  assert enc.dtype == np.dtype(np.float32)
  np.testing.assert_array_equal(enc.encode(fx.random_images(2)),
                                encoders.load(directory, dtype="float32").encode(
                                    fx.random_images(2)))
  with pytest.raises(ValueError, match="use 'auto', 'float32' or 'bfloat16'"):
    encoders.load(directory, dtype="half")
