"""The feature cache: atomic chunks, manifest, config keys, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from platonic_jax import features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(n=50, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(n, 6)).astype(np.float32),
          "text": rng.normal(size=(n, 4)).astype(np.float32),
          "labels": rng.integers(0, 3, n).astype(np.int32)}


class Counting:
  """A producer that records which chunks it was asked for and can fail at one."""

  def __init__(self, arrays, chunk, fail_at=None):
    self.inner, self.num = features.row_chunks(arrays, chunk)
    self.calls, self.fail_at = [], fail_at

  def __call__(self, start):
    for i, c in enumerate(self.inner(start), start):
      if i == self.fail_at:
        raise KeyboardInterrupt(f"killed at chunk {i}")
      self.calls.append(i)
      yield c


def test_extract_writes_manifest_and_reloads(tmp_path):
  a = _arrays()
  cache = features.FeatureCache(str(tmp_path), {"x": 1})
  p = Counting(a, 16)
  out = cache.extract("test", p, p.num)
  assert p.calls == [0, 1, 2, 3]
  for k in a:
    np.testing.assert_array_equal(out[k], a[k])
    assert out[k].dtype == a[k].dtype
  m = json.load(open(os.path.join(cache.root, "manifest.json")))
  assert m["config"] == {"x": 1} and m["splits"] == {"test": ["image", "labels", "text"]}
  assert m["arrays"]["test/image"]["shape"] == [50, 6]
  assert m["arrays"]["test/labels"]["dtype"] == "int32"
  # No chunk or temporary file is left behind.
  left = [f for _, _, fs in os.walk(cache.root) for f in fs]
  assert sorted(left) == ["image.npy", "labels.npy", "manifest.json", "text.npy"]
  # A second run is a no-op: the producer is not called, the arrays come from disk.
  p2 = Counting(a, 16)
  again = features.FeatureCache(str(tmp_path), {"x": 1}).extract("test", p2, p2.num)
  assert p2.calls == []
  np.testing.assert_array_equal(again["text"], a["text"])


def test_different_config_never_reused(tmp_path):
  a = _arrays()
  c1 = features.FeatureCache(str(tmp_path), {"encoder": "a"})
  c1.extract("test", *features.row_chunks(a, 64))
  c2 = features.FeatureCache(str(tmp_path), {"encoder": "b"})
  assert c2.root != c1.root and not c2.done("test")
  b = _arrays(seed=1)
  out = c2.extract("test", *features.row_chunks(b, 64))
  np.testing.assert_array_equal(out["image"], b["image"])
  # A manifest whose stored config disagrees with its key directory is refused.
  m = json.load(open(os.path.join(c1.root, "manifest.json")))
  m["config"] = {"encoder": "tampered"}
  json.dump(m, open(os.path.join(c1.root, "manifest.json"), "w"))
  with pytest.raises(features.CacheError, match="different config"):
    features.FeatureCache(str(tmp_path), {"encoder": "a"}).load("test")


def test_feature_spec_ignores_training_fields_but_not_encoder_fields():
  from configs import synthetic  # noqa: E402
  c = synthetic.get_config("tiny")
  key = features.spec_key(features.feature_spec(c))
  c2 = synthetic.get_config("tiny")
  c2.unlock()
  c2.train.lr = 0.5
  assert features.spec_key(features.feature_spec(c2)) == key
  for change in (lambda c: setattr(c.modalities.image, "layer", 3),
                 lambda c: setattr(c.encoders, "dtype", "bfloat16"),
                 lambda c: setattr(c, "seed", 1),
                 lambda c: setattr(c.data.synthetic, "noise", 0.3)):
    c3 = synthetic.get_config("tiny")
    change(c3)
    assert features.spec_key(features.feature_spec(c3)) != key


def test_killed_extraction_resumes_at_last_finished_chunk(tmp_path):
  a = _arrays(n=70)
  cache = features.FeatureCache(str(tmp_path), {"x": 2})
  p = Counting(a, 10, fail_at=4)
  with pytest.raises(KeyboardInterrupt):
    cache.extract("train", p, p.num)
  assert p.calls == [0, 1, 2, 3] and not cache.done("train")
  assert cache.finished_chunks("train", p.num) == 4
  p2 = Counting(a, 10)
  out = features.FeatureCache(str(tmp_path), {"x": 2}).extract("train", p2, p2.num)
  assert p2.calls == [4, 5, 6]
  for k in a:
    np.testing.assert_array_equal(out[k], a[k])


def test_sigkill_mid_extraction_then_rerun(tmp_path):
  """A real SIGKILL (no Python cleanup) during chunk 3, then the same command again."""
  script = textwrap.dedent(f"""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {ROOT!r})
    from platonic_jax import features
    rng = np.random.default_rng(0)
    a = {{"image": rng.normal(size=(40, 5)).astype(np.float32)}}
    inner, num = features.row_chunks(a, 8)
    kill = sys.argv[1] == "kill"
    done = []
    def producer(start):
      for i, c in enumerate(inner(start), start):
        if kill and i == 3:
          os.kill(os.getpid(), signal.SIGKILL)
        done.append(i)
        yield c
    out = features.FeatureCache({str(tmp_path)!r}, {{"k": 1}}).extract("test", producer, num)
    np.testing.assert_array_equal(out["image"], a["image"])
    print("computed", done)
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True,
                     env=env)
  assert r.returncode == -signal.SIGKILL, r.stderr
  r = subprocess.run([sys.executable, "-c", script, "resume"], capture_output=True, text=True,
                     env=env)
  assert r.returncode == 0, r.stderr
  assert "computed [3, 4]" in r.stdout


def test_corrupt_file_detected(tmp_path):
  cache = features.FeatureCache(str(tmp_path), {"x": 3})
  cache.extract("test", *features.row_chunks(_arrays(), 100))
  path = os.path.join(cache.root, "test", "image.npy")
  data = bytearray(open(path, "rb").read())
  data[-1] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(features.CacheError, match="checksum"):
    cache.load("test")
  os.unlink(path)
  with pytest.raises(features.CacheError, match="missing"):
    cache.load("test")


def test_bad_chunks_raise(tmp_path):
  cache = features.FeatureCache(str(tmp_path), {"x": 4})
  bad = {"image": np.full((4, 2), np.nan, np.float32)}
  with pytest.raises(ValueError, match="NaN or Inf"):
    cache.extract("test", *features.row_chunks(bad, 2))
  with pytest.raises(ValueError, match="share their number of rows"):
    features.row_chunks({"a": np.zeros((3, 1)), "b": np.zeros((4, 1))}, 2)
  short = lambda start: iter([{"a": np.zeros((2, 1))}])  # noqa: E731
  with pytest.raises(ValueError, match="stopped after chunk 1 of 3"):
    cache.extract("train", short, 3)


def test_extract_all_synthetic(tmp_path):
  from configs import synthetic
  c = synthetic.get_config("tiny")
  c.eval.feature_chunk_size = 100
  out = features.extract_all(c, str(tmp_path))
  from platonic_jax.data import synthetic as world
  w = world.make_world(c.data.synthetic, c.seed)
  assert set(out) == {"train", "test"}
  for split in out:
    assert set(out[split]) == {"image", "text", "reference", "labels", "z"}
    np.testing.assert_array_equal(out[split]["image"], w[split]["image"])
    np.testing.assert_array_equal(out[split]["reference"], w[split]["reference"])
    np.testing.assert_array_equal(out[split]["labels"], w[split]["labels"])
  again = features.extract_all(c, str(tmp_path))
  np.testing.assert_array_equal(again["test"]["text"], out["test"]["text"])
  c.modalities.image.encoder = "microsoft/resnet-18"
  with pytest.raises(ValueError, match="no raw inputs"):
    features.extract_all(c, str(tmp_path))


# ---------------------------------------------------------------------------------------
# Real encoders over a fake Flickr30k folder (tiny random HF checkpoints, made here).


@pytest.fixture(scope="module")
def flickr_setup(tmp_path_factory):
  import hf_fixtures
  from test_data_tfds import make_flickr
  root = tmp_path_factory.mktemp("flickr_feats")
  make_flickr(str(root / "manual"), "json")
  for d in ("resnet", "gpt2", "dinov2"):
    os.makedirs(root / d)
  hf_fixtures.tiny_resnet(str(root / "resnet"))
  hf_fixtures.tiny_gpt2(str(root / "gpt2"))
  hf_fixtures.tiny_dinov2(str(root / "dinov2"))
  from configs import flickr
  c = flickr.get_config("tiny")
  c.data.manual_dir = str(root / "manual")
  c.data.data_dir = str(root / "tfds")
  c.data.num_workers = 0
  c.modalities.image.encoder = str(root / "resnet")
  c.modalities.text.encoder = str(root / "gpt2")
  c.reference.encoder = str(root / "dinov2")
  c.encoders.batch_size = 2
  c.encoders.text_max_length = 32
  c.eval.feature_chunk_size = 3
  return root, c


def test_extract_all_real_encoders_matches_direct_encode_and_resumes(flickr_setup, tmp_path):
  from platonic_jax import encoders
  from platonic_jax.data import loader, open_source
  root, c = flickr_setup
  out = features.extract_all(c, str(tmp_path / "a"))
  src = {s: open_source(c.data, s) for s in ("train", "test")}
  recs = {s: [src[s][i] for i in range(len(src[s]))] for s in src}
  assert out["train"]["image"].shape[0] == len(recs["train"]) == 8
  resnet = encoders.load(c.modalities.image.encoder)
  gpt2 = encoders.load(c.modalities.text.encoder, max_length=32)
  dino = encoders.load(c.reference.encoder)
  for s in ("train", "test"):
    images = [np.asarray(loader.decode_image(r["image"])) for r in recs[s]]
    caps = [r["caption"].decode() for r in recs[s]]
    np.testing.assert_allclose(out[s]["image"], resnet.encode(images), atol=1e-5)
    np.testing.assert_allclose(out[s]["dinov2"], dino.encode(images), atol=1e-5)
    np.testing.assert_allclose(out[s]["text"], gpt2.encode(caps), atol=1e-5)
  # Test split: every caption, and whose image it is.
  allcaps = [(i, cap.decode()) for i, r in enumerate(recs["test"]) for cap in r["captions"]]
  np.testing.assert_array_equal(out["test"]["caption_image"], [i for i, _ in allcaps])
  np.testing.assert_allclose(out["test"]["text@captions"],
                             gpt2.encode([t for _, t in allcaps]), atol=1e-5)
  assert "text@captions" not in out["train"]

  # A run interrupted after the first train chunk, then the same call again: same arrays.
  work = str(tmp_path / "b")
  cache = features.FeatureCache(work, features.feature_spec(c))
  prods = features.make_producers(c, work, cache)
  inner, num = prods["train"]
  assert num == 3  # 8 rows in chunks of 3

  def interrupted(start):
    for i, chunk in enumerate(inner(start), start):
      if i == 1:
        raise KeyboardInterrupt
      yield chunk

  with pytest.raises(KeyboardInterrupt):
    cache.extract("train", interrupted, num)
  assert cache.finished_chunks("train", num) == 1
  again = features.extract_all(c, work)
  for s in out:
    for k in out[s]:
      np.testing.assert_array_equal(again[s][k], out[s][k])
