"""The feature store: one entry per source and split keyed by its inputs; atomic chunks,
manifest, checksums, resume after a kill; extraction over the synthetic world and over
real (tiny) encoders."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import env, load_config
from platonic_jax import errors, features, plan
from platonic_jax.data import synthetic


def _arrays(n=50, seed=0):
  rng = np.random.default_rng(seed)
  return {"features": rng.normal(size=(n, 6)).astype(np.float32),
          "labels": rng.integers(0, 3, n).astype(np.int32)}


def test_entry_saves_manifest_and_reloads(tmp_path):
  a = _arrays()
  e = features.Entry(str(tmp_path), "k1", {"x": 1})
  assert not e.done()
  e.save(a)
  m = json.load(open(os.path.join(e.root, "manifest.json")))
  assert m["inputs"] == {"x": 1} and m["key"] == "k1"
  assert m["arrays"]["features"]["shape"] == [50, 6]
  assert m["arrays"]["labels"]["dtype"] == "int32"
  out = features.Entry(str(tmp_path), "k1", {"x": 1}).load()
  for k in a:
    np.testing.assert_array_equal(out[k], a[k])
    assert out[k].dtype == a[k].dtype
  assert sorted(os.listdir(e.root)) == ["features.npy", "labels.npy", "manifest.json"]


def test_recorded_inputs_must_match(tmp_path):
  e = features.Entry(str(tmp_path), "k1", {"encoder": "a"})
  e.save(_arrays())
  with pytest.raises(errors.CacheError, match="other inputs"):
    features.Entry(str(tmp_path), "k1", {"encoder": "tampered"}).done()


def test_chunks_resume_and_finalise(tmp_path):
  a = _arrays(n=70)
  e = features.Entry(str(tmp_path), "k2", {"x": 2})
  for i in range(4):
    e.save_chunk(10, i, {k: v[i * 10:(i + 1) * 10] for k, v in a.items()})
  again = features.Entry(str(tmp_path), "k2", {"x": 2})
  assert again.finished_chunks(10, 7) == 4
  assert again.finished_chunks(20, 4) == 0  # another chunk size starts over
  for i in range(4, 7):
    again.save_chunk(10, i, {k: v[i * 10:(i + 1) * 10] for k, v in a.items()})
  out = again.finalise(10, 7)
  for k in a:
    np.testing.assert_array_equal(out[k], a[k])
  assert sorted(os.listdir(again.root)) == ["features.npy", "labels.npy", "manifest.json"]
  with pytest.raises(ValueError, match="NaN or Inf"):
    again.save_chunk(10, 0, {"features": np.full((4, 2), np.nan, np.float32)})


def test_sigkill_mid_extraction_then_rerun(tmp_path):
  """A real SIGKILL (no Python cleanup) while chunk 3 is computed, then the same again."""
  script = textwrap.dedent(f"""
    import os, signal, sys
    import numpy as np
    from platonic_jax import features
    a = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    e = features.Entry({str(tmp_path)!r}, "k", {{"k": 1}})
    start = e.finished_chunks(8, 5)
    done = []
    for i in range(start, 5):
      if sys.argv[1] == "kill" and i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
      e.save_chunk(8, i, {{"features": a[i * 8:(i + 1) * 8]}})
      done.append(i)
    np.testing.assert_array_equal(e.finalise(8, 5)["features"], a)
    print("computed", done)
  """)
  r = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True,
                     env=env(JAX_PLATFORMS="cpu"))
  assert r.returncode == -signal.SIGKILL, r.stderr
  r = subprocess.run([sys.executable, "-c", script, "resume"], capture_output=True, text=True,
                     env=env(JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr
  assert "computed [3, 4]" in r.stdout


def test_corrupt_file_detected(tmp_path):
  e = features.Entry(str(tmp_path), "k3", {"x": 3})
  e.save(_arrays())
  path = os.path.join(e.root, "features.npy")
  data = bytearray(open(path, "rb").read())
  data[-1] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(errors.CacheError, match="checksum"):
    e.load()
  os.unlink(path)
  with pytest.raises(errors.CacheError, match="missing"):
    e.load()


def _keys(c):
  return plan.build(c).keys


def test_feature_keys_are_exactly_their_inputs():
  c = load_config("synthetic")
  base = _keys(c)
  c.train.lr = 0.5
  c.features.chunk_size = 7
  assert {k: v for k, v in _keys(c).items() if k.startswith("features/")} == {
      k: v for k, v in base.items() if k.startswith("features/")}
  c = load_config("synthetic")
  c.data.synthetic.noise = 0.3
  assert all(_keys(c)[k] != base[k] for k in base if k.startswith("features/"))
  # Real encoders: each source by its own encoder fields; the seed is not an input.
  f = load_config("flickr")
  fb = _keys(f)
  f.modalities.text.layer = 3
  fk = _keys(f)
  assert fk["features/train/text"] != fb["features/train/text"]
  assert fk["features/train/image"] == fb["features/train/image"]
  assert fk["features/test/ref"] == fb["features/test/ref"]
  f = load_config("flickr")
  f.seed = 5
  f.encoders.text_max_length = 32
  fk = _keys(f)
  assert fk["features/train/image"] == fb["features/train/image"]  # images have no tokens
  assert fk["features/train/text"] != fb["features/train/text"]


def test_extract_all_synthetic(tmp_path):
  c = load_config("synthetic")
  p = plan.build(c)
  out = features.extract_all(p.feature_requests(), str(tmp_path))
  w = synthetic.make_world(synthetic.WorldParams.from_config(c.data.synthetic, seed=c.seed))
  assert set(out) == {"train", "test"}
  for split in out:
    assert set(out[split].views) == {"image", "text", "ref"}
    np.testing.assert_array_equal(out[split].views["image"], w[split]["image"])
    np.testing.assert_array_equal(out[split].views["ref"], w[split]["reference"])
    np.testing.assert_array_equal(out[split].labels, w[split]["labels"])
    np.testing.assert_array_equal(out[split].z, w[split]["z"])
  again = features.extract_all(p.feature_requests(), str(tmp_path))
  np.testing.assert_array_equal(again["test"].views["text"], out["test"].views["text"])


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
  c = load_config("flickr")
  c.data.manual_dir = str(root / "manual")
  c.data.data_dir = str(root / "tfds")
  c.data.num_workers = 0
  c.modalities.image.encoder = str(root / "resnet")
  c.modalities.text.encoder = str(root / "gpt2")
  c.reference.encoder = str(root / "dinov2")
  c.encoders.batch_size = 2
  c.encoders.text_max_length = 32
  c.features.chunk_size = 3
  return root, c


def _extract(c, work):
  p = plan.build(c)
  return features.extract_all(p.feature_requests(), work, chunk_size=3, batch_size=2,
                              data_dir=c.data.data_dir)


def test_extract_all_real_encoders_matches_direct_encode_and_resumes(flickr_setup, tmp_path,
                                                                      monkeypatch):
  from platonic_jax import encoders
  from platonic_jax.data import loader, open_source
  root, c = flickr_setup
  out = _extract(c, str(tmp_path / "a"))
  data = features.TfdsSource.from_config(c.data)
  src = {s: open_source(data, s, c.data.data_dir) for s in ("train", "test")}
  recs = {s: [src[s][i] for i in range(len(src[s]))] for s in src}
  assert out["train"].views["image"].shape[0] == len(recs["train"]) == 8
  resnet = encoders.load(c.modalities.image.encoder)
  gpt2 = encoders.load(c.modalities.text.encoder, max_length=32)
  dino = encoders.load(c.reference.encoder)
  for s in ("train", "test"):
    images = [np.asarray(loader.decode_image(r["image"])) for r in recs[s]]
    caps = [r["caption"].decode() for r in recs[s]]
    np.testing.assert_allclose(out[s].views["image"], resnet.encode(images), atol=1e-5)
    np.testing.assert_allclose(out[s].views["ref"], dino.encode(images), atol=1e-5)
    np.testing.assert_allclose(out[s].views["text"], gpt2.encode(caps), atol=1e-5)
  # Test split: every caption, and whose image it is.
  allcaps = [(i, cap.decode()) for i, r in enumerate(recs["test"]) for cap in r["captions"]]
  np.testing.assert_array_equal(out["test"].caption_image, [i for i, _ in allcaps])
  np.testing.assert_allclose(out["test"].captions["text"],
                             gpt2.encode([t for _, t in allcaps]), atol=1e-5)
  assert not out["train"].captions

  # A run interrupted after the first train chunk, then the same call again: same arrays.
  work = str(tmp_path / "b")
  save = features.Entry.save_chunk

  def interrupted(self, chunk_size, i, arrays):
    if i == 1:
      raise KeyboardInterrupt
    save(self, chunk_size, i, arrays)

  monkeypatch.setattr(features.Entry, "save_chunk", interrupted)
  with pytest.raises(KeyboardInterrupt):
    _extract(c, work)
  monkeypatch.setattr(features.Entry, "save_chunk", save)
  again = _extract(c, work)
  for s in out:
    for k in out[s].views:
      np.testing.assert_array_equal(again[s].views[k], out[s].views[k])

  # A changed text layer re-extracts the text entries alone: no image encoder is loaded.
  loaded = []
  real_load = encoders.load
  monkeypatch.setattr(encoders, "load", lambda name, **kw: loaded.append(name) or
                      real_load(name, **kw))
  c2 = c.copy_and_resolve_references()
  c2.modalities.text.layer = 1
  changed = _extract(c2, work)
  assert loaded == [c.modalities.text.encoder]
  np.testing.assert_array_equal(changed["test"].views["image"], out["test"].views["image"])
  assert not np.array_equal(changed["test"].views["text"], out["test"].views["text"])


def test_unloadable_encoders_are_all_named_with_their_fields(flickr_setup, tmp_path):
  _, c = flickr_setup
  c2 = c.copy_and_resolve_references()
  c2.modalities.image.encoder = "microsoft/resnet-18"   # not in the (offline) cache
  c2.reference.encoder = "facebook/dinov2-base"
  with pytest.raises(errors.InputError) as e:
    _extract(c2, str(tmp_path))
  msg = str(e.value)
  assert "2 encoder(s) could not be loaded" in msg
  assert "--config.modalities.image.encoder='microsoft/resnet-18'" in msg
  assert "--config.reference.encoder='facebook/dinov2-base'" in msg
