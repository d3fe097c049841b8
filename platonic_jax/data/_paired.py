"""What the two TFDS builders share: the builder mixin, caption policies, the split rule,
image checks.

An *annotation* is parsed into ``{image file name: [caption, ...]}`` (order kept) plus,
when the source has one, a split per image. Everything after that — dropping empty
captions, checking that every image exists and decodes, splitting, applying the caption
policy, writing examples — is the same for Flickr30k and for a user's image-text folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import zlib
from typing import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from platonic_jax import errors

CAPTION_POLICIES = ("longest", "first", "random", "all")
SPLITS = ("train", "validation", "test")
# Karpathy's Flickr30k split sizes: 29000 / 1014 / 1000 (31,014 of the 31,783 images).
# Annotations without a split get his test / validation sizes (see `hash_split`).
KARPATHY_SIZES = {"train": 29000, "validation": 1014, "test": 1000}


@dataclasses.dataclass
class PairedConfig(tfds.core.BuilderConfig):
  """A builder config = a caption policy.

  caption_policy: ``longest`` (the longest caption, ties to the first; seed 000's
    choice), ``first``, ``random`` (one caption drawn per image from ``caption_seed`` and
    the file name, so it does not depend on file order), ``all`` (training split: one
    example per caption; validation/test: one example per image, ``caption`` = the first,
    so retrieval still sees every caption in ``captions``).
  """
  caption_policy: str = "longest"
  caption_seed: int = 0


class PairedBuilder:
  """What both TFDS builders share (a mixin placed before ``GeneratorBasedBuilder``): the
  caption-policy configs, the ``skip_bad`` kwarg and example generation.

  A subclass sets ``MANUAL_DOWNLOAD_INSTRUCTIONS`` and implements ``_info`` and
  ``_split_generators`` (which ends with :meth:`_splits`).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DEFAULT_CONFIG_NAME = "longest"

  def __init__(self, *, skip_bad: bool = False, **kwargs):
    self.skip_bad = bool(skip_bad)
    super().__init__(**kwargs)

  def _manual_dir(self, dl_manager, what: str) -> str:
    """The manual directory, or a ValueError saying what goes in it when missing/empty."""
    try:
      return os.fspath(dl_manager.manual_dir)
    except AssertionError as e:  # tfds raises AssertionError; users need the layout
      raise errors.InputError(f"{what}: {e}".split("using instructions:")[0].rstrip(". ") +
                       f".\n\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from None

  def _splits(self, captions, splits, image_dir: str, annotation: str) -> dict:
    """``prepare`` (checks, split rule) then one example generator per split."""
    per_split = prepare(captions=captions, splits=splits, image_dir=image_dir,
                        skip_bad=self.skip_bad, source=annotation, metadata=self.info.metadata)
    return {s: self._generate_examples(items, s, image_dir) for s, items in per_split.items()}

  def _generate_examples(self, items, split, image_dir):
    return generate(items, split=split, image_dir=image_dir, config=self.builder_config)


def default_configs() -> list[PairedConfig]:
  return [PairedConfig(name=p, caption_policy=p,
                       description=f"caption policy {p!r}" + (" (seed 0)" if p == "random"
                                                              else ""))
          for p in CAPTION_POLICIES]


def features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      # The original file bytes (JPEG or PNG, any mode: L, RGB, CMYK, RGBA): TFDS copies
      # them without re-encoding. Decode with `platonic_jax.data.loader.decode_image`
      # (RGB, alpha composited on white); tfds' own decoder keeps CMYK/RGBA as 4 channels.
      "image": tfds.features.Image(shape=(None, None, 3)),
      "image/filename": tfds.features.Text(),
      "caption": tfds.features.Text(),         # the caption the policy chose
      "caption_index": np.int32,               # its position in `captions`
      "captions": tfds.features.Sequence(tfds.features.Text()),  # every non-empty caption
  })


def hash_split(names: Iterable[str]) -> dict[str, str]:
  """The split rule for annotations without one (Flickr30k .token / .csv, folders).

  Images are ordered by the SHA-256 of their file name (a fixed pseudo-random order that
  does not depend on the annotation's row order or on the machine); the first
  ``min(1000, round(N * 1000 / 31014))`` are ``test``, the next
  ``min(1014, round(N * 1014 / 31014))`` are ``validation``, the rest ``train``. So the
  full Flickr30k (31,783 images in the .token / .csv files) gets Karpathy's test and
  validation *sizes*, 1000 / 1014, and 29,769 training images (not Karpathy's *images*,
  whose list is only in his json); smaller sets keep his proportions. With N >= 3 every
  split gets at least one image.
  """
  names = sorted(set(names), key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())
  n = len(names)
  total = sum(KARPATHY_SIZES.values())
  n_test = min(KARPATHY_SIZES["test"], round(n * KARPATHY_SIZES["test"] / total))
  n_val = min(KARPATHY_SIZES["validation"], round(n * KARPATHY_SIZES["validation"] / total))
  if n >= 3:
    n_test, n_val = max(n_test, 1), max(n_val, 1)
  out = {}
  for i, name in enumerate(names):
    out[name] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
  return out


def check_image(path: str) -> str | None:
  """None if ``path`` is a readable image, else why not (missing / corrupt: ...).

  Decodes the whole file (JPEGs in draft mode at 1/8 scale: the entropy decoder still
  reads every byte, so truncation is caught, at a fraction of the cost).
  """
  if not os.path.isfile(path):
    return "missing"
  try:
    with Image.open(path) as im:
      if im.format == "JPEG":
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
      im.load()
  except Exception as e:  # noqa: BLE001 -- any decoder failure means "corrupt"
    return f"corrupt ({type(e).__name__}: {e})"
  return None


def find_bad_images(image_dir: str, names: Iterable[str]) -> dict[str, str]:
  """{file name: reason} for every missing or undecodable image, checked in threads
  (PIL releases the GIL while decoding)."""
  names = sorted(set(names))
  with concurrent.futures.ThreadPoolExecutor(max(4, os.cpu_count() or 1)) as pool:
    reasons = pool.map(lambda n: check_image(os.path.join(image_dir, n)), names)
    return {n: r for n, r in zip(names, reasons) if r is not None}


def clean_captions(captions: dict[str, list[str]]) -> tuple[dict[str, list[str]], int, list[str]]:
  """Strips captions and drops the empty ones.

  Returns ``(kept, num_empty_captions, images_left_without_caption)``.
  """
  kept, empty, orphans = {}, 0, []
  for name, caps in captions.items():
    caps_clean = [c.strip() for c in caps]
    good = [c for c in caps_clean if c]
    empty += len(caps_clean) - len(good)
    if good:
      kept[name] = good
    else:
      orphans.append(name)
  return kept, empty, orphans


def choose(captions: list[str], policy: str, seed: int, name: str) -> int:
  """Index of the caption a policy keeps for one image (policies other than ``all``)."""
  if policy == "first":
    return 0
  if policy == "longest":
    return int(np.argmax([len(c) for c in captions]))  # argmax: ties go to the first
  if policy == "random":
    # Seeded by (seed, file name) so the choice does not depend on the order of images.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    return int(rng.integers(len(captions)))
  raise errors.InputError(f"caption policy {policy!r}: expected one of {CAPTION_POLICIES}")


def prepare(*, captions: dict[str, list[str]], splits: dict[str, str] | None,
            image_dir: str, skip_bad: bool, source: str,
            metadata: tfds.core.MetadataDict | None) -> dict[str, list[tuple[str, list[str]]]]:
  """The checks shared by both builders; returns ``{split: [(file name, captions)]}``.

  Raises ValueError listing every missing / corrupt image unless ``skip_bad``; empty
  captions are dropped and counted (logged and stored in ``info.metadata``).
  """
  captions, num_empty, orphans = clean_captions(captions)
  if not captions:
    raise errors.InputError(f"{source} has no image with a non-empty caption.")
  bad = find_bad_images(image_dir, captions)
  if bad and not skip_bad:
    lines = "\n".join(f"  {n}: {r}" for n, r in sorted(bad.items()))
    raise errors.InputError(
        f"{len(bad)} image(s) named in {source} cannot be used (looked in {image_dir}):\n"
        f"{lines}\nFix or remove them, or pass skip_bad=True (config: "
        "--config.data.skip_bad=True) to leave them out and count them.")
  for name in bad:
    del captions[name]
  if num_empty or orphans or bad:
    logging.warning("%s: dropped %d empty caption(s), %d image(s) left without a caption, "
                    "skipped %d bad image(s)", source, num_empty, len(orphans), len(bad))
  if metadata is not None:
    metadata.update(annotation=os.path.realpath(source),
                    dropped_empty_captions=num_empty,
                    dropped_images_without_caption=len(orphans),
                    skipped_bad_images=len(bad), skipped_bad_files=sorted(bad))
  if not captions:
    raise errors.InputError(f"every image named in {source} was skipped as bad.")
  if splits is None:
    splits = hash_split(captions)
  out = {s: [] for s in SPLITS}
  for name, caps in captions.items():
    out[splits[name]].append((name, caps))
  # Sorted by file name: the written order (disable_shuffling=True keeps it) does not
  # depend on the annotation's row order.
  return {s: sorted(v) for s, v in out.items() if v}


def generate(items: list[tuple[str, list[str]]], *, split: str, image_dir: str,
             config: PairedConfig) -> Iterator[tuple[str, dict]]:
  """Examples of one split under the builder config's caption policy."""
  policy = config.caption_policy
  if policy not in CAPTION_POLICIES:
    raise errors.InputError(f"caption_policy={policy!r}: expected one of {CAPTION_POLICIES}")
  for name, caps in items:
    base = {"image": os.path.join(image_dir, name), "image/filename": name, "captions": caps}
    if policy == "all" and split == "train":
      for i, c in enumerate(caps):
        yield f"{name}#{i}", dict(base, caption=c, caption_index=i)
    else:
      i = 0 if policy == "all" else choose(caps, policy, config.caption_seed, name)
      yield name, dict(base, caption=caps[i], caption_index=i)
