"""One experiment end to end: ``train_and_evaluate(config, workdir)`` (called by run.py).

A short sequence of stages, each an importable library function that skips itself when
its result already exists in the workdir (so re-running the same command resumes, and a
finished run is a no-op):
1. frozen features of every modality and the reference, per split
   (``features.extract_all``: a checksummed cache keyed by the config);
2. kernel alignment before training (``evaluate.stage_before``);
3. contrastive adapter training with checkpoints and resume (``train.train_adapters``);
4-5. alignment after training, the verdict with bootstrap intervals, retrieval
   (``evaluate.stage_trained``);
6. closed-form baselines on the same features (``evaluate.stage_baselines``);
7. the report: report.json, report.md, figures, a printed summary (``report.write_report``).
See docs/experiment.md for what each number means.
"""

from __future__ import annotations

from absl import logging

from platonic_jax import evaluate, features, report, train


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) every stage; returns the results dict that the report holds.

  ``train.Preempted`` (SIGTERM during training) propagates after its checkpoint is saved,
  so a preempted run never evaluates half-trained adapters.
  """
  # Before the first JAX call (extract_all asks for the process index): later,
  # jax.distributed.initialize() refuses to run and a multihost run could not start.
  train.maybe_initialize_distributed(config.train)
  feats = features.extract_all(config, workdir)                                   # 1
  before = evaluate.stage_before(config, workdir, feats)                           # 2
  mods = list(config.modalities)
  logging.info("Training adapters on %s", {m: feats["train"][m].shape for m in mods})
  result = train.train_adapters(config, {m: feats["train"][m] for m in mods}, workdir)  # 3
  trained = evaluate.stage_trained(                                                # 4, 5
      config, workdir, feats, lambda m, x: result.embed(result.params, m, x), before=before)
  base = evaluate.stage_baselines(config, workdir, feats, before=before)          # 6
  results = {"before": before, "trained": trained, "baselines": base,
             "train": {"history": result.history}}
  report.write_report(results, config, workdir)                                    # 7
  return results
