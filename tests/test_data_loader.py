"""The grain loader: per-host sharding, determinism, padding mask, resumable state.

A small in-memory source (a list of records with encoded PNG bytes whose pixels encode
the record index) stands in for the TFDS data source, so the checks are on indices and
pixels without building a dataset; test_data_tfds.py runs the loader on a real one.
"""

import collections
import io

import numpy as np
import pytest
from PIL import Image

from platonic_jax.data.loader import decode_image, make_loader

N = 23


def _record(i):
  buf = io.BytesIO()
  # A 3 x 4 image whose every pixel is (i, 2i, 3i) mod 256: decoding gives back i.
  Image.fromarray(np.full((3, 4, 3), [i, 2 * i % 256, 3 * i % 256], np.uint8)).save(buf, "PNG")
  return {"image": buf.getvalue(), "caption": f"caption {i} ✓".encode(),
          "captions": [f"caption {i} ✓".encode(), b"other"]}


SOURCE = [_record(i) for i in range(N)]


def _pixel_index(batch_images):
  """[B, 3, 4, 3] float (preprocess = /255) -> [B] the index each image encodes."""
  return np.rint(batch_images[:, 0, 0, 0] * 255).astype(int)


def _prep(image):
  return np.asarray(image, np.float32) / 255


def _run(**kw):
  args = dict(batch_size=4, preprocess=_prep, seed=0, shuffle=True, num_epochs=1,
              worker_count=0, shard_index=0, shard_count=1) | kw
  return list(make_loader(SOURCE, **args))


def _indices(batches):
  return [int(i) for b in batches for i, m in zip(b["index"], b["mask"]) if m]


def test_batches_fixed_size_with_tail_mask_and_content():
  batches = _run(shuffle=False, batch_size=5)
  assert len(batches) == 5
  for b in batches:
    assert b["image"].shape == (5, 3, 4, 3) and b["image"].dtype == np.float32
    assert b["index"].shape == (5,) and b["mask"].dtype == bool and len(b["caption"]) == 5
    valid = b["mask"]
    # Each valid image, caption and caption list belongs to its index.
    np.testing.assert_array_equal(_pixel_index(b["image"])[valid], b["index"][valid])
    assert list(b["caption"][valid]) == [f"caption {i} ✓" for i in b["index"][valid]]
    assert all(c == [f"caption {i} ✓", "other"] for c, i in zip(b["captions"][valid],
                                                                  b["index"][valid]))
    assert (b["index"][~valid] == -1).all() and all(c == "" for c in b["caption"][~valid])
  assert batches[-1]["mask"].tolist() == [True, True, True, False, False]
  assert _indices(batches) == list(range(N))  # shuffle=False keeps the source order


@pytest.mark.parametrize("num_epochs", [1, 2])
def test_two_hosts_see_every_example_exactly_once(num_epochs):
  hosts = [_run(shard_index=h, shard_count=2, num_epochs=num_epochs, seed=5) for h in (0, 1)]
  assert len(hosts[0]) == len(hosts[1])  # equal batch counts: a multi-host step won't hang
  seen = collections.Counter(_indices(hosts[0]) + _indices(hosts[1]))
  assert seen == {i: num_epochs for i in range(N)}
  # Host h takes every other element of the global (single-host) stream.
  stream = _indices(_run(num_epochs=num_epochs, seed=5))
  assert _indices(hosts[0]) == stream[0::2] and _indices(hosts[1]) == stream[1::2]
  if num_epochs == 2:  # each epoch is a full pass, in a different order
    assert sorted(stream[:N]) == list(range(N)) and stream[:N] != stream[N:]


def test_more_hosts_than_examples():
  """30 hosts, 23 examples: every host still yields one (possibly all-padding) batch."""
  hosts = [_run(shard_index=h, shard_count=30, batch_size=2) for h in range(30)]
  assert all(len(b) == 1 for b in hosts)
  seen = [i for b in hosts for i in _indices(b)]
  assert sorted(seen) == list(range(N))
  assert hosts[29][0]["mask"].tolist() == [False, False]


def test_same_seed_same_order_other_seed_other_order():
  a, b, c = _indices(_run(seed=3)), _indices(_run(seed=3)), _indices(_run(seed=4))
  assert a == b and a != c and sorted(a) == sorted(c) == list(range(N))
  assert a != list(range(N))


def test_restored_iterator_continues_exactly_and_workers_keep_the_order():
  loader = make_loader(SOURCE, batch_size=3, preprocess=_prep, seed=1, shuffle=True,
                       num_epochs=2, worker_count=0, shard_index=0, shard_count=1)
  full = list(loader)
  it = iter(loader)
  for _ in range(5):
    next(it)
  state = it.get_state()
  fresh = iter(loader)
  fresh.set_state(state)
  rest = list(fresh)
  assert len(rest) == len(full) - 5
  for got, want in zip(rest, full[5:]):
    np.testing.assert_array_equal(got["index"], want["index"])
    np.testing.assert_array_equal(got["image"], want["image"])

  # Two worker processes: the same batches in the same order, and their state resumes.
  mp = make_loader(SOURCE, batch_size=3, preprocess=_prep, seed=1, shuffle=True,
                   num_epochs=2, worker_count=2, shard_index=0, shard_count=1)
  it = iter(mp)
  head = [next(it) for _ in range(5)]
  state = it.get_state()
  it.close()
  it = iter(mp)
  it.set_state(state)
  tail = list(it)
  it.close()
  got = head + tail
  assert len(got) == len(full)
  for g, w in zip(got, full):
    np.testing.assert_array_equal(g["index"], w["index"])
    np.testing.assert_array_equal(g["mask"], w["mask"])
    np.testing.assert_array_equal(g["image"], w["image"])


def test_no_preprocess_yields_decoded_uint8_and_forever_has_no_length():
  loader = make_loader(SOURCE, batch_size=4, preprocess=None, seed=0, shuffle=False,
                       num_epochs=None, worker_count=0, shard_index=1, shard_count=2)
  with pytest.raises(TypeError):
    len(loader)
  it = iter(loader)
  batches = [next(it) for _ in range(4)]  # 16 examples > 12 per epoch on this host
  idx = _indices(batches)
  assert idx == [i % N for i in range(1, 2 * 16, 2)]
  img = batches[0]["image"][0]
  assert img.dtype == np.uint8 and img.shape == (3, 4, 3)
  np.testing.assert_array_equal(img, np.asarray(decode_image(SOURCE[1]["image"])))


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size"), (dict(shard_index=2, shard_count=2), "shard_index"),
    (dict(num_epochs=0), "num_epochs"), (dict(seed=-1), "seed"),
    (dict(worker_count=-1), "worker_count")])
def test_bad_arguments(kw, match):
  with pytest.raises(ValueError, match=match):
    _run(**kw)


def test_empty_source_and_undecodable_record():
  with pytest.raises(ValueError, match="empty"):
    make_loader([], batch_size=2, shard_index=0, shard_count=1)
  bad = SOURCE[:3] + [{"image": b"garbage", "caption": b"x"}]
  with pytest.raises(ValueError, match="record 3"):
    list(make_loader(bad, batch_size=2, shard_index=0, shard_count=1, shuffle=False))


def test_iterator_state_saved_with_orbax_beside_the_train_state(tmp_path):
  """The documented way to checkpoint the loader with the train state."""
  import grain
  import orbax.checkpoint as ocp

  loader = make_loader(SOURCE, batch_size=3, preprocess=_prep, seed=2, shuffle=True,
                       num_epochs=2, worker_count=0, shard_index=0, shard_count=1)
  full = list(loader)
  it = iter(loader)
  for _ in range(4):
    next(it)
  state = {"w": np.arange(3.0)}
  with ocp.CheckpointManager(str(tmp_path), item_names=("state", "data")) as mngr:
    mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    fresh = iter(loader)
    mngr.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore(state),
                                            data=grain.checkpoint.CheckpointRestore(fresh)))
  rest = list(fresh)
  assert len(rest) == len(full) - 4
  for got, want in zip(rest, full[4:]):
    np.testing.assert_array_equal(got["index"], want["index"])
