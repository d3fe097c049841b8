"""The study's sweep end to end: ``run(config, workdir)`` (run.py calls it for
``experiment = "prh"``).

1. the config is checked (every problem in one message) and planned (``prh.plan``);
2. features of every model that some unfinished score still needs: extracted one model
   at a time (``prh.extract``), or read from the release's ``.pt`` files;
3. each model's info (parameter count, bits per byte, widths) stored once;
4. every (metric, language, vision) score, each stored as it finishes (``prh.scoring``):
   language models outer, each loaded once; the vision models' structures kept;
5. the report in ``<workdir>/report/`` (``prh.report``), rewritten every run.

Every result sits under the key of its inputs (``store.cached``): re-running resumes
where a kill left it, a finished sweep recomputes nothing and loads no model, and SIGTERM
stops after the chunk or score in hand with everything finished saved (exit 0).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from platonic_jax import store
from platonic_jax import workdir as workdir_lib
from platonic_jax.features.store import Entry
from platonic_jax.prh import plan as plan_lib
from platonic_jax.prh import records, release_files, validate
from platonic_jax.prh.preempt import Stop

log = logging.info


def _features(plan: plan_lib.Plan, workdir: str, model: plan_lib.Model
              ) -> release_files.LayerFeatures:
  """One model's features from its entry or its release file (checked finite)."""
  p = plan.stages[model.features].params
  if isinstance(p, plan_lib.ReleaseFileParams):
    return release_files.load(p.path)
  entry = Entry(workdir, plan.keys[model.features], plan.docs[model.features])
  arrays = entry.load()
  layers = np.ascontiguousarray(np.moveaxis(arrays["feats"], 1, 0))  # [N, L, D] -> [L, N, D]
  release_files.check_finite(layers, f"{model.modality} model {model.name!r} ({entry.root})")
  mean = lambda k: float(np.mean(arrays[k], dtype=np.float64)) if k in arrays else None  # noqa
  return release_files.LayerFeatures(layers, int(arrays["num_params"][0]), mean("bpb"),
                                     mean("loss"), entry.root)


def _info(model: plan_lib.Model, feats: release_files.LayerFeatures) -> records.ModelInfo:
  from platonic_jax.prh import models as models_lib  # noqa: PLC0415
  return records.ModelInfo(
      name=model.name, modality=model.modality,
      family=models_lib.family(model.name, model.modality), num_params=feats.num_params,
      num_layers=feats.num_layers, dims=tuple(int(x.shape[1]) for x in feats.layers),
      bpb=feats.bpb, loss=feats.loss, origin=feats.origin)


class _Models:
  """Each model's info and scoring structures, computed on first use: the raw features
  are read from disk when a model is first prepared (and its info stored then), and a
  prepared model is kept while it is needed (vision models: the whole sweep; a language
  model: its row)."""

  def __init__(self, plan, workdir, write):
    self.plan, self.workdir, self.write = plan, workdir, write
    self._prepared: dict[str, object] = {}
    self.n: dict[str, int] = {}

  def info(self, model, feats=None) -> records.ModelInfo:
    stage = self.plan.stages[model.info]
    compute = lambda: _info(model, feats or _features(self.plan, self.workdir, model))  # noqa
    return store.cached(self.workdir, stage.name, self.plan.keys[stage.name],
                        self.plan.docs[stage.name], compute, records.ModelInfo,
                        write=self.write, log=lambda m: None)

  def prepared(self, model, params):
    from platonic_jax.prh import scoring  # noqa: PLC0415 - jax
    if model.features not in self._prepared:
      t0 = time.perf_counter()
      feats = _features(self.plan, self.workdir, model)
      self._check_n(model, feats)
      self.info(model, feats)
      self._prepared[model.features] = scoring.prepare_model(model.name, feats, params)
      log(f"scores: prepared {model.name} ({feats.num_layers} layers) in "
          f"{time.perf_counter() - t0:.1f} s")
    return self._prepared[model.features]

  def drop(self, model) -> None:
    self._prepared.pop(model.features, None)

  def _check_n(self, model, feats) -> None:
    from platonic_jax import errors  # noqa: PLC0415
    for name, n in self.n.items():
      if n != feats.num_samples:
        raise errors.InputError(
            f"{feats.origin} ({model.name}) has {feats.num_samples} samples but {name} has "
            f"{n}: every model must be measured on the same pairs (row i = pair i). "
            "Re-extract the odd one on the same data (data.num_samples) or drop it")
    self.n[model.name] = feats.num_samples


def _pending(plan, workdir, names) -> list[str]:
  """The stages of ``names`` without a stored result of the same inputs."""
  return [n for n in names if not store.is_stored(workdir, n, plan.keys[n], plan.docs[n])]


class _Pair:
  """The scorer of one (vision, language) pair, built on first use (a pair whose scores
  are all stored loads nothing)."""

  def __init__(self, models, lm, vm, params):
    self._get = lambda: (models.prepared(vm, params), models.prepared(lm, params))
    self._scorer = None

  def score(self, p, perms_for, language_name, vision_name):
    from platonic_jax.prh import pair_scores, scoring  # noqa: PLC0415 - jax
    vis, lang = self._get()
    perms = perms_for(p, lang.layers[0].shape[0])
    if self._scorer is None and vis.stats is not None:
      self._scorer = pair_scores.PairScorer(vis.stats, lang.stats)
    return scoring.score_pair(p, vis, lang, scorer=self._scorer, perms=perms,
                              language_name=language_name, vision_name=vision_name)


def _score_all(plan, workdir, models: _Models, stop: Stop, write: bool
               ) -> dict[str, records.PairScore]:
  """Every score stage, read back or computed (language models outer: each is prepared
  once; the vision models' structures are kept across rows)."""
  from platonic_jax.metrics import calibration  # noqa: PLC0415 - jax
  perms: dict[tuple[int, int, int], np.ndarray] = {}

  def perms_for(p, n: int):
    if not p.calibration:
      return None
    key = (p.calibration.K, n, p.calibration.seed)
    if key not in perms:  # one set for the whole sweep: every pair, metric and layer
      perms[key] = calibration.permutations(*key)
    return perms[key]

  names = [n for n, s in plan.stages.items() if s.kind == "prh_score"]
  todo = len(_pending(plan, workdir, names))
  out: dict[str, records.PairScore] = {}
  t0 = time.perf_counter()
  done = 0
  for lm in plan.language:
    params = [plan.score_stage(m, lm, plan.vision[0]).params for m in plan.metrics]
    for vm in plan.vision:
      pair = _Pair(models, lm, vm, params)
      fresh = _pending(plan, workdir, [plan.score_stage(m, lm, vm).name for m in plan.metrics])
      for metric in plan.metrics:
        stage = plan.score_stage(metric, lm, vm)
        compute = lambda p=stage.params, pair=pair: pair.score(  # noqa: E731
            p, perms_for, lm.name, vm.name)
        out[stage.name] = store.cached(workdir, stage.name, plan.keys[stage.name],
                                       plan.docs[stage.name], compute, records.PairScore,
                                       write=write, log=lambda m: None)
        stop.check(f"after scoring {lm.name} x {vm.name} ({metric})")
      if fresh:
        done += len(fresh)
        log(f"scores: {lm.name} x {vm.name}: {len(fresh)} metric(s) ({done}/{todo} new, "
            f"{time.perf_counter() - t0:.0f} s)")
    models.drop(lm)
  return out


def run(config, workdir: str) -> records.Sweep:
  """Runs (or resumes) the sweep of ``config`` in ``workdir``; returns its records."""
  validate.check(config)
  plan = plan_lib.build(config)
  import jax  # noqa: PLC0415 - after validation: a bad config costs no backend start
  write = jax.process_index() == 0
  with workdir_lib.lock(workdir), Stop() as stop:
    return _run(plan, workdir, config, stop, write)


def _run(plan, workdir, config, stop, write) -> records.Sweep:
  from platonic_jax.prh import data as data_lib  # noqa: PLC0415
  from platonic_jax.prh import extract, report  # noqa: PLC0415
  models = _Models(plan, workdir, write)
  all_models = plan.language + plan.vision
  scores = [n for n, s in plan.stages.items() if s.kind == "prh_score"]
  pending_scores = _pending(plan, workdir, scores)
  needed = {plan.stages[n].upstream[r] for n in pending_scores for r in ("language", "vision")}
  needed |= {m.features for m in all_models if _pending(plan, workdir, [m.info])}
  to_extract = [m for m in all_models if m.features in needed and
                isinstance(plan.stages[m.features].params, plan_lib.ExtractParams)]
  if to_extract:
    src = plan.stages[to_extract[0].features].params.data

    def load_pairs():
      pairs = data_lib.load(src)
      if any(m.modality == "vision" for m in to_extract):
        data_lib.decode_check(pairs)
      log(f"data: {len(pairs)} pairs from {src.describe()} ({len(pairs.files)} file(s))")
      return pairs

    extract.extract_missing(plan, workdir, to_extract, stop=stop, load_pairs=load_pairs)
  by_name = _score_all(plan, workdir, models, stop, write)
  infos = {m.name: models.info(m) for m in all_models}
  results = [by_name[n] for n in scores]
  sweep = records.Sweep(tuple(infos[m.name] for m in plan.language),
                        tuple(infos[m.name] for m in plan.vision), plan.metrics, tuple(results))
  if write:
    report.write(sweep, workdir, config=plan.config, keys=plan.keys, top=plan.knobs.top)
  return sweep
