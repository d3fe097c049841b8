"""The whole flickr config, offline, through run.py: fake Flickr30k folder + tiny random
HF checkpoints (made here), report written with finite numbers, a re-run recomputes
nothing, and a run killed (SIGKILL) during feature extraction resumes to the same result.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import hf_fixtures  # noqa: E402

NUM_TRAIN, NUM_TEST = 16, 8


def _fake_flickr(root: str) -> None:
  """Karpathy-format folder: random JPEGs, five captions each, train / val / test."""
  img_dir = os.path.join(root, "flickr30k-images")
  os.makedirs(img_dir)
  rng = np.random.default_rng(0)
  words = ["a", "dog", "runs", "on", "grass", "two", "people", "sit", "near", "water",
           "red", "car", "in", "street", "child", "plays", "with", "ball"]
  images = []
  splits = ["train"] * NUM_TRAIN + ["val"] * 2 + ["test"] * NUM_TEST
  for i, split in enumerate(splits):
    name = f"{1000 + i}.jpg"
    pixels = rng.integers(0, 256, size=(30 + i, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(img_dir, name), quality=90)
    sentences = [" ".join(rng.choice(words, size=3 + j + i % 4)) for j in range(5)]
    images.append({"filename": name, "imgid": i, "split": split,
                   "sentences": [{"raw": s, "tokens": s.split()} for s in sentences]})
  with open(os.path.join(root, "dataset_flickr30k.json"), "w") as f:
    json.dump({"dataset": "flickr30k", "images": images}, f)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("flickr_e2e")
  _fake_flickr(str(root / "manual"))
  for d in ("resnet", "gpt2", "dinov2"):
    os.makedirs(root / d)
  hf_fixtures.tiny_resnet(str(root / "resnet"))
  hf_fixtures.tiny_gpt2(str(root / "gpt2"))
  hf_fixtures.tiny_dinov2(str(root / "dinov2"))
  return root


def _command(root, workdir):
  return [sys.executable, os.path.join(ROOT, "run.py"), "--config",
          os.path.join(ROOT, "configs", "flickr.py") + ":tiny", "--workdir", str(workdir),
          f"--config.data.manual_dir={root / 'manual'}",
          f"--config.data.data_dir={root / 'tfds'}",
          "--config.data.num_workers=0",
          f"--config.modalities.image.encoder={root / 'resnet'}",
          f"--config.modalities.text.encoder={root / 'gpt2'}",
          f"--config.reference.encoder={root / 'dinov2'}",
          "--config.encoders.batch_size=2",
          "--config.encoders.text_max_length=32",
          "--config.features.chunk_size=2"]


def _env():
  env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  return env


def _run(root, workdir):
  p = subprocess.run(_command(root, workdir), env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr[-4000:]
  return p.stdout + p.stderr


def _finite_numbers(tree, path="report"):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _finite_numbers(v, f"{path}.{k}")
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      yield from _finite_numbers(v, f"{path}[{i}]")
  elif isinstance(tree, float):
    yield path, tree


def _state(workdir):
  """mtime of every file that a stage or training writes (the report is rewritten)."""
  out = {}
  for sub in ("features", "stages", "train"):
    for dirpath, _, files in os.walk(os.path.join(workdir, sub)):
      for f in files:
        p = os.path.join(dirpath, f)
        out[p] = os.stat(p).st_mtime_ns
  return out


def _features(workdir):
  """{entry key/array name: array} of every finished feature entry."""
  root = os.path.join(workdir, "features")
  out = {}
  for key in sorted(os.listdir(root)):
    for f in sorted(os.listdir(os.path.join(root, key))):
      if f.endswith(".npy"):
        out[f"{key}/{f}"] = np.load(os.path.join(root, key, f))
  assert len(out) >= 7, f"expected every source and split under {root}: {sorted(out)}"
  return out


def test_flickr_config_end_to_end_rerun_and_kill_resume(setup, tmp_path):
  work = tmp_path / "run"
  log = _run(setup, work)
  with open(work / "report" / "report.json") as f:
    rep = json.load(f)
  numbers = list(_finite_numbers(rep))
  assert len(numbers) > 50
  bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
  assert not bad, bad[:5]
  for fig in ("alignment.png", "mutual_knn_vs_k.png", "train_loss.png", "recall.png"):
    assert os.path.getsize(work / "report" / fig) > 1000, fig
  assert "platonic_jax summary" in log

  # Same command again: nothing recomputed, nothing retrained.
  before = _state(work)
  log2 = _run(setup, work)
  assert _state(work) == before
  assert "stage before: done" in log2 and "stage trained/verdict: done" in log2

  # A run SIGKILLed during feature extraction (just before train chunk 3 is written: a
  # wrapper makes the kill land there exactly), then the same command: it resumes at
  # chunk 3 and ends with the same features and verdict.
  killed = tmp_path / "killed"
  wrapper = textwrap.dedent(f"""
    import os, runpy, signal, sys
    from platonic_jax import workdir
    write = workdir.atomic_write_bytes
    def write_or_die(path, data):  # the first pass is the train split's
      if ".chunks-2" in path and path.endswith("000003.npz"):
        os.kill(os.getpid(), signal.SIGKILL)
      write(path, data)
    workdir.atomic_write_bytes = write_or_die
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
  """)
  p = subprocess.run([sys.executable, "-c", wrapper] + _command(setup, killed)[1:],
                     env=_env(), capture_output=True, text=True, timeout=600)
  assert p.returncode == -signal.SIGKILL, p.stderr[-4000:]
  assert not os.path.exists(killed / "report")
  log3 = _run(setup, killed)
  assert "features train: resuming at chunk 3/8" in log3, log3[-3000:]
  a, b = _features(work), _features(killed)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with open(killed / "report" / "report.json") as f:
    rep_b = json.load(f)
  assert rep_b["results"]["spaces"][0]["name"] == "trained"
  assert rep_b["results"]["spaces"][0]["verdict"] == rep["results"]["spaces"][0]["verdict"]
