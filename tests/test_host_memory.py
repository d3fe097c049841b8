"""``host_memory.keep_freed_memory``: freed blocks stay in the process (no munmap / trim),
checked by the process's resident size around a free of a touched 16 MiB block, in a
child process each, since the setting is process-global."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, os, sys
from platonic_jax import host_memory
keep = sys.argv[1] == "keep"
if keep:
  assert host_memory.keep_freed_memory() is True
  assert host_memory.keep_freed_memory() is True      # once per process, idempotent
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
n = 16 << 20
p = libc.malloc(n)
ctypes.memset(p, 1, n)       # touch every page
touched = rss()
libc.free(p)
print(touched - rss())       # bytes handed back to the kernel by this free
"""


def _returned_bytes(mode: str, env_value: str | None = None) -> int:
  env = {**os.environ, "PYTHONPATH": os.getcwd()}
  env.pop("PLATONIC_JAX_KEEP_FREED_MEMORY", None)
  if env_value is not None:
    env["PLATONIC_JAX_KEEP_FREED_MEMORY"] = env_value
  out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                       env=env, timeout=60)
  assert out.returncode == 0, out.stderr
  return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_stay_in_the_process():
  default = _returned_bytes("default")
  kept = _returned_bytes("keep")
  # glibc's defaults give the 16 MiB back (a block above its 128 KiB starting mmap
  # threshold is munmap-ed on free) ...
  assert default > 12 << 20, default
  # ... keep_freed_memory keeps it mapped for the next allocation.
  assert kept < 1 << 20, kept


def test_the_environment_turns_it_off():
  code = ("from platonic_jax import host_memory; print(host_memory.keep_freed_memory())")
  env = {**os.environ, "PYTHONPATH": os.getcwd(), "PLATONIC_JAX_KEEP_FREED_MEMORY": "0"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
  assert out.returncode == 0 and out.stdout.strip() == "False", out
