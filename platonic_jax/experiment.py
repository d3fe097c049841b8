"""One experiment end to end: ``train_and_evaluate(config, workdir)`` (called by run.py).

A short sequence of stages, each an importable library function:
1. the train-split features of every modality (``train_features``);
2. contrastive adapter training with checkpoints and resume (``platonic_jax.train``).
Evaluation (kernel alignment before / after, retrieval, baselines, report) is added as
further stages by ``platonic_jax.evaluate`` / ``platonic_jax.report``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from absl import logging

from platonic_jax import train


def train_features(config, workdir: str) -> dict[str, np.ndarray]:
  """{modality: [N, D_m]} float32 train-split features for ``config.modalities``."""
  del workdir  # the encoder feature cache will live there (platonic_jax.features)
  if config.data.name == "synthetic":
    from platonic_jax.data import synthetic
    world = synthetic.make_world(config.data.synthetic, config.seed)["train"]
    return {m: world[m] for m in config.modalities.keys()}
  raise NotImplementedError(
      f"data.name={config.data.name!r}: encoder feature caching is not wired into "
      "experiment.py yet (platonic_jax.features); use configs/synthetic.py")


def train_and_evaluate(config, workdir: str) -> train.TrainResult:
  """Gets the features, trains the adapters (resuming from ``<workdir>/checkpoints``)."""
  features: Mapping[str, np.ndarray] = train_features(config, workdir)
  logging.info("Training adapters on %s", {m: x.shape for m, x in features.items()})
  result = train.train_adapters(config, features, workdir)
  return result
