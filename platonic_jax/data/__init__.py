"""Paired image-text data.

Importing this package registers two TFDS builders (no TensorFlow needed; write with
``file_format="array_record"``, read with ``tfds.data_source``):

- ``flickr30k`` (``platonic_jax.data.flickr30k``): Flickr30k from a manual directory.
- ``image_text_folder`` (``platonic_jax.data.image_text_folder``): any folder of images
  with captions.jsonl / captions.csv.

Both have the configs ``longest`` (default), ``first``, ``random``, ``all`` (caption
policies) and the builder kwarg ``skip_bad``. Public API::

    open_source(data_config, split, data_dir=None) -> tfds ArrayRecordDataSource
    loader.make_loader(source, *, batch_size, preprocess, seed, shuffle, num_epochs,
                       worker_count, shard_index=None, shard_count=None,
                       threads_per_worker=1) -> loader.Loader
    loader.decode_image(bytes) -> PIL RGB image
    synthetic.make_world(cfg, seed) -> {"train": {...}, "test": {...}}

See docs/data.md.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from platonic_jax.data import flickr30k, image_text_folder, loader, synthetic  # registers
from platonic_jax.data._paired import CAPTION_POLICIES, SPLITS

BUILDERS = {"flickr30k": flickr30k, "image_text_folder": image_text_folder}

__all__ = ["open_source", "builder", "loader", "synthetic", "flickr30k", "image_text_folder",
           "CAPTION_POLICIES", "SPLITS", "BUILDERS"]


def builder(data_config, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by ``data_config`` (fields ``name``, ``caption_policy``,
  ``skip_bad``, ``data_dir``), writing array_record files under ``data_dir``."""
  name = data_config.name
  if name not in BUILDERS:
    raise ValueError(f"data.name={name!r} has no TFDS source: expected one of "
                     f"{sorted(BUILDERS)} (the synthetic world is data.synthetic.make_world)")
  policy = data_config.caption_policy
  if policy not in CAPTION_POLICIES:
    raise ValueError(f"data.caption_policy={policy!r}: expected one of {CAPTION_POLICIES}")
  data_dir = data_dir or data_config.get("data_dir", "")
  if not data_dir:
    raise ValueError("no TFDS data_dir: pass data_dir or set --config.data.data_dir")
  return tfds.builder(f"{name}/{policy}", data_dir=os.fspath(data_dir),
                      file_format="array_record",
                      skip_bad=bool(data_config.get("skip_bad", False)))


def _prepare(b: tfds.core.DatasetBuilder, name: str, manual_dir: str) -> None:
  if not manual_dir:
    raise ValueError(f"{name} is not prepared in {b.data_dir} and data.manual_dir is empty: "
                     f"set --config.data.manual_dir=DIR.\n\n"
                     f"{BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS}")
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))


def open_source(data_config, split: str, data_dir: str | None = None):
  """The TFDS data source of ``split`` for ``data_config`` (``config.data``).

  Builds (prepares) the dataset on first use from ``data_config.manual_dir``; later calls
  read the array_record files. Images come back as their encoded bytes (decode them with
  ``loader.decode_image``, which ``make_loader`` does in its workers). With several JAX
  processes, process 0 prepares while the others wait (``data_dir`` must be shared,
  e.g. GCS or NFS). Raises ValueError for an unknown name / policy / split and, with the
  layout and how to obtain the data, for a missing manual directory.
  """
  if split not in SPLITS and not any(split.startswith(s + "[") for s in SPLITS):
    raise ValueError(f"split={split!r}: expected one of {SPLITS} (TFDS slicing like "
                     "'train[:10%]' is accepted)")
  b = builder(data_config, data_dir)
  if not b.is_prepared():
    import jax
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if jax.process_index() == 0:
        _prepare(b, data_config.name, data_config.get("manual_dir", ""))
      multihost_utils.sync_global_devices("platonic_jax.data.open_source")
      b = builder(data_config, data_dir)  # re-read the now-prepared dataset info
    else:
      _prepare(b, data_config.name, data_config.get("manual_dir", ""))
  _check_same_folder(b, data_config)
  return b.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def _check_same_folder(b: tfds.core.DatasetBuilder, data_config) -> None:
  """TFDS caches a dataset by name/config/version, not by its manual dir: a data_dir built
  from another image_text_folder would be read silently. Refuse that."""
  manual_dir = data_config.get("manual_dir", "")
  built_from = b.info.metadata.get("annotation") if b.info.metadata else None
  if data_config.name != "image_text_folder" or not manual_dir or not built_from:
    return
  if os.path.dirname(built_from) != os.path.realpath(manual_dir):
    raise ValueError(
        f"{b.data_dir} holds image_text_folder built from {os.path.dirname(built_from)}, "
        f"not from data.manual_dir={manual_dir}. Use a separate data_dir per folder "
        "(--config.data.data_dir=...) or delete the old one to rebuild.")
