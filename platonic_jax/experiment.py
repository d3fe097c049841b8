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

import numpy as np
from absl import logging

from platonic_jax import errors
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
    if stage.params.kind in baselines.JOINT_SPACES:  # one dimension per anchor (ASIF)
      self.joint = lambda embeddings: self._get().joint(embeddings)

  def _get(self):
    if self._space is None:
      logging.info("baseline %s: fitting", self.name)
      self._space = self._fit()
    return self._space

  def embed(self, modality, x):
    return self._get().embed(modality, x)

  def info(self, test, n):
    return self._get().info(test, n)


def training_inputs(params, split):
  """(features, rows, groups) of ``train.train_adapters`` for the train ``split``: with
  every caption a positive, one training row per caption (its image's row read through
  ``rows``, the image as its group); else the split's rows as they are."""
  views = {m: split.views[m] for m in params.modalities}
  if params.loss.positives != "all_captions":
    return views, None, None
  owner = split.caption_image
  if owner is None or not split.captions:
    raise errors.CacheError("loss.positives=all_captions: the train split's text entry has no "
                            "captions; delete its feature entry to re-extract")
  feats = {m: split.captions.get(m, x) for m, x in views.items()}
  rows = {m: np.asarray(owner) for m in params.modalities if m not in split.captions}
  return feats, rows, np.asarray(owner)


def run(plan: plan_lib.Plan, workdir: str, *, write: bool = True):
  """The stages of ``plan`` in ``workdir`` (see the module docstring)."""
  from platonic_jax import features, layer_choice, report, train  # noqa: PLC0415
  from platonic_jax.evaluation import alignment, evaluators, records, views  # noqa: PLC0415
  from platonic_jax.evaluation import recipe_records  # noqa: PLC0415
  k = plan.knobs
  requests = plan.feature_requests()
  data_dir = k.data_dir or os.path.join(workdir, "tfds")
  validate.check_sizes(plan, features.split_sizes(requests, data_dir, workdir=workdir))

  def cached(stage, compute, result_type):
    return store.cached(workdir, stage.name, plan.keys[stage.name], plan.docs[stage.name],
                        compute, result_type, write=write)

  choice = None
  if plan_lib.LAYERS in plan.stages:  # modalities.<m>.layer = "auto"
    samples = layer_choice.extract_samples(plan.sample_requests(), workdir,
                                           batch_size=k.batch_size, num_workers=k.num_workers,
                                           data_dir=data_dir, write=write)
    st = plan.stages[plan_lib.LAYERS]
    choice = cached(st, lambda: layer_choice.choose(st.params, samples),
                    recipe_records.LayerChoice)
    requests = layer_choice.resolve(requests, choice)
  splits = features.extract_all(requests, workdir, chunk_size=k.chunk_size,
                                batch_size=k.batch_size, num_workers=k.num_workers,
                                data_dir=data_dir, write=write)

  ctx = evaluators.Context(train=splits["train"], test=splits["test"],
                           frozen=views.Frozen(splits["test"].views))
  before = plan.stages["before"]
  ctx.before = cached(before, lambda: alignment.frozen_table(before.params, ctx.frozen,
                                                             plan.modalities),
                      records.AlignmentTable)
  stage = plan.stages["train"]
  logging.info("Training adapters on %s",
               {m: splits["train"].views[m].shape for m in plan.modalities})
  feats, rows, groups = training_inputs(stage.params, splits["train"])
  dims = {m: x.shape[1] for m, x in feats.items()}

  def trained(name):
    st = plan.stages[name]
    r = train.train_adapters(st.params, feats, train_dir(workdir, plan.keys[name]),
                             cadence=k.cadence, inputs=plan.docs[name], rows=rows,
                             groups=groups)
    return evaluators.TrainedSpace(r, plan.modalities, train.initial_params(st.params, dims),
                                   name=plan_lib.TRAINED if name == "train" else name)

  space = trained("train")
  result = space.result
  spaces = [space] + [_LazyBaseline(plan.stages[name], splits["train"])
                      for name in plan.spaces[1:]]
  results = tuple(evaluators.evaluate_space(s, plan.evaluators(s.name), ctx, cached)
                  for s in spaces)
  sweep = []
  for name, st in plan.stages.items():  # eval.gap_temperatures
    if name.startswith(plan_lib.SWEEP) and st.kind == "train":
      logging.info("modality-gap sweep: training at tau=%g", st.params.loss.tau)
      swept = evaluators.evaluate_space(trained(name), plan.evaluators(name), ctx, cached)
      sweep.append(recipe_records.GapSweepEntry(st.params.loss.tau, swept.gap))
  history = tuple(records.LogRecord(step=int(h["step"]), loss=h["loss"],
                                    grad_norm=h["grad_norm"], lr=h["lr"],
                                    steps_per_s=h["steps_per_s"], tau=h.get("tau"))
                  for h in result.history)
  res = records.Results(plan.modalities, plan.pair, ctx.before, results, history,
                        layer_choice=choice, gap_sweep=tuple(sweep))
  if write:
    report.write_report(res, plan.labels, workdir, config=plan.config, keys=plan.keys)
  return res
