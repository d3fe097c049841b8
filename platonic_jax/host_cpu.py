"""This host's CPU: its model name and the instruction-set extensions that decide which
kernels run (XLA:CPU's, oneDNN's). Read by the benchmarks' headers (numbers from
different CPUs are never compared as one), by ``encoders.cpu_tuning`` (its cache is per
CPU model) and by ``encoders.auto_dtype`` (AMX)."""

from __future__ import annotations

import os
import platform

# AVX2 / FMA, the AVX-512 family, its bf16 / VNNI dot products, Intel's AMX tiles, and
# arm64's SIMD / SVE.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
  """{"model": str, "isa": [flags of ISA_FLAGS present]} of this machine's CPU.

  Linux: the first processor's "model name" and "flags" (x86) or "Features" (arm64) of
  ``path``; elsewhere (or unreadable) ``platform.processor()`` / ``platform.machine()``
  and an empty ISA list."""
  model, flags = "", set()
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
          model = value.strip()
        elif key in ("flags", "features") and not flags:
          flags = set(value.split())
  except OSError:
    pass
  model = model or platform.processor() or platform.machine() or "unknown CPU"
  return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask where the OS has one)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
