"""The Platonic study's image-caption pairs: Hugging Face ``minhuh/prh``, revision
``wit_1024`` (1024 Wikipedia image-text pairs, WIT), split ``train``.

Each row holds an ``image`` and ``text``, a list of captions; the release
(``minyoungg/platonic-rep`` ``extract_features.py``) reads it with
``load_dataset("minhuh/prh", revision="wit_1024", split="train")`` and encodes
``row["text"][caption_idx]`` (caption 0 by default) and ``row["image"]``.

Here the dataset's parquet files are read with pyarrow, fetched with ``huggingface_hub``
(``snapshot_download(repo_type="dataset", revision=...)``, cached, ``HF_HUB_OFFLINE``
honoured) or taken from a local copy in the same layout (``data.path``: a directory with
the repository's files, e.g. from ``huggingface-cli download minhuh/prh --repo-type dataset
--revision wit_1024 --local-dir DIR``). Why not the ``datasets`` library: it would add a
dependency tree (fsspec, multiprocess, xxhash, its own pins of huggingface_hub) for what
is one parquet read; pyarrow is already installed with tensorflow-datasets, and the
rows are the same (``datasets`` stores an Image feature in parquet as the struct
``{bytes, path}`` read here).

Images stay encoded (bytes) until an encoder batch decodes them: 1024 decoded WIT images
would hold hundreds of MB.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os

from platonic_jax import errors

REPO = "minhuh/prh"
REVISION = "wit_1024"
SPLIT = "train"
# What a hub fetch takes: the parquet shards and the card (nothing else is read).
_PATTERNS = ["*.parquet", "**/*.parquet", "README.md"]


@dataclasses.dataclass(frozen=True)
class PrhSource:
  """Which pairs (typed parameters of every feature entry; ``path`` is a real path or
  "" for the hub)."""
  repo: str
  revision: str
  split: str
  num_samples: int
  path: str = ""

  @classmethod
  def from_config(cls, d) -> "PrhSource":
    return cls(repo=d.repo, revision=d.revision, split=d.split,
               num_samples=int(d.num_samples),
               path=os.path.realpath(os.path.expanduser(d.path)) if d.path else "")

  def describe(self) -> str:
    return self.path or f"{self.repo}@{self.revision}"


@dataclasses.dataclass
class Pairs:
  """The first ``num_samples`` rows: images (encoded bytes or paths) and each row's
  captions (a list of str)."""
  images: list
  captions: list[list[str]]
  files: list[str]

  def __len__(self) -> int:
    return len(self.images)

  def texts(self, caption_idx: int) -> list[str]:
    """Caption ``caption_idx`` of every row, as the release's ``str(x['text'][idx])``."""
    out = []
    for i, caps in enumerate(self.captions):
      if not -len(caps) <= caption_idx < len(caps):
        raise errors.InputError(
            f"row {i} has {len(caps)} caption(s), so data.caption_idx={caption_idx} does not "
            f"exist there; use a smaller data.caption_idx")
      out.append(str(caps[caption_idx]))
    return out


def _snapshot(src: PrhSource) -> str:
  if src.path:
    if not os.path.isdir(src.path):
      raise errors.InputError(f"data.path={src.path!r} is not a directory; point it at a local "
                              f"copy of {src.repo} (the repository's files), or leave it '' to "
                              "use the hub")
    return src.path
  from huggingface_hub import snapshot_download  # noqa: PLC0415 - only hub reads need it
  try:
    return snapshot_download(src.repo, repo_type="dataset", revision=src.revision,
                             allow_patterns=_PATTERNS)
  except Exception as e:  # noqa: BLE001 - every hub error means "cannot get it"
    raise errors.InputError(
        f"cannot fetch the dataset {src.repo} (revision {src.revision}) from the Hugging Face "
        f"hub ({type(e).__name__}: {e}). Fix: make the hub reachable (and HF_HUB_OFFLINE "
        f"unset), or download it once (huggingface-cli download {src.repo} --repo-type dataset "
        f"--revision {src.revision} --local-dir DIR) and pass --config.data.path=DIR") from None


def parquet_files(root: str, split: str) -> list[str]:
  """The parquet shards of ``split`` under ``root``, in shard order: the hub's layouts
  ``data/<split>-00000-of-0000N.parquet`` (``push_to_hub``) and
  ``<config>/<split>/0000.parquet`` (the parquet conversion), or any ``<split>*.parquet``."""
  found = []
  for p in sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)):
    name = os.path.basename(p)
    parent = os.path.basename(os.path.dirname(p))
    if name.startswith((f"{split}-", f"{split}.", f"{split}_")) or parent == split:
      found.append(p)
  return found


def _column(table, name: str, path: str):
  if name not in table.column_names:
    raise errors.InputError(
        f"{path} has no {name!r} column (columns: {table.column_names}); the {REPO} layout "
        "has 'image' (struct of bytes / path) and 'text' (a list of captions)")
  return table.column(name).to_pylist()


def _image(value, row: int, path: str):
  """An ``image`` cell as the encoders take it: encoded bytes, or a path."""
  if isinstance(value, dict):
    if value.get("bytes"):
      return bytes(value["bytes"])
    if value.get("path"):
      p = value["path"]
      p = p if os.path.isabs(p) else os.path.join(os.path.dirname(path), p)
      if os.path.exists(p):
        return p
  elif isinstance(value, (bytes, bytearray)) and value:
    return bytes(value)
  raise errors.InputError(f"{path}: row {row} has no image bytes (got {type(value).__name__}); "
                          f"re-download the dataset")


def load(src: PrhSource) -> Pairs:
  """The first ``src.num_samples`` rows of the split, in file order."""
  import pyarrow.parquet as pq  # noqa: PLC0415 - only when the data is read
  root = _snapshot(src)
  files = parquet_files(root, src.split)
  if not files:
    raise errors.InputError(
        f"{root} holds no parquet files of split {src.split!r} (looked for "
        f"**/{src.split}-*.parquet and **/{src.split}/*.parquet); data.path must be a copy of "
        f"the {src.repo} repository at revision {src.revision}")
  images, captions, used = [], [], []
  for path in files:
    if len(images) >= src.num_samples:
      break
    try:
      table = pq.read_table(path, columns=None)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
      raise errors.InputError(f"cannot read {path} as parquet ({type(e).__name__}: {e}); "
                              "re-download the dataset") from None
    take = min(table.num_rows, src.num_samples - len(images))
    table = table.slice(0, take)
    imgs, texts = _column(table, "image", path), _column(table, "text", path)
    for r, (img, text) in enumerate(zip(imgs, texts)):
      images.append(_image(img, len(images), path))
      caps = [text] if isinstance(text, str) else list(text or [])
      if not caps:
        raise errors.InputError(f"{path}: row {len(captions)} has no caption")
      captions.append([str(c) for c in caps])
    used.append(path)
  if len(images) < src.num_samples:
    raise errors.InputError(
        f"{src.describe()} split {src.split!r} has {len(images)} rows, fewer than "
        f"data.num_samples={src.num_samples}; lower data.num_samples")
  return Pairs(images, captions, used)


def decode_check(pairs: Pairs) -> None:
  """Every image decodes (PIL), or an InputError naming the first bad row."""
  from PIL import Image  # noqa: PLC0415
  for i, img in enumerate(pairs.images):
    try:
      with Image.open(io.BytesIO(img) if isinstance(img, bytes) else img) as im:
        im.verify()
    except Exception as e:  # noqa: BLE001 - PIL raises many types
      raise errors.InputError(f"row {i} of {pairs.files}: the image cannot be decoded "
                              f"({type(e).__name__}: {e}); re-download the dataset") from None
