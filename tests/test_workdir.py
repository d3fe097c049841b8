"""Workdir hygiene: files get the umask's mode (colleagues can read reports and reuse
caches), and one process at a time (a second exits at once naming the holder; a lock
left by a kill -9'd run blocks nothing)."""

import os
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import ROOT, env, run_py
from platonic_jax import errors, workdir

SMALL = ["--config=configs/synthetic.py:tiny", "--config.train.num_steps=4",
         "--config.train.warmup_steps=1", "--config.eval.metrics=('mutual_knn',)",
         "--config.eval.ks=(10,)", "--config.eval.bootstrap=10",
         "--config.eval.baselines=('cca',)"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask, mode):
  code = textwrap.dedent(f"""
      import os, sys
      os.umask({umask})
      from platonic_jax import workdir
      workdir.atomic_write_bytes(sys.argv[1], b"x")
      print(oct(os.stat(sys.argv[1]).st_mode & 0o777))
  """)
  p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], env=env(),
                     capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  assert p.stdout.strip() == oct(mode)


def test_every_output_is_readable_by_others(tmp_path):
  work = tmp_path / "w"
  p = subprocess.run(["sh", "-c", f"umask 022 && exec {sys.executable} run.py "
                      + " ".join(shlex.quote(a) for a in SMALL) + f" --workdir={work}"],
                     cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  unreadable = []
  for d, _, files in os.walk(work):
    for f in files:
      mode = os.stat(os.path.join(d, f)).st_mode
      if not mode & stat.S_IROTH:
        unreadable.append((os.path.relpath(os.path.join(d, f), work), oct(mode & 0o777)))
  assert not unreadable, unreadable[:10]
  assert os.path.exists(work / "report" / "report.md")


HOLD = textwrap.dedent("""
    import sys, time
    from platonic_jax import workdir
    with workdir.lock(sys.argv[1]):
      print("locked", flush=True)
      time.sleep(600)
""")


def test_a_second_process_exits_naming_the_holder_and_a_killed_holder_blocks_nothing(
    tmp_path):
  work = tmp_path / "w"
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.time()
    p = run_py(*SMALL, f"--workdir={work}")
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"is in use by pid {holder.pid} on host" in p.stderr and " since " in p.stderr
    assert "Traceback" not in p.stderr
    assert time.time() - t0 < 60
    assert sorted(os.listdir(work)) == [".lock"]  # nothing else was written
    with pytest.raises(errors.WorkdirBusy, match=f"pid {holder.pid}"):
      with workdir.lock(str(work)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir.lock(str(work)):  # the kernel dropped the dead holder's lock
    pass
