"""platonic_jax: align frozen unimodal encoders with small contrastive adapters and
measure, with kernel-alignment metrics, whether the shared space moves toward a stronger
model's representation (the Platonic Representation Hypothesis).

Subpackages are imported lazily (``from platonic_jax import metrics``) so that importing
one part never pays for the others (transformers, tensorflow_datasets).
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "metrics", "encoders", "data", "maps", "adapters", "losses", "train", "checkpointing",
    "evaluation", "report", "features", "sharding", "experiment", "plan", "validate",
    "store", "workdir", "errors", "runtime", "typed_json",
)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
