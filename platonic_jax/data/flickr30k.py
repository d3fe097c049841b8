"""TFDS builder ``flickr30k`` (no TensorFlow needed): Flickr30k from a manual directory.

    builder = tfds.builder("flickr30k/longest", data_dir=..., file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/flickr30k"))
    source = tfds.data_source("flickr30k/longest", split="test", data_dir=...,
                              decoders={"image": tfds.decode.SkipDecoding()})

Configs (caption policies): ``longest`` (default), ``first``, ``random``, ``all``.
Builder kwarg ``skip_bad=False``: skip missing / corrupt images instead of failing.
Splits ``train`` / ``validation`` / ``test``. Each example: ``image`` (the original JPEG
bytes), ``image/filename``, ``caption`` (chosen by the policy), ``caption_index``,
``captions`` (all five). The manual directory and formats are described in
``MANUAL_DOWNLOAD_INSTRUCTIONS`` below and in docs/data.md.
"""

from __future__ import annotations

import collections
import json
import os
import re

import tensorflow_datasets as tfds

from platonic_jax import errors
from platonic_jax.data import _paired

IMAGE_DIRS = ("flickr30k-images", "flickr30k_images/flickr30k_images", "flickr30k_images")
ANNOTATIONS = ("dataset_flickr30k.json", "results_20130124.token", "results.csv")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Flickr30k cannot be downloaded automatically: its terms of use require a request.
Obtain it from the authors (https://shannon.cs.illinois.edu/DenotationGraph/ ; fill in the
form to get the images `flickr30k-images.tar.gz` and the captions
`flickr30k.tar.gz` with `results_20130124.token`), or from a mirror you are allowed to
use (e.g. the Kaggle copy, which ships `results.csv`). Karpathy's split file
`dataset_flickr30k.json` is in https://cs.stanford.edu/people/karpathy/deepimagesent/
(caption_datasets.zip).

Lay out the manual directory (config: --config.data.manual_dir=DIR) as:

  DIR/flickr30k-images/1000092795.jpg ...   (all 31,783 JPEGs; `flickr30k_images/` and
                                             the Kaggle `flickr30k_images/flickr30k_images/`
                                             work too)
  DIR/ and one annotation file, first found wins:
    dataset_flickr30k.json   Karpathy's split (train 29000 / val 1014 / test 1000)
    results_20130124.token   `1000092795.jpg#0<TAB>caption`, five rows per image
    results.csv              `image_name| comment_number| comment` (pipe-separated)
  (the annotation may also sit inside `flickr30k_images/`, as in the Kaggle copy).

The .token and .csv files carry no split; they get a deterministic one (docs/data.md:
images ordered by SHA-256 of the file name, then 1000 test, 1014 validation (Karpathy's
sizes; proportionally fewer for a subset) and the rest train).
"""

# `name| number| caption`; the Kaggle results.csv has one row whose second pipe is
# missing ("2199200615.jpg| 4 A dog runs ..."), which the `[|\s]` alternative accepts.
_CSV_ROW = re.compile(r"^\s*([^|]+?)\s*\|\s*(\d+)\s*(?:\||\s)(.*)$")


class Flickr30k(_paired.PairedBuilder, tfds.core.GeneratorBasedBuilder):
  """Flickr30k images with their five captions, read from a manual directory."""

  BUILDER_CONFIGS = _paired.default_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Flickr30k: 31,783 Flickr photos with five crowd-sourced captions each.",
        features=_paired.features(),
        homepage="https://shannon.cs.illinois.edu/DenotationGraph/",
        citation=("@article{young2014image, title={From image descriptions to visual "
                  "denotations}, author={Young, Peter and Lai, Alice and Hodosh, Micah and "
                  "Hockenmaier, Julia}, journal={TACL}, volume={2}, pages={67--78}, "
                  "year={2014}}"),
        metadata=tfds.core.MetadataDict(),
        # Keep the (file-name sorted) generation order, so index i is the same image on
        # every machine and matches cached features.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    image_dir, annotation = locate(self._manual_dir(dl_manager, "Flickr30k"))
    captions, splits = read_annotation(annotation)
    return self._splits(captions, splits, image_dir, annotation)


def locate(manual_dir: str) -> tuple[str, str]:
  """(image directory, annotation file) inside ``manual_dir``; InputError if absent."""
  if not os.path.isdir(manual_dir):
    raise errors.InputError(f"data.manual_dir={manual_dir!r} is not a directory. Set "
                            "--config.data.manual_dir to the Flickr30k folder.\n\n"
                            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  dirs = [os.path.join(manual_dir, d) for d in IMAGE_DIRS
          if os.path.isdir(os.path.join(manual_dir, d))]
  image_dir = next((d for d in dirs if any(f.lower().endswith(".jpg") for f in os.listdir(d))),
                   None)
  annotation = next((os.path.join(manual_dir, sub, a) for a in ANNOTATIONS
                     for sub in ("", "flickr30k_images")
                     if os.path.isfile(os.path.join(manual_dir, sub, a))), None)
  missing = []
  if image_dir is None and dirs:
    missing.append(f"images: {dirs[0]} exists but holds no .jpg file (is the extraction "
                   "of flickr30k-images.tar.gz complete?)")
  elif image_dir is None:
    missing.append("an image folder `flickr30k-images/` with the .jpg files")
  if annotation is None:
    missing.append("an annotation file (" + ", ".join(ANNOTATIONS) + ")")
  if missing:
    raise errors.InputError(
        f"Flickr30k manual directory {manual_dir} lacks " + " and ".join(missing) +
        f" (it holds: {sorted(os.listdir(manual_dir))[:10]}).\n\n"
        f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return image_dir, annotation


def read_annotation(path: str) -> tuple[dict[str, list[str]], dict[str, str] | None]:
  """``({file name: captions in order}, {file name: split} or None)`` from any format."""
  name = os.path.basename(path)
  if name.endswith(".json"):
    return _read_karpathy(path)
  captions = collections.defaultdict(list)
  bad_rows = []
  with open(path, encoding="utf-8") as f:
    rows = f.read().splitlines()
  if name.endswith(".csv"):
    rows = rows[1:]  # header: image_name| comment_number| comment
  for lineno, row in enumerate(rows, start=2 if name.endswith(".csv") else 1):
    if not row.strip():
      continue
    if name.endswith(".csv"):
      m = _CSV_ROW.match(row)
      if m is None:
        bad_rows.append((lineno, row))
        continue
      image, caption = m.group(1), m.group(3)
    else:
      key, sep, caption = row.partition("\t")
      image, hash_, _ = key.partition("#")
      if not sep or not hash_:
        bad_rows.append((lineno, row))
        continue
    captions[image.strip()].append(caption)
  if bad_rows:
    shown = "\n".join(f"  line {n}: {r[:100]!r}" for n, r in bad_rows[:20])
    expected = "`name| number| caption`" if name.endswith(".csv") else "`name.jpg#i<TAB>caption`"
    raise errors.InputError(f"{path}: {len(bad_rows)} row(s) do not parse ({expected}):\n{shown}")
  return dict(captions), None


def _read_karpathy(path: str) -> tuple[dict[str, list[str]], dict[str, str]]:
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  try:
    images = data["images"]
    captions = {im["filename"]: [s["raw"] for s in im["sentences"]] for im in images}
    renames = {"val": "validation", "restval": "train"}
    splits = {im["filename"]: renames.get(im["split"], im["split"]) for im in images}
  except (KeyError, TypeError) as e:
    raise errors.InputError(f"{path} is not Karpathy's format ({{'images': [{{'filename', 'split', "
                     f"'sentences': [{{'raw'}}]}}]}}): missing {e}") from None
  unknown = sorted({s for s in splits.values() if s not in _paired.SPLITS})
  if unknown:
    raise errors.InputError(f"{path}: unknown split names {unknown}; expected train / val / test")
  return captions, splits
