"""ResNet (the Hugging Face ``ResNetConfig`` family: resnet-18/34/50/101/152) in flax.linen.

Inference only: batch norm is folded into the preceding convolution at conversion time
(``w' = w * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / sqrt(var + eps)``,
computed in float64), so every ConvBN is one convolution plus bias, which XLA fuses with
the ReLU. NHWC layout (the fast one for XLA on CPU/GPU/TPU).

Features (``hidden_states`` in HF terms): layer 0 = stem output (7x7/2 conv, BN, act,
3x3/2 max pool), then one per stage; each is spatially pooled to [B, C_l]. The default
``"avg"`` pool of the last layer equals HF's ``pooler_output``. Widths differ per layer
(resnet-18: 64, 64, 128, 256, 512).
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax.encoders import auto_dtype, common, conv_dots, winograd
from platonic_jax.encoders.convert import StateDict

MODEL_TYPES = ("resnet",)
MODALITY = "image"
POOLS = ("avg", "max")   # global average (HF pooler) / global max over H, W

# XLA:CPU: YNNPACK fusions run the convolutions (batch norm is folded into them at
# conversion) with their bias and ReLU fused: ResNet-18 fp32 35 -> 41 img/s at batch 16
# on the project's 2-core CPU. Only for this architecture: the same fusions slow the
# transformers' dots (GPT-2 bf16 2100 -> 880 tok/s). See docs/encoders.md.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ",".join(
    f"LIBRARY_FUSION_TYPE_{t}" for t in ("DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_CONVOLUTION"))}

# XLA:CPU: 3x3 stride-1 convolutions with at least this many input channels run as
# Winograd F(2x2, 3x3) (encoders/winograd.py, ``cpu_variant``): 20 -> 11-14 ms per conv
# of ResNet-18's 14x14 x 256 and 7x7 x 512 stages at batch 16; below 256 channels
# (56x56 x 64, 28x28 x 128) the transforms cost more than they save. GPUs / TPUs keep
# direct convolutions (their libraries choose algorithms themselves).
WINOGRAD_MIN_CHANNELS = 256

# XLA:CPU on a CPU with AMX tiles, bf16: every convolution but the RGB stem as bf16 dots
# (encoders/conv_dots.py), which reach the tiles where bf16 convolutions do not, in
# micro-batches of this size, without YNNPACK (its dot fusion runs bf16 dots without AMX).
# ResNet-18 at batch 16 on the 2-core Xeon of docs/encoders.md: 51 -> 102 img/s (PyTorch
# fp32: 59). fp32 gains nothing from micro-batches there (61 -> 53 img/s): the probe
# (cpu_tuning.py) measures that knob, ``cpu_defaults`` leaves it off.
CPU_MICRO_BATCH = 2

_BN_EPS = 1e-5           # torch.nn.BatchNorm2d default; HF ResNet does not change it
_REDUCTION = 4           # HF ResNetBottleNeckLayer(reduction=4); not a config field


class ConvBN(nn.Module):
  """Conv (bias-free in HF) + folded batch norm + optional activation."""
  features: int
  kernel_size: int
  stride: int = 1
  act: str | None = "relu"
  dtype: jnp.dtype = jnp.float32
  winograd_min_channels: int = 0   # 0: never (see cpu_variant)
  conv_as_dots: bool = False       # as bf16 dots (conv_dots.py; see cpu_variant)

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if k == 3 and self.stride == 1 and 0 < self.winograd_min_channels <= cin:
      # The filter in the Winograd domain, [16, C, D] (winograd.transform_filter).
      kernel = self.param("kernel", nn.initializers.zeros, (16, cin, self.features))
      return common.activation(self.act)(winograd.conv3x3(x, kernel, self.dtype) + bias)
    kernel = self.param("kernel", nn.initializers.zeros, (k, k, cin, self.features))
    conv = conv_dots.conv if self.conv_as_dots else common.conv
    y = conv(x, kernel, self.stride, k // 2, self.dtype) + bias
    return common.activation(self.act)(y)


class Block(nn.Module):
  """HF ResNetBasicLayer (two 3x3) or ResNetBottleNeckLayer (1x1, 3x3, 1x1)."""
  features: int
  stride: int
  bottleneck: bool
  downsample_in_bottleneck: bool
  act: str
  dtype: jnp.dtype
  winograd_min_channels: int = 0
  conv_as_dots: bool = False

  @nn.compact
  def __call__(self, x):
    conv_bn = functools.partial(ConvBN, dtype=self.dtype,
                                winograd_min_channels=self.winograd_min_channels,
                                conv_as_dots=self.conv_as_dots)
    residual = x
    if x.shape[-1] != self.features or self.stride != 1:
      residual = conv_bn(self.features, 1, self.stride, None, name="shortcut")(x)
    # HF's inner conv layers use their default activation "relu" whatever hidden_act says.
    if self.bottleneck:
      red = self.features // _REDUCTION
      s1, s2 = (self.stride, 1) if self.downsample_in_bottleneck else (1, self.stride)
      h = conv_bn(red, 1, s1, "relu", name="layer_0")(x)
      h = conv_bn(red, 3, s2, "relu", name="layer_1")(h)
      h = conv_bn(self.features, 1, 1, None, name="layer_2")(h)
    else:
      h = conv_bn(self.features, 3, self.stride, "relu", name="layer_0")(x)
      h = conv_bn(self.features, 3, 1, None, name="layer_1")(h)
    return common.activation(self.act)(h + residual)


def _stride(stage: int, block: int, downsample_in_first_stage: bool) -> int:
  """HF ResNetStage: the first block of every stage but the first (unless configured) has
  stride 2."""
  return 2 if block == 0 and (stage > 0 or downsample_in_first_stage) else 1


def _pool(x: jax.Array, pool: str) -> jax.Array:
  """[B, H, W, C] -> [B, C] float32."""
  if pool == "avg":
    return x.mean(axis=(1, 2))
  if pool == "max":
    return x.max(axis=(1, 2))
  raise ValueError(f"unknown ResNet pool {pool!r}; choose from {POOLS}")


class ResNet(nn.Module):
  """pixel_values [B, H, W, 3] float32 -> tuple of 1 + len(depths) features [B, C_l] float32."""
  embedding_size: int
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  bottleneck: bool
  downsample_in_first_stage: bool
  downsample_in_bottleneck: bool
  act: str
  dtype: jnp.dtype = jnp.float32
  winograd_min_channels: int = 0   # 3x3 stride-1 convs with >= this many inputs: Winograd
  conv_as_dots: bool = False       # every convolution but the stem as dots (conv_dots.py)

  @nn.compact
  def __call__(self, pixel_values, pool: str = ""):
    pool = pool or POOLS[0]
    x = ConvBN(self.embedding_size, 7, 2, self.act, self.dtype,
               conv_as_dots=self.conv_as_dots, name="embedder")(pixel_values)
    # torch MaxPool2d(3, 2, padding=1) pads with -inf, as reduce_window's init value does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    feats = [_pool(x, pool)]
    for i, (width, depth) in enumerate(zip(self.hidden_sizes, self.depths)):
      for j in range(depth):
        x = Block(width, _stride(i, j, self.downsample_in_first_stage), self.bottleneck,
                  self.downsample_in_bottleneck, self.act, self.dtype,
                  self.winograd_min_channels, self.conv_as_dots, name=f"stage{i}_block{j}")(x)
      feats.append(_pool(x, pool))
    return tuple(feats)


def _amx_bf16(module: ResNet) -> bool:
  return jnp.dtype(module.dtype) == jnp.bfloat16 and auto_dtype.cpu_has_amx()


def cpu_variant(module: ResNet, params: dict) -> tuple[ResNet, dict]:
  """The module and params for a CPU mesh (registry contract). bf16 on a CPU with AMX:
  every convolution but the stem as bf16 dots (conv_dots.py; the params as they are).
  Otherwise: Winograd for the 3x3 stride-1 convolutions with >= WINOGRAD_MIN_CHANNELS
  inputs, their filters transformed here once. Same features as ``module`` to ~1e-6 in
  fp32 (tested), to bf16 rounding in bf16."""
  if _amx_bf16(module):
    return module.clone(conv_as_dots=True), params
  fast = module.clone(winograd_min_channels=WINOGRAD_MIN_CHANNELS)
  # Parameter shapes do not depend on the image size: a small dummy input will do.
  shapes = jax.eval_shape(fast.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return fast, winograd.transform_params(params, shapes["params"])


def cpu_defaults(module: ResNet) -> tuple[bool, bool, bool]:
  """Which CPU knobs run unprobed and are the probe's baseline (registry contract:
  cpu_variant, CPU_MICRO_BATCH, CPU_COMPILER_OPTIONS). bf16 on an AMX CPU: the dots in
  micro-batches, no YNNPACK (measured on the Xeon); otherwise the EPYC's tuning:
  Winograd and YNNPACK over the whole batch."""
  amx = _amx_bf16(module)
  return (True, amx, not amx)


def _check_config(cfg) -> None:
  if cfg.layer_type not in ("basic", "bottleneck"):
    raise ValueError(f"ResNet layer_type {cfg.layer_type!r} is not 'basic' or 'bottleneck'")
  if cfg.num_channels != 3:
    raise ValueError(f"ResNet num_channels={cfg.num_channels}; only RGB (3) images are supported")


def build(hf_config, dtype=jnp.float32) -> ResNet:
  _check_config(hf_config)
  return ResNet(
      embedding_size=hf_config.embedding_size, hidden_sizes=tuple(hf_config.hidden_sizes),
      depths=tuple(hf_config.depths), bottleneck=hf_config.layer_type == "bottleneck",
      downsample_in_first_stage=bool(hf_config.downsample_in_first_stage),
      downsample_in_bottleneck=bool(getattr(hf_config, "downsample_in_bottleneck", False)),
      act=hf_config.hidden_act, dtype=dtype)


def _conv_bn(sd: StateDict, prefix: str, cin: int, cout: int, k: int) -> dict[str, np.ndarray]:
  """Reads ``{prefix}.convolution.weight`` [O, I, k, k] and ``{prefix}.normalization.*``;
  returns the folded ``{"kernel": [k, k, I, O], "bias": [O]}``."""
  w = sd.take(f"{prefix}.convolution.weight", (cout, cin, k, k)).astype(np.float64)
  bn = {n: sd.take(f"{prefix}.normalization.{n}", (cout,)).astype(np.float64)
        for n in ("weight", "bias", "running_mean", "running_var")}
  scale = bn["weight"] / np.sqrt(bn["running_var"] + _BN_EPS)
  kernel = w.transpose(2, 3, 1, 0) * scale                  # OIHW -> HWIO, scaled per output
  bias = bn["bias"] - bn["running_mean"] * scale
  return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}


def convert(state_dict: Mapping[str, np.ndarray], hf_config) -> dict:
  """HF ResNetModel / ResNetForImageClassification weights -> ResNet params (BN folded).

  The classification head (``classifier.*``) and BN's ``num_batches_tracked`` counters are
  known and unused; anything else left over, missing or misshaped raises ConversionError.
  """
  _check_config(hf_config)
  sd = StateDict(state_dict, prefixes=("resnet.",),
                 ignore=(r"classifier\..*", r".*\.num_batches_tracked"))
  bottleneck = hf_config.layer_type == "bottleneck"
  params = {"embedder": _conv_bn(sd, "embedder.embedder", hf_config.num_channels,
                                 hf_config.embedding_size, 7)}
  cin = hf_config.embedding_size
  for i, (width, depth) in enumerate(zip(hf_config.hidden_sizes, hf_config.depths)):
    for j in range(depth):
      p = f"encoder.stages.{i}.layers.{j}"
      stride = _stride(i, j, hf_config.downsample_in_first_stage)
      block = {}
      if cin != width or stride != 1:
        block["shortcut"] = _conv_bn(sd, f"{p}.shortcut", cin, width, 1)
      if bottleneck:
        red = width // _REDUCTION
        block["layer_0"] = _conv_bn(sd, f"{p}.layer.0", cin, red, 1)
        block["layer_1"] = _conv_bn(sd, f"{p}.layer.1", red, red, 3)
        block["layer_2"] = _conv_bn(sd, f"{p}.layer.2", red, width, 1)
      else:
        block["layer_0"] = _conv_bn(sd, f"{p}.layer.0", cin, width, 3)
        block["layer_1"] = _conv_bn(sd, f"{p}.layer.1", width, width, 3)
      params[f"stage{i}_block{j}"] = block
      cin = width
  sd.finish("ResNet checkpoint")
  return params
