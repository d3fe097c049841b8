"""Resume through run.py in a subprocess: SIGKILL mid-training, SIGTERM (preemption)."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import ROOT, env as _env, train_dirs

NUM_STEPS = 160
ARGS = ["--config=configs/synthetic.py:tiny", f"--config.train.num_steps={NUM_STEPS}",
        "--config.train.ckpt_every=20", "--config.train.log_every=50"]


def start(workdir):
  # Two devices: the state is still sharded over a mesh (what a restore must put back),
  # at half the cost of conftest's eight on two cores.
  return subprocess.Popen([sys.executable, "run.py", *ARGS, f"--workdir={workdir}"],
                          cwd=ROOT, env=_env(devices=2), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def ckpt_dir(workdir):
  """``<workdir>/train/<key>/checkpoints`` (None before training has started)."""
  dirs = train_dirs(workdir)
  assert len(dirs) <= 1, dirs
  return os.path.join(dirs[0], "checkpoints") if dirs else None


def complete_steps(workdir):
  d = ckpt_dir(workdir)
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if d and os.path.isdir(d) else []


def wait_for_checkpoint(proc, workdir, timeout=240):
  t0 = time.time()
  while not complete_steps(workdir):
    assert proc.poll() is None, f"run ended before its first checkpoint:\n{finish(proc)[1]}"
    assert time.time() - t0 < timeout, "no checkpoint appeared"
    time.sleep(0.02)


def final_params(workdir):
  """The parameters of the checkpoint of the last step, read back by Orbax (no target)."""
  assert complete_steps(workdir)[-1] == NUM_STEPS
  with ocp.CheckpointManager(ckpt_dir(workdir)) as mngr:
    restored = mngr.restore(NUM_STEPS, args=ocp.args.StandardRestore())
  return restored["params"]


def assert_same_tree(a, b):
  assert set(a) == set(b)
  for k in a:
    if isinstance(a[k], dict):
      assert_same_tree(a[k], b[k])
    else:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  rc, out = finish(start(workdir))
  assert rc == 0, out
  return final_params(workdir)


def test_sigkill_then_rerun_ends_with_uninterrupted_parameters(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  proc = start(workdir)
  wait_for_checkpoint(proc, workdir)
  time.sleep(0.25)  # somewhere after the first checkpoint: between steps or mid-save
  proc.send_signal(signal.SIGKILL)
  finish(proc)
  killed_at = complete_steps(workdir)[-1]
  assert killed_at < NUM_STEPS, "the run finished before the kill: make it longer"
  # What a kill in the middle of the next save leaves behind (Orbax writes to a tmp dir
  # and renames it when complete): it must be ignored and the step saved again.
  partial = os.path.join(ckpt_dir(workdir), f"{killed_at + 20}.orbax-checkpoint-tmp")
  os.makedirs(os.path.join(partial, "state"), exist_ok=True)
  open(os.path.join(partial, "state", "junk"), "w").write("cut short")
  rc, out = finish(start(workdir))
  assert rc == 0, out
  assert f"Resuming at step {killed_at}" in out
  assert_same_tree(final_params(workdir), uninterrupted)


def test_sigterm_saves_exits_cleanly_and_rerun_continues(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  proc = start(workdir)
  wait_for_checkpoint(proc, workdir)
  proc.send_signal(signal.SIGTERM)
  rc, out = finish(proc)
  assert rc == 0, out
  assert "Traceback" not in out
  m = re.search(r"preempted \(SIGTERM\) at step (\d+); checkpoint saved", out)
  assert m, out
  stopped = int(m.group(1))
  assert stopped < NUM_STEPS and complete_steps(workdir)[-1] == stopped
  rc, out = finish(start(workdir))
  assert rc == 0, out
  assert f"Resuming at step {stopped}" in out
  assert_same_tree(final_params(workdir), uninterrupted)
