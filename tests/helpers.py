"""Helpers shared by the tests (importable as ``helpers``: tests/ is on pytest's
pythonpath)."""

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(devices: int | None = None, **extra) -> dict:
  """The environment of a subprocess: conftest's 8 fake devices (or ``devices`` of them)
  and HF_HUB_OFFLINE, and the repository and tests/ importable."""
  e = dict(os.environ)
  e["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                     e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  if devices is not None:
    flags = [f for f in e.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    e["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  e.update(extra)
  return e


def run_py(*args, timeout=300, devices=1, **kw) -> subprocess.CompletedProcess:
  """``python run.py ARGS`` from the repository root, on ``devices`` fake CPU devices (1,
  what a user's CPU has: 8 devices on 2 cores double a run's time; the sharded paths have
  their own in-process tests)."""
  return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env(devices),
                        capture_output=True, text=True, timeout=timeout, **kw)


def load_config(name="synthetic", arg="tiny"):
  """``configs/<name>.py``'s config for ``arg``, unlocked for the test to edit."""
  import importlib  # noqa: PLC0415
  c = importlib.import_module(f"configs.{name}").get_config(arg)
  c.unlock()
  return c


def train_dirs(workdir) -> list[str]:
  """The training directories of a workdir (one per training key)."""
  return sorted(glob.glob(os.path.join(str(workdir), "train", "*")))


def train_dir(workdir) -> str:
  """The workdir's only training directory."""
  dirs = train_dirs(workdir)
  assert len(dirs) == 1, dirs
  return dirs[0]


def config_leaves(cfg, prefix=""):
  """(dotted path, value) of every leaf field of a ConfigDict."""
  import ml_collections  # noqa: PLC0415
  for k in cfg:
    v = cfg[k]
    if isinstance(v, ml_collections.ConfigDict):
      yield from config_leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v
