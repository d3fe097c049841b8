"""run.py on the command line: overrides apply, a misspelt field exits non-zero naming
it, bad values exit listing every one before any work, multi-host set-up at the entry."""

import json
import os

import pytest

from helpers import run_py as run, train_dir


@pytest.mark.parametrize("override,field,hint", [
    ("--config.train.lrr=3e-4", "--config.train.lrr", 'Did you mean "lr"'),
    ("--config.trian.lr=3e-4", "--config.trian.lr", 'Did you mean "train"'),
    ("--config.loss.temperature=0.1", "--config.loss.temperature", "no field 'temperature'"),
])
def test_misspelt_override_exits_nonzero_naming_the_field(tmp_path, override, field, hint):
  p = run("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}", override)
  assert p.returncode != 0
  assert "FATAL Flags parsing error" in p.stderr and field in p.stderr and hint in p.stderr
  assert "Traceback" not in p.stderr + p.stdout
  assert not os.listdir(tmp_path)  # nothing ran


def test_wrong_type_exits_nonzero(tmp_path):
  p = run("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}",
          "--config.train.lr=fast")
  assert p.returncode == 1 and "--config.train.lr=fast" in p.stderr
  assert "Traceback" not in p.stderr


def test_bad_values_exit_2_listing_every_field_before_any_work(tmp_path):
  work = tmp_path / "work"
  p = run("--config=configs/synthetic.py:tiny", f"--workdir={work}",
          "--config.adapter.kind=linaer", "--config.loss.name=clipp",
          "--config.eval.metrics=('mutual_knn','cka2')", "--config.eval.pair=('image','audio')",
          "--config.train.lr=-1.0", "--config.eval.baselines=('cca','pca')")
  assert p.returncode == 2, p.stderr
  assert "Traceback" not in p.stderr
  err = p.stderr
  assert "the config has 6 problem(s)" in err
  for needle in ("adapter.kind='linaer': allowed ('linear', 'mlp', 'glu')",
                 "loss.name='clipp': allowed ('clip', 'clip_one_way', 'siglip')",
                 "unknown ['cka2']", "eval.pair=('image', 'audio')", "train.lr=-1.0",
                 "unknown ['pca']"):
    assert needle in err, (needle, err)
  assert not work.exists()  # nothing was written: not even the workdir


def test_overrides_reach_training(tmp_path):
  p = run("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}",
          "--config.train.num_steps=6", "--config.train.log_every=3",
          "--config.train.ckpt_every=100", "--config.train.lr=0.02",
          "--config.loss.name=siglip", "--config.loss.learn_tau=True")
  assert p.returncode == 0, p.stderr
  d = train_dir(tmp_path)
  lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [3, 6]
  assert "tau" in lines[0]  # learned temperature is logged
  assert abs(max(l["lr"] for l in lines) - 0.02) < 0.02 * 0.2  # peak lr near the override
  assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["6"]
  assert "step 6/6" in p.stderr and "steps/s" in p.stderr and "ETA" in p.stderr


def test_multihost_config_starts(tmp_path):
  # jax.distributed.initialize() must come before the first JAX call of the experiment
  # (the feature cache asks for the process index): one process, loopback coordinator.
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  p = run("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}",
          "--config.train.num_steps=2", "--config.train.warmup_steps=1",
          "--config.distributed.multihost=True",
          f"--config.distributed.coordinator_address=127.0.0.1:{port}",
          "--config.distributed.num_processes=1", "--config.distributed.process_id=0")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "jax.distributed: process 0 of 1" in p.stderr
