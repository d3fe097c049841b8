"""The compute dtype of feature extraction, "auto" resolved from the devices.

``encoders.dtype = "auto"`` (the default) means bfloat16 on GPUs and TPUs and float32 on
CPUs. bf16 here is the encoders' mixed precision (``common.py``): bf16 matmul operands,
float32 accumulation, float32 norms / softmax / residual stream / outputs. Its error
bound, tested on every architecture against PyTorch fp32 (tests/test_encoders*.py):
relative error ``||a - b|| / ||b||`` of each layer's features below ``BF16_ERROR_BOUND``
(observed 3e-3 .. 8e-3); float32 stays below 1e-4 (observed ~2e-7).

Why: GPUs and TPUs run bf16 matmuls at several times their fp32 rate (and fp32 at
HIGHEST precision, which this package asks for, at a fraction of it), while on CPUs
without bf16 matrix units bf16 is slower than fp32 (XLA:CPU converts operands, and
its convolutions have no bf16 fast path at all; docs/design.md, pitfalls).

CPUs with AMX (``amx_bf16`` in /proc/cpuinfo, Intel Sapphire Rapids and later) could
take bf16 dots; "auto" still picks float32 there: the speed-up has not been measured on
such a machine (XLA:CPU reaches AMX only for dots, not for ResNet's convolutions), and
float32 keeps CPU features -- and the stored CPU caches -- what they have always been.
``cpu_has_amx`` lets a run say so in its log; ``encoders.dtype="bfloat16"`` opts in.

The feature cache keys the *resolved* name ("float32" / "bfloat16"), so features
extracted on a CPU are never served as a GPU's bf16 ones and vice versa.
"""

from __future__ import annotations

from typing import Sequence

CHOICES = ("auto", "float32", "bfloat16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16"}
BF16_ERROR_BOUND = 2e-2   # relative error of bf16 features vs fp32 PyTorch (tested)


def for_platform(platform: str) -> str:
  """The "auto" dtype on a device platform: "bfloat16" on GPUs / TPUs, else "float32"."""
  return "bfloat16" if platform in ("gpu", "cuda", "rocm", "tpu") else "float32"


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
  return for_platform(platforms.pop())


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
  """Whether the CPU has AMX bf16 tiles (the ``amx_bf16`` flag; False where unknown)."""
  try:
    with open(cpuinfo) as f:
      return any(line.startswith("flags") and " amx_bf16" in line for line in f)
  except OSError:
    return False
