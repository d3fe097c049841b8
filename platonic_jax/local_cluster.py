"""Several local JAX processes for multi-host code on one machine (tests, benchmarks).

    outs = local_cluster.run(script, [[str(i), ...] for i in range(2)], timeout=300)

Each process runs ``script`` (a file path, or code with ``code=True``) with its own
arguments, the coordinator port in ``$PJ_COORDINATOR_PORT`` (the same for all, for
``jax.distributed.initialize(f"127.0.0.1:{port}", ...)``), the repository root and
``extra_path`` on ``PYTHONPATH``, and no inherited ``XLA_FLAGS`` (each child sets its
own device count before importing jax). Loopback only (docs/design.md: gloo collectives).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run(script: str, argvs: Sequence[Sequence[str]], timeout: float = 300,
        extra_path: Sequence[str] = (), code: bool = False) -> list[str]:
  """Runs one process per ``argvs`` entry at once, waits for all; returns their combined
  stdout + stderr. Raises RuntimeError with a failing process's output tail."""
  env = dict(os.environ, PJ_COORDINATOR_PORT=str(free_port()),
             PYTHONPATH=os.pathsep.join([ROOT, *extra_path, os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-c", script] if code else [sys.executable, script]
  procs = [subprocess.Popen(cmd + [str(a) for a in argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for argv in argvs]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    finally:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    if p.returncode != 0:
      raise RuntimeError(f"local process {i} exited with {p.returncode}:\n{out[-5000:]}")
  return outs
