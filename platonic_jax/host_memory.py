"""Keep freed host memory in the process, so XLA:CPU's per-call buffers stop page-faulting.

XLA:CPU allocates an executable's temporaries with the C allocator on every call. glibc's
``free`` hands memory back to the kernel as soon as more than ``M_TRIM_THRESHOLD`` lies
free at the top of a heap (dynamically 2x the mmap threshold: a few MB), and chunks above
the mmap threshold are ``munmap``-ed outright; the next call then faults every page of
its multi-MB temporaries back in (the kernel zeroes each one). A training step on
cached features frees and re-allocates the same [B, B] logits and softmax buffers every
step, so on a CPU this is paid on every step. Measured on the project's 2-core AMD EPYC
(jax 0.10.2, one core): the STRUCTURE regulariser's ``value_and_grad`` at B = 1024
(d = 512) took 82 ms with glibc's defaults, 66 ms with ``keep_freed_memory()``, against
55 ms for its matmuls alone; the plain CLIP step's share of the fp32 matmul peak is in
docs/training.md.

``keep_freed_memory`` sets, through ``mallopt(3)``:
- ``M_TRIM_THRESHOLD`` = 1 GiB and ``M_TOP_PAD`` = 64 MiB: freed memory stays in the
  process (its resident size stays at its peak rather than shrinking between steps);
- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum for its dynamic threshold): blocks up
  to 32 MiB come from the heaps and are reused; larger ones (big feature arrays) are
  still mapped and unmapped on their own, so they do not pin memory after a free.
Order matters: setting the mmap threshold alone turns glibc's dynamic thresholds off and
leaves the trim threshold at its 128 KiB default, which made the same step 1.6x slower.

Process-global, as ``TCMALLOC`` / ``jemalloc`` preloads are (the usual fix for this on
XLA:CPU and TensorFlow, not installable from pip here). ``run.py`` calls it once at
start-up and the training benchmark does too; it is a no-op returning False off glibc
(macOS, musl) and when ``PLATONIC_JAX_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20
MMAP_THRESHOLD = 32 << 20
ENV = "PLATONIC_JAX_KEEP_FREED_MEMORY"

_done: bool | None = None


def keep_freed_memory() -> bool:
  """Applies the settings above once per process. True when glibc accepted all three."""
  global _done
  if _done is not None:
    return _done
  _done = False
  if os.environ.get(ENV, "1") == "0":
    return _done
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):   # not glibc: its allocator keeps its own policy
    return _done
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  _done = all(mallopt(p, v) == 1 for p, v in ((M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                              (M_TOP_PAD, TOP_PAD),
                                              (M_MMAP_THRESHOLD, MMAP_THRESHOLD)))
  return _done
