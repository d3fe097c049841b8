"""One experiment end to end: ``train_and_evaluate(config, workdir)`` (called by run.py).

1. the config is checked (every problem in one message) and turned into the plan of
   stages with typed parameters and derived keys (``platonic_jax.plan``);
2. frozen features of every source and split (``features.extract_all``);
3. the frozen alignment table ("before");
4. adapter training, checkpointed under ``train/<key>/`` (``train.train_adapters``);
5. every evaluator on the trained space and on each closed-form baseline
   (``evaluation.evaluators``);
6. the report: report.json, report.md, figures, a printed summary (``report``).
Each stage stores its result under the key of its inputs, so re-running the same command
resumes, a finished run is a no-op, and a changed field recomputes exactly what depends
on it. See docs/experiment.md for what each number means.
"""

from __future__ import annotations

import contextlib
import os

from absl import logging

from platonic_jax import plan as plan_lib
from platonic_jax import store, validate
from platonic_jax import workdir as workdir_lib

TRAIN_DIR = "train"


def train_and_evaluate(config, workdir: str):
  """Runs (or resumes) every stage; returns the ``evaluation.records.Results``.

  The config is validated before any work (``errors.ConfigError`` lists every bad
  field); the workdir is locked for the run (``errors.WorkdirBusy`` if another process
  holds it). ``train.Preempted`` (SIGTERM during training) propagates after its
  checkpoint is saved, so a preempted run never evaluates half-trained adapters.
  """
  validate.check(config)
  plan = plan_lib.build(config)
  import jax  # noqa: PLC0415 - after validation: a bad config costs no backend start
  write = jax.process_index() == 0
  with workdir_lib.lock(workdir) if write else contextlib.nullcontext():
    return run(plan, workdir, write=write)


def train_dir(workdir: str, key: str) -> str:
  return os.path.join(workdir, TRAIN_DIR, key)


class _LazyBaseline:
  """A baseline space fitted on first use: a re-run whose results are all stored never
  refits (seconds to a minute on 20k rows)."""

  def __init__(self, stage, train_split):
    from platonic_jax.evaluation import baselines  # noqa: PLC0415
    self.name, self.modalities = stage.name, stage.params.pair
    self._fit = lambda: baselines.BASELINES[stage.params.kind](stage.params, train_split)
    self._space = None

  def _get(self):
    if self._space is None:
      logging.info("baseline %s: fitting", self.name)
      self._space = self._fit()
    return self._space

  def embed(self, modality, x):
    return self._get().embed(modality, x)

  def info(self, test, n):
    return self._get().info(test, n)


def run(plan: plan_lib.Plan, workdir: str, *, write: bool = True):
  """The stages of ``plan`` in ``workdir`` (see the module docstring)."""
  from platonic_jax import features, report, train  # noqa: PLC0415
  from platonic_jax.evaluation import alignment, evaluators, records, views  # noqa: PLC0415
  k = plan.knobs
  requests = plan.feature_requests()
  data_dir = k.data_dir or os.path.join(workdir, "tfds")
  validate.check_sizes(plan, features.split_sizes(requests, data_dir, workdir=workdir))
  splits = features.extract_all(requests, workdir, chunk_size=k.chunk_size,
                                batch_size=k.batch_size, num_workers=k.num_workers,
                                data_dir=data_dir, write=write)

  def cached(stage, compute, result_type):
    return store.cached(workdir, stage.name, plan.keys[stage.name], plan.docs[stage.name],
                        compute, result_type, write=write)

  ctx = evaluators.Context(train=splits["train"], test=splits["test"],
                           frozen=views.Frozen(splits["test"].views))
  before = plan.stages["before"]
  ctx.before = cached(before, lambda: alignment.frozen_table(before.params, ctx.frozen,
                                                             plan.modalities),
                      records.AlignmentTable)
  stage = plan.stages["train"]
  logging.info("Training adapters on %s",
               {m: splits["train"].views[m].shape for m in plan.modalities})
  result = train.train_adapters(
      stage.params, {m: splits["train"].views[m] for m in plan.modalities},
      train_dir(workdir, plan.keys["train"]), cadence=k.cadence, inputs=plan.docs["train"])
  spaces = [evaluators.TrainedSpace(result, plan.modalities)]
  spaces += [_LazyBaseline(plan.stages[name], splits["train"]) for name in plan.spaces[1:]]
  results = tuple(evaluators.evaluate_space(s, plan.evaluators(s.name), ctx, cached)
                  for s in spaces)
  history = tuple(records.LogRecord(step=int(h["step"]), loss=h["loss"],
                                    grad_norm=h["grad_norm"], lr=h["lr"],
                                    steps_per_s=h["steps_per_s"], tau=h.get("tau"))
                  for h in result.history)
  res = records.Results(plan.modalities, plan.pair, ctx.before, results, history)
  if write:
    report.write_report(res, plan.labels, workdir, config=plan.config, keys=plan.keys)
  return res
