"""The sweep's stages, built from the config once: typed parameters and derived keys
(the same architecture as the adapter experiment's ``platonic_jax.plan``).

    features/<modality>/<model>            one feature entry per model (every layer)
    info/<modality>/<model>                its parameter count, bits per byte, widths
    scores/<metric>/<language>/<vision>    one metric of one pair, calibrated

A stage's key is the hash of its parameters and its upstream keys (``store.inputs``):
changing ``scores.k`` re-scores the k-NN metrics and CKNNA and nothing else; changing
``data.caption_idx`` re-extracts the language models alone; adding a model adds its
stages and leaves every other key alone. Cadence and placement fields
(``features.batch_size``, ``chunk_size``, ``model_parallel``, ``report.top``) are not
inputs (``Knobs``). A release ``.pt`` file's key hashes its path, size and modification
time: replacing the file re-scores its pairs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable

from platonic_jax import store
from platonic_jax.metrics import registry
from platonic_jax.prh import data as data_lib
from platonic_jax.prh import models as models_lib

FEATURES, INFO, SCORES = "features", "info", "scores"


@dataclasses.dataclass(frozen=True)
class ExtractParams:
  """Features extracted here by a Flax encoder: every layer of ``model`` on the pairs."""
  TAGGED = True
  model: str              # as configured; a directory as its real path
  modality: str           # "vision" | "language"
  data: data_lib.PrhSource
  caption_idx: int | None  # language models only
  dtype: str
  max_length: int | None   # language models only


@dataclasses.dataclass(frozen=True)
class ReleaseFileParams:
  """Features read from a release ``.pt`` file (``features.source``)."""
  TAGGED = True
  path: str
  size: int
  mtime_ns: int


@dataclasses.dataclass(frozen=True)
class CalibrationParams:
  K: int
  alpha: float
  seed: int


@dataclasses.dataclass(frozen=True)
class ScoreParams:
  """One metric on one pair: the options it takes (k, cca_dim), the clamp, calibration."""
  metric: str
  options: tuple[tuple[str, Any], ...]
  q: float
  exact: bool
  calibration: CalibrationParams | None


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  kind: str
  params: Any
  upstream: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Model:
  name: str
  modality: str
  slug: str

  @property
  def features(self) -> str:
    return f"{FEATURES}/{self.modality}/{self.slug}"

  @property
  def info(self) -> str:
    return f"{INFO}/{self.modality}/{self.slug}"


@dataclasses.dataclass(frozen=True)
class Knobs:
  """How the work is done, never what it computes (no key reads them)."""
  batch_size: int
  chunk_size: int
  model_parallel: int
  top: int


@dataclasses.dataclass
class Plan:
  stages: dict[str, Stage]
  keys: dict[str, str]
  docs: dict[str, dict]
  language: tuple[Model, ...]
  vision: tuple[Model, ...]
  metrics: tuple[str, ...]
  knobs: Knobs
  config: dict

  def score_stage(self, metric: str, language: Model, vision: Model) -> Stage:
    return self.stages[score_name(metric, language, vision)]


def slug(name: str) -> str:
  """A model's directory name: a hub id with "/" as "__"; a local directory as its
  basename plus 8 hex digits of its real path (two directories may share a basename)."""
  if models_lib.is_local(name):
    real = os.path.realpath(os.path.expanduser(name))
    return f"{os.path.basename(real)}-{hashlib.sha256(real.encode()).hexdigest()[:8]}"
  return name.replace("/", "__")


def score_name(metric: str, language: Model, vision: Model) -> str:
  return f"{SCORES}/{metric}/{language.slug}/{vision.slug}"


def metric_options(metric: str, k: int, cca_dim: int) -> tuple[tuple[str, Any], ...]:
  """The options the sweep passes ``metric``: k where it takes one, SVCCA's directions
  (capped at the features' ranks, as the experiment's), the registry's defaults else."""
  opts = registry.get(metric).pipeline_options({"k": int(k), "cca_dim": int(cca_dim)})
  return tuple(sorted(opts.items()))


def model_lists(config) -> tuple[tuple[str, ...], tuple[str, ...]]:
  m = config.models
  return models_lib.resolve_set(m.set, tuple(m.language), tuple(m.vision))


def release_file(source: str, name: str, modality: str, caption_idx: int) -> str:
  return os.path.join(source, models_lib.release_filename(name, modality, caption_idx))


def _feature_params(config, name: str, modality: str):
  f = config.features
  if f.source:
    path = os.path.realpath(release_file(os.path.expanduser(f.source), name, modality,
                                         int(config.data.caption_idx)))
    st = os.stat(path)
    return ReleaseFileParams(path, int(st.st_size), int(st.st_mtime_ns))
  language = modality == models_lib.LANGUAGE
  model = os.path.realpath(os.path.expanduser(name)) if models_lib.is_local(name) else name
  return ExtractParams(
      model=model, modality=modality, data=data_lib.PrhSource.from_config(config.data),
      caption_idx=int(config.data.caption_idx) if language else None,
      dtype=f.language_dtype if language else f.vision_dtype,
      max_length=int(f.text_max_length) if language else None)


def _score_params(config, metric: str) -> ScoreParams:
  s = config.scores
  cal = (CalibrationParams(int(s.calibration_K), float(s.calibration_alpha),
                           int(s.calibration_seed)) if s.calibration_K > 0 else None)
  return ScoreParams(metric, metric_options(metric, s.k, s.cca_dim), float(s.q),
                     bool(s.exact), cal)


def build(config, view: Callable[[str, Any], Any] = lambda name, config: config) -> Plan:
  """The plan of ``config`` (already validated: ``prh.validate.check``); ``view(stage
  name, config)`` gives each builder the config it reads (tests pass a recorder)."""
  c = view("plan", config)
  language_names, vision_names = model_lists(c)
  language = tuple(Model(n, models_lib.LANGUAGE, slug(n)) for n in language_names)
  vision = tuple(Model(n, models_lib.VISION, slug(n)) for n in vision_names)
  metric_names = tuple(c.scores.metrics)
  stages: dict[str, Stage] = {}

  def add(name, kind, build_params, upstream=()):
    stages[name] = Stage(name, kind, build_params(view(name, config)), dict(upstream))

  for m in language + vision:
    add(m.features, "prh_features",
        lambda cfg, m=m: _feature_params(cfg, m.name, m.modality))
    add(m.info, "prh_model_info", lambda cfg: None, {"features": m.features})
  for metric in metric_names:
    for lm in language:
      for vm in vision:
        add(score_name(metric, lm, vm), "prh_score",
            lambda cfg, metric=metric: _score_params(cfg, metric),
            {"language": lm.features, "vision": vm.features})
  keys, docs = {}, {}
  for name, stage in stages.items():  # upstream stages are always added first
    docs[name] = store.inputs(stage.kind, stage.params,
                              {role: keys[u] for role, u in stage.upstream.items()})
    keys[name] = store.key(docs[name])
  k = view("knobs", config)
  knobs = Knobs(int(k.features.batch_size), int(k.features.chunk_size),
                int(k.features.model_parallel), int(k.report.top))
  return Plan(stages, keys, docs, language, vision, metric_names, knobs, config.to_dict())
