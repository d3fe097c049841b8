"""Parameter sharding over the ``model`` mesh axis (encoders/partition.py) and the lazy
checkpoint views it reads through (encoders/lazy.py), on the 8 fake CPU devices.

References: numpy slicing of the same arrays, and the unsharded encoder's features.
"""

from __future__ import annotations

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from safetensors.numpy import save_file

import hf_fixtures as fx
from platonic_jax import encoders
from platonic_jax.encoders import lazy, partition

TEXTS = ["a dog runs across the grass", "two children are playing with a red ball", "a man",
         "the pigeons sit on the roof of the market near the lake"]


class CountingArray(lazy.LazyArray):
  """A numpy array that records every slice read from it."""

  def __init__(self, x):
    self.x, self.shape, self.dtype, self.reads = x, x.shape, x.dtype, []

  def read(self, index):
    self.reads.append(index)
    return self.x[index]


def test_model_mesh_shapes_and_bad_sizes(num_devices):
  mesh = partition.model_mesh(jax.devices(), 4)
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  assert partition.model_parallel_size(mesh) == 4
  assert partition.model_parallel_size(partition.model_mesh(jax.devices())) == 1
  for bad in (3, 0, 16, 2.0, True):
    with pytest.raises(ValueError, match=r"model_parallel=.* must be a divisor of the 8 devices"
                                         r" \(1, 2, 4, 8\)"):
      partition.model_mesh(jax.devices(), bad)


def test_spec_for_first_full_match_and_indivisible_dims(num_devices):
  mesh = partition.model_mesh(jax.devices(), 4)
  rules = ((r"layers_\d+/attn/q_proj/kernel", (None, "model")),
           (r"layers_\d+/attn/.*/kernel", ("model", None)),
           (r"embed", ("model", None)))
  assert partition.spec_for("layers_3/attn/q_proj/kernel", (8, 16), rules, mesh) == P(None, "model")
  assert partition.spec_for("layers_3/attn/o_proj/kernel", (16, 8), rules, mesh) == P("model", None)
  # fullmatch: a longer path is not matched by a prefix rule
  assert partition.spec_for("embed/embedding", (8, 16), rules, mesh) == P()
  assert partition.spec_for("layers_0/mlp/up/kernel", (8, 16), rules, mesh) == P()
  # 6 rows over a 4-way axis: replicated rather than failing
  assert partition.spec_for("layers_0/attn/o_proj/kernel", (6, 8), rules, mesh) == P(None, None)
  with pytest.raises(ValueError, match="has 2 dims but .* has shape"):
    partition.spec_for("layers_0/attn/o_proj/kernel", (8,), rules, mesh)
  with pytest.raises(ValueError, match="names mesh axis 'tensor'"):
    partition.spec_for("x", (8,), ((r"x", ("tensor",)),), mesh)
  with pytest.raises(TypeError, match=r"PARTITION_RULES\[0\]"):
    partition.spec_for("x", (8,), (("x", "model"),), mesh)


@pytest.mark.parametrize("spec", [P(None, "model"), P("model", None), P("data", "model"), P()])
def test_place_gives_each_device_its_slice_reading_each_slice_once(spec, num_devices):
  mesh = partition.model_mesh(jax.devices(), 4)
  x = np.random.default_rng(0).normal(size=(8, 12)).astype(np.float32)
  src = CountingArray(x)
  out = partition.place_array(src, NamedSharding(mesh, spec), np.float32)
  np.testing.assert_array_equal(np.asarray(out), x)
  for shard in out.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
  distinct = {tuple((s.start, s.stop) for s in r) for r in src.reads}
  assert len(distinct) == len(src.reads), "a slice shared by devices was read twice"
  assert sum(x[r].size for r in src.reads) == x.size   # nothing read beyond the array
  n_slices = {P(None, "model"): 4, P("model", None): 4, P("data", "model"): 8, P(): 1}[spec]
  assert len(src.reads) == n_slices


def test_place_tree_by_rules_with_dtypes(num_devices):
  mesh = partition.model_mesh(jax.devices(), 8)
  params = {"layers_0": {"q": {"kernel": np.ones((4, 16), np.float32),
                               "bias": np.arange(16, dtype=np.float32)}}}
  rules = ((r".*/q/kernel", (None, "model")),)
  out = partition.place(params, mesh, rules,
                        dtype_of=lambda p, x: ml_dtypes.bfloat16 if p.endswith("kernel")
                        else np.float32)
  assert out["layers_0"]["q"]["kernel"].dtype == jax.numpy.bfloat16
  assert out["layers_0"]["q"]["kernel"].sharding.spec == P(None, "model")
  assert out["layers_0"]["q"]["bias"].sharding.spec == P()
  assert out["layers_0"]["q"]["kernel"].addressable_shards[0].data.shape == (4, 2)


def test_lazy_views_equal_numpy(tmp_path):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(6, 5)).astype(np.float32)
  b = rng.normal(size=(6, 5)).astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "x.safetensors")
  save_file({"a": a, "b": b}, path)
  views = lazy.open_safetensors([path])
  assert views["a"].shape == (6, 5) and views["b"].dtype == np.dtype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(views["a"][1:4, 2:5], a[1:4, 2:5])
  np.testing.assert_array_equal(np.asarray(views["b"]).astype(np.float32), b.astype(np.float32))
  t = lazy.Permuted(views["a"])
  np.testing.assert_array_equal(t[1:3, 0:6], a.T[1:3, 0:6])
  s = lazy.Stacked([views["a"], lazy.Permuted(lazy.Permuted(views["a"]))])
  np.testing.assert_array_equal(s[1:2, :, 3:5], np.stack([a, a])[1:2, :, 3:5])
  rows = [4, 5, 0, 2, 3]
  g = lazy.Gathered(views["a"], rows)
  np.testing.assert_array_equal(g[1:5, 1:3], a[rows][1:5, 1:3])
  g1 = lazy.Gathered(CountingArray(a), [1, 0], axis=1)
  np.testing.assert_array_equal(np.asarray(g1), a[:, [1, 0]])
  with pytest.raises(TypeError, match="step 1"):
    g[::2]


def test_gathered_reads_runs_of_consecutive_rows_as_one_slice():
  src = CountingArray(np.arange(40, dtype=np.float32).reshape(10, 4))
  g = lazy.Gathered(src, [0, 1, 2, 6, 7, 3])
  np.testing.assert_array_equal(np.asarray(g), src.x[[0, 1, 2, 6, 7, 3]])
  assert [(r[0].start, r[0].stop) for r in src.reads] == [(0, 3), (6, 8), (3, 4)]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  return fx.tiny_gpt2(str(tmp_path_factory.mktemp("gpt2_tp")))[0]


def test_sharded_features_equal_unsharded(gpt2_dir, num_devices):
  base = encoders.load(gpt2_dir, devices=jax.devices()[:1]).encode(TEXTS, layers="all")
  for mp in (2, 4, 8):
    enc = encoders.load(gpt2_dir, model_parallel=mp)
    kernel = enc.params["h_0"]["mlp"]["c_fc"]["kernel"]
    assert kernel.sharding.spec == P(None, "model")
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // mp
    got = enc.encode(TEXTS, batch_size=4, layers="all")
    np.testing.assert_allclose(got, base, rtol=1e-5, atol=2e-6, err_msg=f"model_parallel={mp}")


def test_load_reads_sharded_safetensors_index(gpt2_dir, tmp_path):
  """model.safetensors.index.json + shards load lazily and give the same features."""
  views = lazy.open_safetensors([os.path.join(gpt2_dir, "model.safetensors")])
  names = sorted(views)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for fname, keys in shards.items():
    save_file({k: np.asarray(views[k]) for k in keys}, str(tmp_path / fname))
    weight_map.update({k: fname for k in keys})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  for f in os.listdir(gpt2_dir):
    if not f.endswith(".safetensors"):
      (tmp_path / f).write_bytes(open(os.path.join(gpt2_dir, f), "rb").read())
  want = encoders.load(gpt2_dir).encode(TEXTS)
  np.testing.assert_allclose(encoders.load(str(tmp_path), model_parallel=2).encode(TEXTS),
                             want, rtol=1e-5, atol=2e-6)
  os.remove(tmp_path / "model-00002-of-00002.safetensors")
  with pytest.raises(ValueError, match="names shards that are not in"):
    encoders.load(str(tmp_path))


def test_load_rejects_bad_model_parallel(gpt2_dir):
  with pytest.raises(ValueError, match=r"model_parallel=3 must be a divisor"):
    encoders.load(gpt2_dir, model_parallel=3)
