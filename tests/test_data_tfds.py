"""TFDS builders flickr30k / image_text_folder on fake folders, without TensorFlow.

The fake Flickr30k has 12 images — RGB JPEGs of different sizes, a grayscale JPEG, a
CMYK JPEG and a PNG with alpha — five captions each (one unicode, one empty), written
in all three annotation formats. Expected values are computed here from the files.
"""

import csv
import hashlib
import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from transformers.image_transforms import convert_to_rgb

import platonic_jax.data as pdata
from platonic_jax.data import _paired
from platonic_jax.data.loader import decode_image, make_loader

UNICODE = "Ein Mädchen füttert 🦆 Enten am Teich — «très» joli"
NAMES = [f"{1000 + i}.jpg" for i in range(9)] + ["2000.jpg", "2001.jpg", "2002.png"]
SPECIAL = {"2000.jpg": "L", "2001.jpg": "CMYK", "2002.png": "RGBA"}
KARPATHY_SPLIT = {n: "train" for n in NAMES[:8]} | {NAMES[8]: "val", "2000.jpg": "val",
                                                    "2001.jpg": "test", "2002.png": "test"}
SKIP = {"image": tfds.decode.SkipDecoding()}


def _captions(i, name):
  caps = [f"photo {i}, caption {j} " + "with more words " * ((i + j) % 4) for j in range(5)]
  if name == "1003.jpg":
    caps[2] = UNICODE + " and a long tail to be the longest caption of all"
  if name == "1005.jpg":
    caps[1] = "   "  # an empty caption: dropped and counted
  return caps


def _write_image(path, mode, rng, size):
  rgb = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
  image = Image.fromarray(rgb)
  if mode == "L":
    image = image.convert("L")
  elif mode == "CMYK":
    image = image.convert("CMYK")
  elif mode == "RGBA":
    alpha = rng.integers(0, 256, size=size, dtype=np.uint8)
    image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
  image.save(path, "PNG" if path.endswith(".png") else "JPEG", quality=90)


def make_flickr(root, fmt, names=NAMES):
  """A fake Flickr30k manual dir in format `json` / `token` / `csv`; returns captions."""
  os.makedirs(os.path.join(root, "flickr30k-images"), exist_ok=True)
  rng = np.random.default_rng(0)
  captions = {}
  for i, name in enumerate(names):
    _write_image(os.path.join(root, "flickr30k-images", name), SPECIAL.get(name, "RGB"), rng,
                 (24 + 3 * i, 40 - i))
    captions[name] = _captions(i, name)
  if fmt == "json":
    data = {"dataset": "flickr30k", "images": [
        {"filename": n, "imgid": i, "split": KARPATHY_SPLIT.get(n, "train"),
         "sentences": [{"raw": c, "tokens": c.split()} for c in captions[n]]}
        for i, n in enumerate(names)]}
    with open(os.path.join(root, "dataset_flickr30k.json"), "w", encoding="utf-8") as f:
      json.dump(data, f, ensure_ascii=False)
  elif fmt == "token":
    with open(os.path.join(root, "results_20130124.token"), "w", encoding="utf-8") as f:
      for n in reversed(names):  # row order must not matter
        for j, c in enumerate(captions[n]):
          f.write(f"{n}#{j}\t{c}\n")
  else:
    rows = ["image_name| comment_number| comment"]
    for n in names:
      for j, c in enumerate(captions[n]):
        rows.append(f"{n}| {j}| {c}")
    rows[3] = rows[3].replace("| 2|", "| 2", 1)  # the Kaggle file's row with a lost pipe
    with open(os.path.join(root, "results.csv"), "w", encoding="utf-8") as f:
      f.write("\n".join(rows) + "\n")
  return captions


def _expected_split(names):
  """The documented rule, re-implemented: SHA-256 order, then test / validation / train."""
  order = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
  n_test = max(1, min(1000, round(len(order) * 1000 / 31014)))
  n_val = max(1, min(1014, round(len(order) * 1014 / 31014)))
  return ({n: "test" for n in order[:n_test]} |
          {n: "validation" for n in order[n_test:n_test + n_val]} |
          {n: "train" for n in order[n_test + n_val:]})


def _build(name, manual_dir, data_dir, config="longest", **kw):
  b = tfds.builder(f"{name}/{config}", data_dir=str(data_dir), file_format="array_record", **kw)
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return b


def _read(name, data_dir, split, config="longest"):
  src = tfds.data_source(f"{name}/{config}", split=split, data_dir=str(data_dir), decoders=SKIP)
  return [src[i] for i in range(len(src))]


def _t(b):
  return b.decode("utf-8")


@pytest.fixture(scope="module", params=["json", "token", "csv"])
def built(request, tmp_path_factory):
  root = tmp_path_factory.mktemp(f"flickr_{request.param}")
  captions = make_flickr(str(root / "manual"), request.param)
  b = _build("flickr30k", root / "manual", root / "tfds")
  return request.param, root, captions, b


def test_flickr30k_build_and_read_back(built):
  fmt, root, captions, b = built
  want_split = ({n: {"val": "validation"}.get(s, s) for n, s in KARPATHY_SPLIT.items()}
                if fmt == "json" else _expected_split(NAMES))
  seen = {}
  for split in ("train", "validation", "test"):
    records = _read("flickr30k", root / "tfds", split)
    names = [_t(r["image/filename"]) for r in records]
    assert names == sorted(n for n, s in want_split.items() if s == split)
    assert b.info.splits[split].num_examples == len(names)
    for r in records:
      name = _t(r["image/filename"])
      seen[name] = split
      with open(root / "manual" / "flickr30k-images" / name, "rb") as f:
        assert r["image"] == f.read(), f"{name}: bytes differ from the source file"
      want = [c.strip() for c in captions[name] if c.strip()]
      assert [_t(c) for c in r["captions"]] == want
      longest = max(range(len(want)), key=lambda j: (len(want[j]), -j))
      assert _t(r["caption"]) == want[longest] and r["caption_index"] == longest
  assert seen == want_split
  assert b.info.metadata["dropped_empty_captions"] == 1
  assert b.info.metadata["skipped_bad_images"] == 0
  assert any(UNICODE in _t(r["caption"]) for r in _read("flickr30k", root / "tfds",
                                                         want_split["1003.jpg"]))


@pytest.mark.parametrize("n,train", [(31783, 29769), (31014, 29000)])
def test_hash_split_gives_karpathy_sizes_on_the_full_dataset(n, train):
  names = [f"{1000000 + 7919 * i}.jpg" for i in range(n)]
  split = _paired.hash_split(names)
  sizes = {s: sum(v == s for v in split.values()) for s in ("train", "validation", "test")}
  assert sizes == {"train": train, "validation": 1014, "test": 1000}
  assert split == _expected_split(names)
  # Independent of the annotation's order and of the other names' presence in a split.
  assert _paired.hash_split(reversed(names)) == split


def test_caption_policies(tmp_path):
  captions = make_flickr(str(tmp_path / "manual"), "json")
  clean = {n: [c.strip() for c in caps if c.strip()] for n, caps in captions.items()}
  for policy in ("first", "random", "all"):
    _build("flickr30k", tmp_path / "manual", tmp_path / "tfds", config=policy)
  first = _read("flickr30k", tmp_path / "tfds", "train", "first")
  assert [_t(r["caption"]) for r in first] == [clean[_t(r["image/filename"])][0] for r in first]

  rand = _read("flickr30k", tmp_path / "tfds", "train", "random")
  picks = [clean[_t(r["image/filename"])].index(_t(r["caption"])) for r in rand]
  assert picks == [int(r["caption_index"]) for r in rand]
  assert len(set(picks)) > 1  # not always the same position (8 images, 5 captions)
  # Seeded: a rebuild in a fresh data_dir makes the same choices; another seed differs.
  _build("flickr30k", tmp_path / "manual", tmp_path / "tfds2", config="random")
  assert [r["caption"] for r in _read("flickr30k", tmp_path / "tfds2", "train", "random")] == [
      r["caption"] for r in rand]
  other = pdata.flickr30k.Flickr30k(
      data_dir=str(tmp_path / "tfds3"), file_format="array_record",
      config=_paired.PairedConfig(name="random_seed1", caption_policy="random",
                                  caption_seed=1))
  other.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  src = other.as_data_source(split="train", decoders=SKIP)
  assert [src[i]["caption"] for i in range(len(src))] != [r["caption"] for r in rand]

  # all: one training example per caption; evaluation splits keep one row per image.
  train_all = _read("flickr30k", tmp_path / "tfds", "train", "all")
  train_names = sorted(n for n, s in KARPATHY_SPLIT.items() if s == "train")
  assert [(_t(r["image/filename"]), _t(r["caption"])) for r in train_all] == [
      (n, c) for n in train_names for c in clean[n]]
  test_all = _read("flickr30k", tmp_path / "tfds", "test", "all")
  assert len(test_all) == 2 and all(len(r["captions"]) == 5 for r in test_all)


@pytest.mark.parametrize("name", ["2000.jpg", "2001.jpg", "2002.png", "1000.jpg"])
def test_decode_matches_transformers_convert_to_rgb(built, name):
  _, root, _, _ = built
  path = root / "manual" / "flickr30k-images" / name
  with Image.open(path) as im:
    assert im.mode == SPECIAL.get(name, "RGB")
    want = convert_to_rgb(im, return_numpy=True)
  got = np.asarray(decode_image(path.read_bytes()))
  assert got.dtype == np.uint8 and got.shape == want.shape and got.shape[-1] == 3
  np.testing.assert_array_equal(got, want)


def _data_config(**kw):
  """What the experiment hands open_source: config.data's fields as a TfdsSource."""
  from platonic_jax.features import TfdsSource
  cfg = ml_collections.ConfigDict(dict(name="flickr30k", manual_dir="", data_dir="",
                                       caption_policy="longest", skip_bad=False,
                                       num_workers=0) | kw)
  return TfdsSource.from_config(cfg)


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_missing_or_empty_manual_dir_says_how_to_get_flickr(tmp_path, state):
  manual = tmp_path / "manual"
  if state == "empty":
    manual.mkdir()
  with pytest.raises(ValueError) as e:
    _build("flickr30k", manual, tmp_path / "tfds")
  msg = str(e.value)
  for needle in (str(manual), "flickr30k-images/", "dataset_flickr30k.json",
                 "results_20130124.token", "results.csv", "request",
                 "shannon.cs.illinois.edu"):
    assert needle in msg, needle
  # open_source without a manual dir says to set it.
  with pytest.raises(ValueError, match="data.manual_dir"):
    pdata.open_source(_data_config(), "train", str(tmp_path / "tfds"))


def test_an_empty_image_folder_says_so(tmp_path):
  make_flickr(str(tmp_path / "manual"), "json")
  images = tmp_path / "manual" / "flickr30k-images"
  for f in os.listdir(images):
    os.remove(images / f)
  with pytest.raises(ValueError, match="flickr30k-images exists but holds no .jpg file"):
    _build("flickr30k", tmp_path / "manual", tmp_path / "tfds")


def test_preparing_prints_no_misleading_download_line(tmp_path, capfd):
  make_flickr(str(tmp_path / "manual"), "json")
  pdata.open_source(_data_config(manual_dir=str(tmp_path / "manual")), "train",
                    str(tmp_path / "tfds"))
  out, _ = capfd.readouterr()
  assert "Downloading and preparing" not in out and "Unknown size" not in out


def test_manual_dir_without_annotation(tmp_path):
  make_flickr(str(tmp_path / "manual"), "json")
  os.remove(tmp_path / "manual" / "dataset_flickr30k.json")
  with pytest.raises(ValueError, match="annotation file") as e:
    _build("flickr30k", tmp_path / "manual", tmp_path / "tfds")
  assert "flickr30k-images" not in str(e.value).split("lacks")[1].split("(")[0]


def test_bad_images_all_listed_then_skipped(tmp_path):
  captions = make_flickr(str(tmp_path / "manual"), "token")
  images = tmp_path / "manual" / "flickr30k-images"
  os.remove(images / "1001.jpg")
  os.remove(images / "2002.png")
  data = (images / "1004.jpg").read_bytes()
  (images / "1004.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
  (images / "1006.jpg").write_bytes(b"not an image at all")
  bad = {"1001.jpg", "2002.png", "1004.jpg", "1006.jpg"}
  with pytest.raises(ValueError, match="4 image") as e:
    _build("flickr30k", tmp_path / "manual", tmp_path / "tfds")
  for name in bad:
    assert name in str(e.value)
  assert "skip_bad" in str(e.value)

  b = _build("flickr30k", tmp_path / "manual", tmp_path / "tfds", skip_bad=True)
  assert b.info.metadata["skipped_bad_images"] == 4
  assert sorted(b.info.metadata["skipped_bad_files"]) == sorted(bad)
  kept = {_t(r["image/filename"]) for s in b.info.splits
          for r in _read("flickr30k", tmp_path / "tfds", s)}
  assert kept == set(captions) - bad
  # The same through the config / open_source path, re-reading the prepared data.
  src = pdata.open_source(_data_config(skip_bad=True), "train", str(tmp_path / "tfds"))
  assert len(src) == b.info.splits["train"].num_examples


def test_bad_annotation_rows_listed(tmp_path):
  make_flickr(str(tmp_path / "manual"), "token")
  path = tmp_path / "manual" / "results_20130124.token"
  path.write_text(path.read_text(encoding="utf-8") + "no tab here\nnohash.jpg\tcap\n",
                  encoding="utf-8")
  with pytest.raises(ValueError, match="2 row") as e:
    _build("flickr30k", tmp_path / "manual", tmp_path / "tfds")
  assert "no tab here" in str(e.value) and "nohash.jpg" in str(e.value)


def _make_folder(root, fmt, with_split):
  rng = np.random.default_rng(1)
  os.makedirs(os.path.join(root, "sub"), exist_ok=True)
  rows = []
  for i in range(6):
    rel = f"sub/img{i}.png" if i % 2 else f"img{i}.jpg"
    _write_image(os.path.join(root, rel), "RGBA" if i % 2 else "RGB", rng, (16 + i, 20))
    for j in range(1 + i % 3):  # 1 to 3 captions per image, on separate rows
      row = {"image": rel, "caption": f"{UNICODE if i == 0 else 'pair'} {i}, caption {j}"}
      if with_split:
        row["split"] = ["train", "val", "test"][i % 3]
      rows.append(row)
  rows.append({"image": "img0.jpg", "caption": ""} | ({"split": "train"} if with_split else {}))
  if fmt == "jsonl":
    with open(os.path.join(root, "captions.jsonl"), "w", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
  else:
    with open(os.path.join(root, "captions.csv"), "w", encoding="utf-8", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0]))
      w.writeheader()
      w.writerows(rows)
  return rows


@pytest.mark.parametrize("fmt,with_split", [("jsonl", True), ("csv", False)])
def test_image_text_folder(tmp_path, fmt, with_split):
  rows = _make_folder(str(tmp_path / "folder"), fmt, with_split)
  b = _build("image_text_folder", tmp_path / "folder", tmp_path / "tfds")
  assert b.info.metadata["dropped_empty_captions"] == 1
  want = {}
  for r in rows:
    if r["caption"]:
      want.setdefault(r["image"], []).append(r["caption"])
  if with_split:
    want_split = {r["image"]: {"val": "validation"}.get(r["split"], r["split"]) for r in rows}
  else:
    want_split = _expected_split(want)
  got = {}
  for split in b.info.splits:
    for r in _read("image_text_folder", tmp_path / "tfds", split):
      name = _t(r["image/filename"])
      got[name] = [_t(c) for c in r["captions"]]
      assert want_split[name] == split
      assert r["image"] == (tmp_path / "folder" / name).read_bytes()
  assert got == want


def test_open_source_and_loader_end_to_end(tmp_path):
  """config.data -> open_source -> make_loader: captions and images of every record."""
  root = tmp_path
  captions = make_flickr(str(root / "manual"), "csv")
  cfg = _data_config(manual_dir=str(root / "manual"))
  src = pdata.open_source(cfg, "train", str(root / "tfds_e2e"))
  loader = make_loader(src, batch_size=4, preprocess=lambda im: np.asarray(im.resize((8, 8))),
                       seed=0, shuffle=False, num_epochs=1, worker_count=0,
                       shard_index=0, shard_count=1)
  batches = list(loader)
  assert len(batches) == len(loader) == -(-len(src) // 4)
  valid = [(i, c, f, im) for b in batches for i, c, f, im, m in
           zip(b["index"], b["caption"], b["filename"], b["image"], b["mask"]) if m]
  assert [v[0] for v in valid] == list(range(len(src)))
  for i, caption, filename, image in valid:
    path = root / "manual" / "flickr30k-images" / filename
    assert caption in [c.strip() for c in captions[filename]]
    with Image.open(path) as im:
      want = convert_to_rgb(im, return_numpy=False).resize((8, 8))
      np.testing.assert_array_equal(image, np.asarray(want))
  with pytest.raises(ValueError, match="split"):
    pdata.open_source(cfg, "valid", str(root / "tfds_e2e"))
  with pytest.raises(ValueError, match="caption_policy"):
    pdata.open_source(_data_config(caption_policy="shortest"), "train", str(root / "tfds_e2e"))


def test_image_text_folder_refuses_a_data_dir_built_from_another_folder(tmp_path):
  _make_folder(str(tmp_path / "a"), "jsonl", True)
  _make_folder(str(tmp_path / "b"), "csv", False)
  cfg = _data_config(name="image_text_folder", manual_dir=str(tmp_path / "a"))
  src = pdata.open_source(cfg, "train", str(tmp_path / "tfds"))
  assert len(src) == 2  # images 0 and 3 are the training split of folder a
  again = pdata.open_source(cfg, "train", str(tmp_path / "tfds"))  # re-read: fine
  assert len(again) == len(src)
  with pytest.raises(ValueError, match="separate data_dir"):
    pdata.open_source(_data_config(name="image_text_folder", manual_dir=str(tmp_path / "b")),
                      "train", str(tmp_path / "tfds"))
