"""The compute dtype of feature extraction, "auto" resolved from the devices.

``encoders.dtype = "auto"`` (the default) means bfloat16 on GPUs and TPUs and float32 on
CPUs, except CPUs with AMX matrix units where bf16 measures faster (below). bf16 here is
the encoders' mixed precision (``common.py``): bf16 matmul operands, float32 accumulation, float32 norms / softmax / residual stream / outputs. Its error
bound, tested on every architecture against PyTorch fp32 (tests/test_encoders*.py):
relative error ``||a - b|| / ||b||`` of each layer's features below ``BF16_ERROR_BOUND``
(observed 3e-3 .. 8e-3); float32 stays below 1e-4 (observed ~2e-7).

Why: GPUs, TPUs (and AMX CPUs) run bf16 matmuls at several times their fp32 rate (and
fp32 at HIGHEST precision, which this package asks for, at a fraction of it), while on
CPUs without bf16 matrix units bf16 is slower than fp32 (XLA:CPU converts operands, and
its convolutions have no bf16 fast path at all; docs/design.md, pitfalls).

CPUs with AMX (``amx_bf16`` in /proc/cpuinfo, Intel Sapphire Rapids and later) run
XLA:CPU's bf16 dots on their matrix tiles: on the 2-core Intel Xeon (AMX) one run
measured bf16 dots 4.8x fp32's (1261 vs 260 GFLOP/s), DINOv2-S 2.4x and GPT-2 3.5x its
fp32 features -- while fp32 DINOv2-S ran at 0.91x PyTorch fp32 there (docs/encoders.md).
So "auto" is bfloat16 on such a CPU too, when the CPU's own measurement agrees: the
first time, ``cpu_tuning.bf16_speedup`` times a bf16 and an fp32 dot of a transformer
layer's shape (about a second, cached per CPU model), and bf16 is taken when it is at
least ``BF16_MIN_SPEEDUP`` times faster. Convolutions have no bf16 fast path in XLA:CPU,
so ResNet's run there as bf16 dots (``resnet.cpu_variant``, encoders/conv_dots.py:
ResNet-18 1.3x PyTorch fp32 on that Xeon, within the same error bound);
``encoders.dtype="float32"`` keeps fp32 for any model. With
``PLATONIC_JAX_CPU_TUNING=defaults`` (the test suite's setting) CPUs stay float32.

The feature cache keys the *resolved* name ("float32" / "bfloat16"), so features
extracted on a CPU are never served as a GPU's bf16 ones and vice versa.
"""

from __future__ import annotations

from typing import Sequence

from platonic_jax import host_cpu

CHOICES = ("auto", "float32", "bfloat16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16"}
BF16_ERROR_BOUND = 2e-2   # relative error of bf16 features vs fp32 PyTorch (tested)
BF16_MIN_SPEEDUP = 1.5    # a CPU's bf16 dots must beat its fp32 ones by this for "auto"


def for_platform(platform: str, cpu_bf16: bool = False) -> str:
  """The "auto" dtype on a device platform: "bfloat16" on GPUs / TPUs, and on CPUs when
  ``cpu_bf16`` (``cpu_prefers_bf16``), else "float32"."""
  if platform in ("gpu", "cuda", "rocm", "tpu") or (platform == "cpu" and cpu_bf16):
    return "bfloat16"
  return "float32"


def cpu_prefers_bf16() -> bool:
  """Whether this CPU takes bf16 under "auto": it has AMX, probing is on
  (``cpu_tuning.mode()``), and its bf16 dots measured at least BF16_MIN_SPEEDUP x its
  fp32 ones (``cpu_tuning.bf16_speedup``, cached per CPU model)."""
  if not cpu_has_amx():
    return False
  from platonic_jax.encoders import cpu_tuning  # noqa: PLC0415 - AMX CPUs only
  return cpu_tuning.mode() == "probe" and cpu_tuning.bf16_speedup() >= BF16_MIN_SPEEDUP


def resolve(dtype: str, devices: Sequence | None = None) -> str:
  """``dtype`` with "auto" resolved for ``devices`` (default: this host's
  ``jax.local_devices()``, what ``encoders.load`` encodes on) and aliases ("fp32",
  "bf16") spelled out. Other names pass through unchanged: ``validate.py`` (config) and
  ``encoders.load`` reject them with the allowed values."""
  dtype = ALIASES.get(dtype, dtype)
  if dtype != "auto":
    return dtype
  if devices is None:
    import jax  # noqa: PLC0415 - only "auto" needs a backend
    devices = jax.local_devices()
  platforms = {d.platform for d in devices}
  if len(platforms) != 1:
    raise ValueError(f"dtype='auto' on devices of several platforms {sorted(platforms)}; "
                     "set float32 or bfloat16")
  platform = platforms.pop()
  return for_platform(platform, cpu_bf16=platform == "cpu" and cpu_prefers_bf16())


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
  """Whether the CPU has AMX bf16 tiles (the ``amx_bf16`` flag; False where unknown)."""
  return "amx_bf16" in host_cpu.cpu_info(cpuinfo)["isa"]
