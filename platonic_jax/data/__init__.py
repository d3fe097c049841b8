"""Paired image-text data.

Importing this package registers two TFDS builders (no TensorFlow needed; write with
``file_format="array_record"``, read with ``tfds.data_source``):

- ``flickr30k`` (``platonic_jax.data.flickr30k``): Flickr30k from a manual directory.
- ``image_text_folder`` (``platonic_jax.data.image_text_folder``): any folder of images
  with captions.jsonl / captions.csv.

Both have the configs ``longest`` (default), ``first``, ``random``, ``all`` (caption
policies) and the builder kwarg ``skip_bad``. Public API::

    open_source(source, split, data_dir) -> tfds ArrayRecordDataSource
    loader.make_loader(source, *, batch_size, preprocess, seed, shuffle, num_epochs,
                       worker_count, shard_index=None, shard_count=None,
                       threads_per_worker=1) -> loader.Loader
    loader.decode_image(bytes) -> PIL RGB image
    synthetic.make_world(synthetic.WorldParams.from_config(cfg, seed=...)) -> {"train": ..., "test": ...}

See docs/data.md.
"""

from __future__ import annotations

import contextlib
import io
import os

import tensorflow_datasets as tfds
from absl import logging

from platonic_jax import errors

from platonic_jax.data import flickr30k, image_text_folder, synthetic  # registers
from platonic_jax.data._paired import CAPTION_POLICIES, SPLITS

BUILDERS = {"flickr30k": flickr30k, "image_text_folder": image_text_folder}
SOURCES = ("synthetic", *BUILDERS)  # the values of config.data.name

__all__ = ["open_source", "builder", "loader", "synthetic", "flickr30k", "image_text_folder",
           "CAPTION_POLICIES", "SPLITS", "BUILDERS", "SOURCES"]


def __getattr__(name):
  # The grain loader is imported on first use: config validation reads this package's
  # names without paying for grain's import (~1.5 s).
  if name == "loader":
    import importlib  # noqa: PLC0415
    return importlib.import_module("platonic_jax.data.loader")
  raise AttributeError(f"module 'platonic_jax.data' has no attribute {name!r}")


def builder(source, data_dir: str) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``source`` (``features.TfdsSource`` or anything with ``name``,
  ``caption_policy``, ``skip_bad`` and ``manual_dir``), array_record files in ``data_dir``."""
  if source.name not in BUILDERS:
    raise errors.ConfigError(f"data.name={source.name!r} has no TFDS source: expected one of "
                             f"{sorted(BUILDERS)} (or 'synthetic')")
  if source.caption_policy not in CAPTION_POLICIES:
    raise errors.ConfigError(f"data.caption_policy={source.caption_policy!r}: expected one "
                             f"of {CAPTION_POLICIES}")
  if not data_dir:
    raise errors.ConfigError("no TFDS data_dir: pass data_dir or set --config.data.data_dir")
  return tfds.builder(f"{source.name}/{source.caption_policy}", data_dir=os.fspath(data_dir),
                      file_format="array_record", skip_bad=bool(source.skip_bad))


def _prepare(b: tfds.core.DatasetBuilder, name: str, manual_dir: str) -> None:
  if not manual_dir:
    raise errors.InputError(
        f"{name} is not prepared in {b.data_dir} and data.manual_dir is empty: set "
        f"--config.data.manual_dir=DIR.\n\n{BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS}")
  logging.info("Preparing %s from %s into %s (once; later runs read it back)", name,
               manual_dir, b.data_dir)
  # TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout, which
  # misleads (nothing is downloaded from a manual dir): the line above replaces it.
  with contextlib.redirect_stdout(io.StringIO()):
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  logging.info("%s prepared in %s", name, b.data_dir)


def open_source(source, split: str, data_dir: str):
  """The TFDS data source of ``split`` for ``source`` (see ``builder``).

  Builds (prepares) the dataset on first use from ``source.manual_dir``; later calls read
  the array_record files. Images come back as their encoded bytes (decode them with
  ``loader.decode_image``, which ``make_loader`` does in its workers). With several JAX
  processes, process 0 prepares while the others wait (``data_dir`` must be shared,
  e.g. GCS or NFS). Raises ConfigError for an unknown name / policy / split and
  InputError, with the layout and how to obtain the data, for a missing manual directory.
  """
  if split not in SPLITS and not any(split.startswith(s + "[") for s in SPLITS):
    raise errors.ConfigError(f"split={split!r}: expected one of {SPLITS} (TFDS slicing like "
                             "'train[:10%]' is accepted)")
  b = builder(source, data_dir)
  if not b.is_prepared():
    import jax
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if jax.process_index() == 0:
        _prepare(b, source.name, source.manual_dir)
      multihost_utils.sync_global_devices("platonic_jax.data.open_source")
      b = builder(source, data_dir)  # re-read the now-prepared dataset info
    else:
      _prepare(b, source.name, source.manual_dir)
  _check_same_folder(b, source)
  return b.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def _check_same_folder(b: tfds.core.DatasetBuilder, source) -> None:
  """TFDS caches a dataset by name/config/version, not by its manual dir: a data_dir built
  from another image_text_folder would be read silently. Refuse that."""
  built_from = b.info.metadata.get("annotation") if b.info.metadata else None
  if source.name != "image_text_folder" or not source.manual_dir or not built_from:
    return
  if os.path.dirname(built_from) != os.path.realpath(source.manual_dir):
    raise errors.InputError(
        f"{b.data_dir} holds image_text_folder built from {os.path.dirname(built_from)}, "
        f"not from data.manual_dir={source.manual_dir}. Use a separate data_dir per folder "
        "(--config.data.data_dir=...) or delete the old one to rebuild.")
