"""The ViT family vs timm's and transformers' PyTorch code on tiny random checkpoints.

References: timm's own model code and eval transform (``timm.create_model`` +
``create_transform(**resolve_data_config(...))``, as the Platonic release runs them) and
transformers' ViT, ViTMAE, CLIPVision and Dinov2WithRegisters models. timm needs
torchvision at import time, whose registry wheels are CUDA builds that do not import
beside the CPU torch here, so ``platonic_jax/benchmarks/torchvision_standin.py``
supplies the few torchvision PIL transforms timm's eval path uses (torchvision 0.28's
code paths, line for line) while timm is imported; a real torchvision is used when one
imports. Features
are per-block residual streams (timm: forward hooks on ``blocks[i]`` = the release's
``blocks.{i}.add_1``; transformers: ``hidden_states[1:]``), compared in float64.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_fixtures as fx  # noqa: E402
import timm_fixtures as tfx  # noqa: E402
from platonic_jax import encoders  # noqa: E402
from platonic_jax.encoders import (convert as convert_lib, pos_embed, registry,  # noqa: E402
                                   timm_format, timm_preprocess, vit)

FP32_TOL, BF16_TOL = 1e-4, 2e-2


@pytest.fixture(scope="module")
def images():
  return fx.random_images(5, seed=7, sizes=((40, 50), (37, 64), (64, 45), (23, 31)))


# ----- preprocessing: pixel for pixel against timm's eval transform ----------------------

_PREPROCESS_CASES = {
    # the study's configs: ImageNet-21k AugReg (crop_pct 0.9, mean 0.5), CLIP (crop_pct 1)
    "augreg center 0.9": ("vit_base_patch16_224.augreg_in21k", dict(), (3, 48, 48)),
    "clip center 1.0": ("vit_base_patch16_clip_224.laion2b", dict(), (3, 32, 32)),
    "non-square keep-ratio": ("vit_small_patch16_224.augreg_in21k", dict(crop_pct=0.8),
                              (3, 40, 56)),
    "squash bilinear": ("vit_base_patch16_224.mae",
                        dict(crop_mode="squash", interpolation="bilinear"), (3, 36, 44)),
    "border lanczos": ("vit_small_patch14_dinov2.lvd142m",
                       dict(crop_mode="border", interpolation="lanczos"), (3, 42, 28)),
}


@pytest.mark.parametrize("case", list(_PREPROCESS_CASES))
def test_preprocess_matches_timm_eval_transform_pixel_for_pixel(case, tmp_path):
  """Every PIL mode (L, RGBA, LA, P, CMYK, I;16, 1) and odd sizes, through encoders.load
  (config.json's pretrained_cfg) against timm's transform of ``image.convert("RGB")``."""
  name, cfg, input_size = _PREPROCESS_CASES[case]
  directory, model = tfx.tiny_timm(str(tmp_path), name, input_size=input_size[1:], cfg=cfg)
  t = tfx.timm()
  data_config = t.data.resolve_data_config(model.pretrained_cfg, model=model)
  spec = encoders.load(directory).image_spec
  assert isinstance(spec, timm_preprocess.TimmImageSpec)
  assert dataclasses.asdict(spec) == {**data_config, "input_size": tuple(data_config["input_size"]),
                                      "mean": tuple(data_config["mean"]),
                                      "std": tuple(data_config["std"])}
  transform = t.data.create_transform(**data_config)
  for mode, image in tfx.pil_modes().items():
    ref = transform(image.convert("RGB")).numpy().transpose(1, 2, 0)
    ours = spec.apply(image)
    assert ours.dtype == np.float32 and ours.shape == ref.shape, mode
    np.testing.assert_array_equal(ours, ref, err_msg=f"{case}: {mode}")


def test_preprocess_reads_paths_bytes_and_arrays_like_pil(tmp_path):
  import io
  from PIL import Image
  directory, _ = tfx.tiny_timm(str(tmp_path / "m"), "vit_base_patch16_224.augreg_in21k",
                               input_size=(32, 32))
  spec = encoders.load(directory).image_spec
  arr = fx.random_images(1, seed=5)[0]
  img = Image.fromarray(arr)
  img.save(tmp_path / "x.png")
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  ref = spec.apply(img)
  for item in (arr, str(tmp_path / "x.png"), buf.getvalue()):
    np.testing.assert_array_equal(spec.apply(item), ref)
  with pytest.raises(ValueError, match="image 4 cannot be read"):
    spec.apply(b"not an image", 4)


# ----- timm parity -----------------------------------------------------------------------

# (timm id, tiny model args, trained img_size, preprocessing input size): every variant
# the family models. Input sizes differ from the trained grid (positions resampled with
# timm's antialiased bicubic) except where noted.
_TIMM_VARIANTS = {
    "augreg (plain, patch 16)": ("vit_base_patch16_224.augreg_in21k", dict(), 32, (48, 80)),
    "augreg native size": ("vit_tiny_patch16_224.augreg_in21k", dict(), 32, (32, 32)),
    "mae + avg pool + fc_norm": ("vit_base_patch16_224.mae", dict(global_pool="avg"), 32, (32, 48)),
    "gap (no class token), no qkv bias": ("vit_base_patch16_gap_224", dict(qkv_bias=False), 32,
                                          (48, 32)),
    "dinov2 (LayerScale, patch 14)": ("vit_small_patch14_dinov2.lvd142m", dict(), 28, (42, 56)),
    "dinov2 giant (SwiGLU packed)": ("vit_giant_patch14_dinov2.lvd142m", dict(), 28, (56, 28)),
    "dinov2 reg4 (registers)": ("vit_small_patch14_reg4_dinov2.lvd142m", dict(), 28, (42, 42)),
    "clip (norm_pre, no patch bias)": ("vit_base_patch16_clip_224.laion2b", dict(), 32, (48, 64)),
    "clip quickgelu": ("vit_base_patch16_clip_quickgelu_224.openai", dict(), 32, (64, 48)),
}


@pytest.fixture(scope="module", params=list(_TIMM_VARIANTS))
def timm_ckpt(request, tmp_path_factory):
  name, args, img_size, input_size = _TIMM_VARIANTS[request.param]
  directory = str(tmp_path_factory.mktemp("timm"))
  return tfx.tiny_timm(directory, name, img_size=img_size, input_size=input_size, **args)


def test_timm_parity_per_block_fp32_and_bf16(timm_ckpt, images):
  directory, model = timm_ckpt
  pixels, blocks, pre_logits = tfx.timm_reference(model, images)
  enc = encoders.load(directory)
  assert enc.num_layers == len(model.blocks) and enc.dim == model.embed_dim
  assert enc.module.attention_group == vit.CPU_ATTENTION_GROUP   # the CPU variant
  # Our preprocessing gives timm's pixels (checked in detail above).
  np.testing.assert_array_equal(enc.image_spec.apply(images[0]),
                                pixels[0].numpy().transpose(1, 2, 0))
  default = "cls" if model.has_class_token else "mean"
  feats = enc.encode(images, batch_size=8, layers="all")
  assert feats.shape == (len(blocks), len(images), model.embed_dim)
  n_prefix = model.num_prefix_tokens
  for l, h in enumerate(blocks):
    ref = h[:, 0] if default == "cls" else h[:, n_prefix:].mean(1)
    assert fx.rel_error(feats[l], ref) < FP32_TOL, l
  mean = enc.encode(images, batch_size=8, layers="all", pool="mean")
  for l, h in enumerate(blocks):
    assert fx.rel_error(mean[l], h[:, n_prefix:].mean(1)) < FP32_TOL, l
  head = enc.encode(images, batch_size=8, pool="pre_logits")   # last layer
  assert fx.rel_error(head, pre_logits) < FP32_TOL
  bf = encoders.load(directory, dtype="bfloat16").encode(images, batch_size=8, layers="all")
  for l, h in enumerate(blocks):
    ref = h[:, 0] if default == "cls" else h[:, n_prefix:].mean(1)
    assert fx.rel_error(bf[l], ref) < BF16_TOL, l


def test_timm_pre_logits_of_inner_blocks_is_timms_normed_intermediates(tmp_path, images):
  """pool="pre_logits" of block i = timm forward_intermediates(norm=True) + its pool."""
  directory, model = tfx.tiny_timm(str(tmp_path), "vit_small_patch14_dinov2.lvd142m", depth=3,
                                   img_size=28, input_size=(28, 28))
  pixels, _, _ = tfx.timm_reference(model, images)
  with torch.no_grad():
    inter = model.forward_intermediates(pixels, norm=True, output_fmt="NLC",
                                        intermediates_only=True, return_prefix_tokens=True)
  ours = encoders.load(directory).encode(images, batch_size=8, layers="all", pool="pre_logits")
  for l, (patches, prefix) in enumerate(inter):
    assert fx.rel_error(ours[l], prefix[:, 0].double().numpy()) < FP32_TOL, l


def test_timm_cls_without_class_token_is_an_error(tmp_path, images):
  directory, _ = tfx.tiny_timm(str(tmp_path), "vit_base_patch16_gap_224", img_size=32,
                               input_size=(32, 32))
  enc = encoders.load(directory)
  assert enc.encode(images[:1], batch_size=8).shape == (1, 32)   # default: mean
  with pytest.raises(ValueError, match="has no class token: use pool='mean'"):
    enc.encode(images[:1], pool="cls")


# ----- transformers formats --------------------------------------------------------------

_HF_KINDS = {"vit": (48, 40), "vit_mae": (45, 61), "clip": (32, 48), "dinov2_reg": (42, 56),
             "dinov2_reg_swiglu": (56, 45)}


@pytest.fixture(scope="module", params=list(_HF_KINDS))
def hf_ckpt(request, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp(request.param))
  return request.param, tfx.tiny_hf_vit(directory, request.param, crop=_HF_KINDS[request.param])


def test_hf_formats_parity_per_block(hf_ckpt, images):
  """Odd crops (not multiples of the patch for ViTMAE and DINOv2): rows and columns
  beyond the patch grid dropped and positions interpolated as HF does."""
  kind, (directory, model) = hf_ckpt
  pixels = fx.hf_pixel_values(directory, images)
  kwargs = {}
  if kind == "vit_mae":   # identity patch order: noise increasing along the sequence
    n = (pixels.shape[2] // 16) * (pixels.shape[3] // 16)
    kwargs["noise"] = torch.arange(n, dtype=torch.float32).repeat(len(images), 1)
  blocks, out = tfx.hf_reference(model, pixels, **kwargs)
  enc = encoders.load(directory)
  assert enc.num_layers == len(blocks)
  np.testing.assert_allclose(enc.image_spec.apply(images[1]), pixels[1].transpose(1, 2, 0),
                             atol=1e-6)
  feats = enc.encode(images, batch_size=8, layers="all")
  mean = enc.encode(images, batch_size=8, layers="all", pool="mean")
  n_prefix = 1 + getattr(model.config, "num_register_tokens", 0)
  for l, h in enumerate(blocks):
    assert fx.rel_error(feats[l], h[:, 0]) < FP32_TOL, l
    assert fx.rel_error(mean[l], h[:, n_prefix:].mean(1)) < FP32_TOL, l
  head = enc.encode(images, batch_size=8, pool="pre_logits")
  ref = out.pooler_output if kind == "clip" else out.last_hidden_state[:, 0]
  assert fx.rel_error(head, ref.double().numpy()) < FP32_TOL
  bf = encoders.load(directory, dtype="bfloat16").encode(images, batch_size=8, layers="all")
  for l, h in enumerate(blocks):
    assert fx.rel_error(bf[l], h[:, 0]) < BF16_TOL, l


def test_clip_model_checkpoint_loads_its_vision_tower(tmp_path, images):
  """A full CLIPModel (model_type "clip"): the vision tower, text tower ignored."""
  torch.manual_seed(0)
  vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                image_size=32, patch_size=16)
  text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
              vocab_size=50)
  model = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision,
                                                         text_config=text)).eval()
  fx.randomize(model, 0)
  model.save_pretrained(tmp_path)
  transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                  crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
  pixels = fx.hf_pixel_values(str(tmp_path), images)
  blocks, _ = tfx.hf_reference(model.vision_model, pixels)
  feats = encoders.load(str(tmp_path)).encode(images, batch_size=8, layers="all")
  for l, h in enumerate(blocks):
    assert fx.rel_error(feats[l], h[:, 0]) < FP32_TOL, l


# ----- the 17 study models by timm id ----------------------------------------------------

def _timm_meta_model(name):
  t = tfx.timm()
  with torch.device("meta"):
    return t.create_model(name, pretrained=False)


@pytest.mark.parametrize("architecture", sorted(timm_format.ARCHITECTURES))
def test_architecture_table_matches_timm(architecture):
  """Every listed architecture, built full size by timm on the meta device (no memory):
  the same parameter names and shapes as our converter reads, the same norm epsilon,
  activation and structure flags."""
  model = _timm_meta_model(architecture)
  cfg = timm_format.config_from_dict({"architecture": architecture,
                                      "pretrained_cfg": dict(model.pretrained_cfg)})
  s = cfg.spec
  sd = {k: np.zeros(v.shape, np.float32) for k, v in model.state_dict().items()}
  # Shapes only: our converter takes every key with its shape, strictly.
  shapes = {k: v.shape for k, v in sd.items()}
  assert shapes["patch_embed.proj.weight"] == (s.dim, 3, s.patch_size, s.patch_size)
  assert len(model.blocks) == s.depth and model.blocks[0].attn.num_heads == s.num_heads
  assert model.blocks[0].norm1.eps == s.eps
  act = type(model.blocks[0].mlp.act).__name__
  assert {"GELU": "gelu", "QuickGELU": "quick_gelu", "SiLU": "silu"}[act] == s.act
  assert (type(model.blocks[0].mlp).__name__ == "GluMlp") == s.gated
  assert model.num_reg_tokens == s.reg_tokens and model.has_class_token == s.class_token
  assert cfg.no_embed_class == model.no_embed_class
  assert (type(model.norm_pre).__name__ != "Identity") == s.pre_norm
  assert (type(model.fc_norm).__name__ != "Identity") == s.fc_norm
  params = jax.eval_shape(lambda: timm_format.convert(sd, cfg))
  module = timm_format.build(cfg)
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            np.zeros((1,) + s.image_size + (3,), np.float32))
  convert_lib.check_params(params, expected["params"])


@pytest.mark.parametrize("model_id", timm_format.STUDY_MODELS)
def test_study_model_ids_load_by_timm_id_from_the_hub_cache(model_id, tmp_path, monkeypatch):
  """``encoders.load("timm/<id>")`` resolves through huggingface_hub's cache (offline,
  as after a download) to a checkpoint in timm's hub format. The cached checkpoint is
  tiny (model_args depth=1, width 32) with the id's own pretrained_cfg, so preprocessing
  and architecture come from the id; the full-size layout is checked above."""
  from huggingface_hub import constants
  arch, tag = model_id.split(".")
  repo = tmp_path / "hub" / f"models--timm--{model_id}"
  snap = repo / "snapshots" / ("0" * 40)
  heads = 4 if "giant" in arch else 2
  t = tfx.timm()
  size = t.models.get_pretrained_cfg(model_id).input_size[1:]   # the id's (224 or 518)
  directory, model = tfx.tiny_timm(str(snap), model_id, depth=1, dim=32, heads=heads,
                                   img_size=28 if "patch14" in arch else 32, input_size=size)
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text("0" * 40)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  enc = encoders.load(f"timm/{model_id}")
  data_config = t.data.resolve_data_config(model.pretrained_cfg, model=model)
  assert enc.image_spec.output_size() == tuple(size)
  assert enc.image_spec.crop_pct == data_config["crop_pct"]
  assert enc.image_spec.mean == tuple(data_config["mean"])
  assert enc.num_layers == 1 and enc.dim == 32
  img = fx.random_images(1, seed=3)
  pixels, blocks, _ = tfx.timm_reference(model, img)
  assert fx.rel_error(enc.encode(img, layers="all")[0], blocks[0][:, 0]) < FP32_TOL


# ----- bad input -------------------------------------------------------------------------

def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


def test_unknown_timm_architecture_is_a_one_line_error(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"architecture": "convnext_tiny", "pretrained_cfg": {"input_size": [3, 224, 224]}}))
  with pytest.raises(ValueError) as e:
    encoders.load(str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg and "'convnext_tiny' is not supported" in msg
  assert "vit_base_patch16_224" in msg and "Fix:" in msg


def test_unsupported_timm_model_args_are_one_line_errors(tmp_path):
  for args, match in (({"qk_norm": True}, "qk_norm=True"), ({"global_pool": "map"}, "'map'"),
                      ({"weird_arg": 1}, "'weird_arg'")):
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "vit_base_patch16_224", "model_args": args, "pretrained_cfg": {}}))
    with pytest.raises(ValueError, match=match) as e:
      encoders.load(str(tmp_path))
    assert "\n" not in str(e.value) and "Fix:" in str(e.value)


def test_checkpoint_disagreeing_with_its_config_names_keys_and_shapes(tmp_path):
  """model_args say 3 blocks of width 48, the weights hold 2 of width 32."""
  directory, _ = tfx.tiny_timm(str(tmp_path / "m"), "vit_base_patch16_224.augreg_in21k",
                               img_size=32)
  cfg_path = os.path.join(directory, "config.json")
  cfg = _read_json(cfg_path)
  cfg["model_args"]["depth"] = 3
  _write_json(cfg_path, cfg)
  with pytest.raises(encoders.ConversionError) as e:
    encoders.load(directory)
  lines = str(e.value).splitlines()
  assert "timm vit_base_patch16_224 checkpoint" in lines[0] and "depth 3" in lines[0]
  assert any("missing" in line and "blocks.2.attn.qkv.weight" in line for line in lines)
  assert lines[-1].strip().startswith("Fix:")
  cfg["model_args"].update(depth=2, embed_dim=48, num_heads=2)
  _write_json(cfg_path, cfg)
  with pytest.raises(encoders.ConversionError, match=r"cls_token has shape \(1, 1, 32\), "
                                                     r"expected \(1, 1, 48\)"):
    encoders.load(directory)


def test_image_too_small_for_the_patch_is_a_one_line_error(tmp_path):
  directory, _ = tfx.tiny_timm(str(tmp_path / "m"), "vit_base_patch16_224.augreg_in21k",
                               img_size=32, input_size=(32, 32))
  cfg_path = os.path.join(directory, "config.json")
  cfg = _read_json(cfg_path)
  cfg["pretrained_cfg"]["input_size"] = [3, 12, 40]
  _write_json(cfg_path, cfg)
  with pytest.raises(ValueError) as e:
    encoders.load(directory)
  msg = str(e.value).splitlines()[0]
  assert "input 12x40 is smaller than one 16x16 patch" in msg and "resize the images" in msg


def test_timm_registry_and_partition_rules():
  assert registry.get("timm_vit") is timm_format
  for t in ("vit", "vit_mae", "clip_vision_model", "clip", "dinov2_with_registers"):
    assert registry.get(t).PARTITION_RULES is vit.PARTITION_RULES
  import re
  spec = timm_format.config_from_dict({"architecture": "vit_small_patch16_224",
                                       "model_args": {"depth": 1}, "pretrained_cfg": {}}).spec
  params = jax.eval_shape(vit.build(spec).init, jax.random.key(0),
                          np.zeros((1, 224, 224, 3), np.float32))["params"]
  sharded = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(p.key for p in path)
    rules = [r for pattern, r in vit.PARTITION_RULES if re.fullmatch(pattern, name)]
    if rules:
      assert len(rules[0]) == leaf.ndim, name
      sharded[name] = rules[0]
  assert sharded == {"blocks_0/attn/qkv/kernel": (None, "model"),
                     "blocks_0/attn/qkv/bias": ("model",),
                     "blocks_0/attn/proj/kernel": ("model", None),
                     "blocks_0/mlp/fc1/kernel": (None, "model"),
                     "blocks_0/mlp/fc1/bias": ("model",),
                     "blocks_0/mlp/fc2/kernel": ("model", None)}


@pytest.mark.parametrize("model_parallel", [2, 8])
def test_sharded_vit_equals_unsharded(model_parallel, tmp_path, images, num_devices):
  """A tiny ViT-g (SwiGLU-packed, LayerScale) with its parameters split over the model
  axis by PARTITION_RULES (encoders/partition.py) gives the replicated model's features."""
  directory, _ = tfx.tiny_timm(str(tmp_path), "vit_giant_patch14_dinov2.lvd142m", dim=48,
                               heads=4, img_size=28, input_size=(42, 28))
  base = encoders.load(directory).encode(images, batch_size=8, layers="all")
  enc = encoders.load(directory, model_parallel=model_parallel)
  qkv = enc.params["blocks_0"]["attn"]["qkv"]["kernel"]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  assert qkv.addressable_shards[0].data.shape == (48, 3 * 48 // model_parallel)
  np.testing.assert_allclose(enc.encode(images, batch_size=8, layers="all"), base,
                             rtol=1e-5, atol=2e-6)


# ----- building blocks -------------------------------------------------------------------

@pytest.mark.parametrize("old,new", [((4, 4), (7, 5)), ((5, 6), (3, 2)), ((2, 2), (1, 4)),
                                     ((16, 16), (37, 23)), ((37, 37), (16, 16))])
@pytest.mark.parametrize("antialias", [False, True])
def test_position_resampling_matches_torch_interpolate(old, new, antialias):
  """timm's resample_abs_pos_embed (antialias) and HF's interpolation (none)."""
  rng = np.random.default_rng(old[0] * 7 + new[1])
  grid = rng.normal(size=(old[0] * old[1], 5)).astype(np.float32)
  t = torch.from_numpy(grid.reshape(1, *old, 5).transpose(0, 3, 1, 2).copy())
  ref = torch.nn.functional.interpolate(t, size=new, mode="bicubic", align_corners=False,
                                        antialias=antialias)
  ref = ref.permute(0, 2, 3, 1).reshape(-1, 5).numpy()
  np.testing.assert_allclose(np.asarray(pos_embed.resample(grid, old, new, antialias)), ref,
                             atol=1e-5)
  timm_ref = tfx.timm().layers.resample_abs_pos_embed(
      torch.from_numpy(np.concatenate([np.ones((1, 5), np.float32), grid])[None]),
      new_size=list(new), old_size=list(old), num_prefix_tokens=1)
  if antialias:
    np.testing.assert_allclose(np.asarray(pos_embed.resample(grid, old, new, True)),
                               timm_ref[0, 1:].numpy(), atol=1e-5)


def test_dot_product_attention_form_matches_the_cpu_form(tmp_path, images):
  """The accelerator form (group 0: jax.nn.dot_product_attention) on a whole model gives
  the CPU variant's features."""
  directory, _ = tfx.tiny_timm(str(tmp_path), "vit_small_patch14_reg4_dinov2.lvd142m",
                               img_size=28, input_size=(42, 28))
  enc = encoders.load(directory)
  cpu = enc.encode(images, batch_size=8, layers="all")
  enc.module = enc.module.clone(attention_impl="xla", attention_group=0)
  enc._fns.clear()
  np.testing.assert_allclose(enc.encode(images, batch_size=8, layers="all"), cpu,
                             rtol=1e-5, atol=1e-6)


def test_local_copy_of_a_hub_folder_loads_the_same(tmp_path):
  """A directory in timm's hub format (as huggingface-cli download leaves it)."""
  directory, _ = tfx.tiny_timm(str(tmp_path / "a"), "vit_base_patch16_clip_224.laion2b",
                               img_size=32)
  copy = str(tmp_path / "b")
  shutil.copytree(directory, copy)
  imgs = fx.random_images(2)
  np.testing.assert_array_equal(encoders.load(directory).encode(imgs),
                                encoders.load(copy).encode(imgs))


def test_full_size_check_runs_and_matches_timm(num_devices, capsys):
  """benchmarks.vit_full_size (ViT-H / ViT-g at full width, run by hand) on a 1-block
  ViT-g at 518 px, sharded over 2 devices; a bad id is a one-line error."""
  from platonic_jax.benchmarks import vit_full_size
  rows = vit_full_size.main(["--models=vit_giant_patch14_dinov2.lvd142m", "--depth=1",
                             "--model_parallel=2"])
  assert [r["dtype"] for r in rows] == ["float32", "bfloat16"]
  assert rows[0]["rel_err"] < FP32_TOL and rows[1]["rel_err"] < BF16_TOL
  with pytest.raises(SystemExit) as e:
    vit_full_size.main(["--models=convnext_tiny.in1k"])
  assert e.value.code == 2
  assert "not a supported timm ViT id: convnext_tiny" in capsys.readouterr().err


def test_legacy_single_dict_timm_config_reads_like_timm():
  """Older timm hub configs hold the pretrained_cfg at the top level (timm
  _parse_model_cfg's legacy branch): the same spec and preprocessing."""
  t = tfx.timm()
  cfg = t.models.get_pretrained_cfg("vit_large_patch14_clip_224.laion2b").to_dict()
  modern = timm_format.config_from_dict({"architecture": "vit_large_patch14_clip_224",
                                         "pretrained_cfg": dict(cfg)})
  legacy = timm_format.config_from_dict(dict(cfg, architecture="vit_large_patch14_clip_224",
                                             num_features=1024))
  assert legacy.spec == modern.spec and legacy.image_spec == modern.image_spec
  assert modern.image_spec == timm_preprocess.TimmImageSpec(
      input_size=(3, 224, 224), interpolation="bicubic", mean=tuple(cfg["mean"]),
      std=tuple(cfg["std"]), crop_pct=1.0, crop_mode="center")
