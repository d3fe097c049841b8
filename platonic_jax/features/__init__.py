"""The frozen features: one stored entry per source and split, keyed by its inputs.

    from platonic_jax import features
    splits = features.extract_all(requests, workdir)   # {split: features.Split}

``params`` says what determines an entry (``FeatureParams``), ``store`` how an entry
lives on disk (``<workdir>/features/<key>/``: atomic, checksummed, resumable chunks),
``extract`` how missing entries are produced (the synthetic world, or encoders over the
TFDS data in one pass per split). ``platonic_jax.plan`` builds the requests from the
config.
"""

from platonic_jax.features.extract import Request, extract_all, load_encoders, split_sizes
from platonic_jax.features.params import (EncoderParams, FeatureParams, Split, TfdsSource,
                                          WorldExtrasParams, data_from_config)
from platonic_jax.features.store import FEATURES_DIR, Entry

__all__ = ["EncoderParams", "Entry", "FEATURES_DIR", "FeatureParams", "Request", "Split",
           "TfdsSource", "WorldExtrasParams", "data_from_config", "extract_all",
           "load_encoders", "split_sizes"]
