"""TFDS builder ``image_text_folder``: bring your own image-caption pairs (COCO, a WIT
subset, your photos), no TensorFlow needed.

    builder = tfds.builder("image_text_folder/longest", data_dir=..., file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/folder"))

The folder holds the images (any sub-folders) and one of

    captions.jsonl   one JSON object a line: {"image": "relative/path.jpg", "caption": "..."}
    captions.csv     a header row `image,caption` (standard CSV quoting), then one pair a row

with an optional ``split`` field (``train`` / ``validation`` (or ``val``) / ``test``) on
every row. An image may appear on several rows: its captions are gathered in row order.
Without a ``split`` field the images get Flickr30k's deterministic rule (docs/data.md).
Same configs (caption policies), ``skip_bad`` kwarg and features as ``flickr30k``; note
that with ``image_text_folder`` one manual dir = one dataset per ``data_dir``: use a
separate ``data_dir`` per folder (TFDS caches by name and version).
"""

from __future__ import annotations

import collections
import csv
import json
import os

import tensorflow_datasets as tfds

from platonic_jax import errors
from platonic_jax.data import _paired

ANNOTATIONS = ("captions.jsonl", "captions.csv")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put your images in one folder (sub-folders are fine) and, beside them, either
  captions.jsonl   {"image": "relative/path.jpg", "caption": "a caption"} one object a line
  captions.csv     header `image,caption` then one row per pair
(an optional `split` field: train / validation / test). Pass the folder as the manual
directory (config: --config.data.manual_dir=DIR).
"""


class ImageTextFolder(_paired.PairedBuilder, tfds.core.GeneratorBasedBuilder):
  """Image-caption pairs from a folder with captions.jsonl or captions.csv."""

  BUILDER_CONFIGS = _paired.default_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Image-caption pairs from a local folder (captions.jsonl / captions.csv).",
        features=_paired.features(),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # keep the sorted file order: index i is stable
    )

  def _split_generators(self, dl_manager):
    folder = self._manual_dir(dl_manager, "image_text_folder")
    annotation = next((os.path.join(folder, a) for a in ANNOTATIONS
                       if os.path.isfile(os.path.join(folder, a))), None)
    if annotation is None:
      raise errors.InputError(f"{folder} has no captions.jsonl or captions.csv.\n\n"
                       f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    captions, splits = read_rows(annotation)
    return self._splits(captions, splits, folder, annotation)


def read_rows(path: str) -> tuple[dict[str, list[str]], dict[str, str] | None]:
  """``({image path: captions}, {image path: split} or None)`` from captions.jsonl/.csv."""
  rows, problems = [], []
  with open(path, encoding="utf-8", newline="") as f:
    if path.endswith(".jsonl"):
      for lineno, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
          problems.append(f"  line {lineno}: not JSON ({e.msg})")
    else:
      reader = csv.DictReader(f)
      rows = [(lineno, row) for lineno, row in enumerate(reader, start=2)]
  captions = collections.defaultdict(list)
  splits = {}
  has_split = None
  for lineno, row in rows:
    if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(
        row.get("caption"), str):
      problems.append(f"  line {lineno}: needs string fields 'image' and 'caption', got "
                      f"{row!r:.100}")
      continue
    image = os.path.normpath(row["image"].strip())
    captions[image].append(row["caption"])
    split = row.get("split")
    if has_split is None:
      has_split = split is not None
    if has_split != (split is not None):
      problems.append(f"  line {lineno}: 'split' must be given on every row or on none")
      continue
    if split is not None:
      split = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
      if split not in _paired.SPLITS:
        problems.append(f"  line {lineno}: split {row['split']!r} is not train/validation/test")
      elif splits.setdefault(image, split) != split:
        problems.append(f"  line {lineno}: {image} is in both {splits[image]} and {split}")
  if problems:
    raise errors.InputError(f"{path}: {len(problems)} bad row(s):\n" + "\n".join(problems[:50]))
  if not captions:
    raise errors.InputError(f"{path} has no rows.\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return dict(captions), (splits if has_split else None)
