"""What determines a stored feature array: typed parameters built from the config.

A feature entry is one source (a modality or the reference) on one split:
``FeatureParams(split, data, view, encoder)``. Its key hashes exactly these fields, so
changing an encoder, its layer, pooling, dtype or (for text) the token length
re-extracts that source alone; the learning rate, the batch size of the encoder, the
chunk size, the worker count and where TFDS keeps its files change nothing.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from platonic_jax import typed_json
from platonic_jax.data import synthetic

INPUTS = ("image", "text")  # the raw inputs a data source has


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A TFDS image-caption source (``config.data`` of flickr30k / image_text_folder)."""
  TAGGED = True
  name: str
  caption_policy: str
  skip_bad: bool
  manual_dir: str         # real path; "" when the prepared dataset is used as it is

  @classmethod
  def from_config(cls, cfg) -> "TfdsSource":
    return cls(name=cfg.name, caption_policy=cfg.caption_policy, skip_bad=bool(cfg.skip_bad),
               manual_dir=os.path.realpath(cfg.manual_dir) if cfg.manual_dir else "")


DataParams = synthetic.WorldParams | TfdsSource


def data_from_config(config) -> DataParams:
  if config.data.name == "synthetic":
    return synthetic.WorldParams.from_config(config.data.synthetic, seed=config.seed)
  return TfdsSource.from_config(config.data)


@dataclasses.dataclass(frozen=True)
class EncoderParams:
  """A frozen encoder run on one raw input; ``max_length`` for text only."""
  encoder: str            # hub id or local directory
  input: str              # "image" | "text"
  layer: int | str        # a hidden state, or "auto" (platonic_jax.layer_choice)
  pool: str
  dtype: str
  max_length: int | None = None

  @classmethod
  def from_config(cls, block, input_kind: str, encoders_cfg) -> "EncoderParams":
    """``dtype`` is the resolved one ("auto" -> what this host's devices compute in,
    ``encoders.auto_dtype``): the key says what the features were computed in, so a
    CPU's float32 entry is never served as a GPU's bfloat16 one, and CPU keys of
    "auto" are those of "float32"."""
    from platonic_jax.encoders import auto_dtype  # noqa: PLC0415 - no jax unless "auto"
    layer = block.layer
    return cls(encoder=block.encoder, input=input_kind,
               layer=layer if isinstance(layer, str) else int(layer),
               pool=block.pool, dtype=auto_dtype.resolve(encoders_cfg.dtype),
               max_length=int(encoders_cfg.text_max_length) if input_kind == "text" else None)


@dataclasses.dataclass(frozen=True)
class FeatureParams:
  """One source on one split: a synthetic ``view`` of the world ("image", or "image@2"
  for a layer of a layered world), or an ``encoder`` over the TFDS data.
  ``positives="all_captions"`` on a text source of the train split also stores every
  caption's features (as the test split always does)."""
  split: str
  data: DataParams
  view: str | None = None
  encoder: EncoderParams | None = None
  positives: str = dataclasses.field(default="chosen", metadata=typed_json.OPTIONAL)


@dataclasses.dataclass(frozen=True)
class WorldExtrasParams:
  """The synthetic world's class labels and true latents z of one split."""
  split: str
  world: synthetic.WorldParams


@dataclasses.dataclass
class Split:
  """The features of one split, as the training and evaluation stages read them.

  views: {modality / "ref": [N, D] float32}; labels: [N] int32 (synthetic) or None;
  z: [N, d_z] true latents (synthetic) or None; captions: {text modality: [M, D]} every
  caption of every image (the test split of caption data); caption_image: [M] int64, the
  row of each caption's image.
  """
  views: dict[str, np.ndarray]
  labels: np.ndarray | None = None
  z: np.ndarray | None = None
  captions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  caption_image: np.ndarray | None = None

  @property
  def num_rows(self) -> int:
    return next(iter(self.views.values())).shape[0]
