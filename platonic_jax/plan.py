"""The experiment's stages, built from the config once: typed parameters and derived keys.

This is where the config stops. Every stage gets a typed parameter record read from
the config fields that determine it (and only those), and its key is the hash of those
parameters plus the keys of the stages it reads (``store.inputs`` / ``store.key``):

    features/<split>/<source>    one frozen-feature entry (source: a modality or "ref")
    features/<split>/world       the synthetic world's labels and latents z
    before                       the frozen alignment table
    train                        the trained adapters (checkpoints under train/<key>/)
    trained, <baseline>          the shared spaces (the adapters; each closed-form fit)
    <space>/<evaluator>          alignment, verdict, retrieval, transfer, info, gap, cycle
    layers/sample/<m>, layers    every layer on sampled training rows; the layer choice
                                 (only with modalities.<m>.layer = "auto")
    sweep/tau=<t>[/gap]          one more training per eval.gap_temperatures, its gap

Changing an input changes the keys of exactly the stages that read it and of their
downstream stages; the cadence fields (logging, checkpoints), worker / device counts,
batch sizes of frozen encoders, chunk sizes and directories are not inputs (``Knobs``).
``build(config, view=...)`` lets a test hand each stage's builder its own view of the
config, to check which fields each stage reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from platonic_jax import layer_choice, store
from platonic_jax.evaluation import (alignment, baselines, cycle_eval, modality_gap, retrieval,
                                     transfer, verdict, views)
from platonic_jax.features import params as fparams
from platonic_jax.features.extract import Request

SPLITS = ("train", "test")
TRAINED = "trained"
LAYERS = "layers"                 # the layer choice stage
SAMPLE_PREFIX = "layers/sample/"  # its sampled-layer entries
SWEEP = "sweep/tau="              # the modality-gap temperature sweep's trainings


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  kind: str
  params: Any
  upstream: dict[str, str]     # role -> stage name


@dataclasses.dataclass(frozen=True)
class InfoParams:
  """A baseline's fit report: on the first ``max_samples`` test rows."""
  max_samples: int


@dataclasses.dataclass(frozen=True)
class Knobs:
  """How the work is done, never what it computes (not part of any key)."""
  cadence: "train.Cadence"
  chunk_size: int          # rows per resumable chunk of a feature extraction
  batch_size: int          # rows per compiled step of a frozen encoder
  num_workers: int         # grain decode processes
  data_dir: str            # TFDS files; "" = <workdir>/tfds

  @classmethod
  def from_config(cls, config) -> "Knobs":
    from platonic_jax import train  # noqa: PLC0415 - optax / orbax: not for validation
    return cls(cadence=train.Cadence.from_config(config.train),
               chunk_size=int(config.features.chunk_size),
               batch_size=int(config.encoders.batch_size),
               num_workers=int(config.data.num_workers), data_dir=config.data.data_dir)


@dataclasses.dataclass
class Plan:
  stages: dict[str, Stage]
  keys: dict[str, str]
  docs: dict[str, dict]        # the recorded inputs of each stage
  modalities: tuple[str, ...]  # eval.pair first, then the others by name
  pair: tuple[str, str]
  reference: str               # the reference's display name
  spaces: tuple[str, ...]      # "trained", then each baseline
  knobs: Knobs
  fields: dict[str, str]       # feature source -> the config field of its encoder
  labels: Any                  # report.Labels: display names
  config: dict                 # the whole config, as recorded in report.json

  def evaluators(self, space: str) -> list[Stage]:
    return [s for n, s in self.stages.items() if n.startswith(space + "/")]

  def feature_requests(self) -> dict[str, dict[str, Request]]:
    out = {}
    for split in SPLITS:
      out[split] = self._requests(f"features/{split}/")
    return out

  def sample_requests(self) -> dict[str, Request]:
    """The layer choice's entries: every layer of a source on sampled training rows."""
    return self._requests(SAMPLE_PREFIX)

  def _requests(self, prefix: str) -> dict[str, Request]:
    return {n[len(prefix):]: Request(n[len(prefix):], self.keys[n], self.docs[n], s.params,
                                     self.fields.get(n[len(prefix):], ""))
            for n, s in self.stages.items() if n.startswith(prefix)}


def modality_order(config) -> tuple[str, ...]:
  """``eval.pair`` first, then the other modalities by name (ConfigDict iterates sorted)."""
  pair = tuple(config.eval.pair)
  return pair + tuple(sorted(m for m in config.modalities if m not in pair))


def _feature(config, split: str, name: str) -> fparams.FeatureParams:
  data = fparams.data_from_config(config)
  synthetic = config.data.name == "synthetic"
  if name == views.REF:
    if synthetic:
      return fparams.FeatureParams(split, data, view="reference")
    return fparams.FeatureParams(split, data, encoder=fparams.EncoderParams.from_config(
        config.reference, config.reference.modality, config.encoders))
  if synthetic:
    return fparams.FeatureParams(split, data, view=_synthetic_view(config, data, name))
  # Every caption as a positive: the train split's text entry keeps every caption.
  positives = config.loss.positives if split == "train" and name == "text" else "chosen"
  return fparams.FeatureParams(split, data, encoder=fparams.EncoderParams.from_config(
      config.modalities[name], name, config.encoders), positives=positives)


def _synthetic_view(config, world, name: str) -> str:
  """The world's array for modality ``name``: itself, one of its layers, or "<m>@auto"."""
  if not world.num_layers:
    return name
  layer = config.modalities[name].layer
  if isinstance(layer, str):  # "auto": resolved once the layer choice is made
    return f"{name}@{layer}"
  from platonic_jax.data import synthetic  # noqa: PLC0415
  return synthetic.view_name(name, layer, world.num_layers)


def _layer_sample(config, name: str) -> layer_choice.LayerSampleParams:
  """Every layer of an "auto" modality (a fixed partner: its layer) on sampled rows."""
  data = fparams.data_from_config(config)
  lc = config.layer_choice
  layer = config.modalities[name].layer
  layer = "all" if layer_choice.is_auto(layer) else layer
  encoder = None
  if config.data.name != "synthetic":
    encoder = fparams.EncoderParams.from_config(config.modalities[name], name, config.encoders)
    encoder = dataclasses.replace(encoder, layer="all")  # the sample's `layer` says which
  return layer_choice.LayerSampleParams(data, name, encoder, layer, int(lc.samples),
                                        int(config.seed))


def _layer_choice(config, order) -> layer_choice.LayerChoiceParams:
  lc = config.layer_choice
  layers = {m: config.modalities[m].layer for m in order}
  pair = tuple(config.eval.pair)
  return layer_choice.LayerChoiceParams(
      pair, layer_choice.targets(pair, order, layers), str(lc.k_rule),
      int(lc.k) if lc.k_rule == "fixed" else None)


def _specs(ev):
  return alignment.metric_specs(tuple(ev.metrics), ev.k, tuple(ev.ks), ev.cca_dim,
                                float(ev.approx_recall) or None)


def _calibration(ev) -> alignment.CalibrationParams:
  return alignment.CalibrationParams(int(ev.calibration_K), float(ev.calibration_alpha),
                                     int(ev.seed))


def _alignment(ev) -> alignment.AlignmentParams:
  return alignment.AlignmentParams(_specs(ev), _views(ev), tuple(ev.pair), _calibration(ev),
                                   tuple(int(n) for n in ev.n_curve))


def _views(ev) -> views.ViewParams:
  return views.ViewParams(q=float(ev.q), max_samples=int(ev.max_samples))


def _verdict(ev, baseline: bool) -> verdict.VerdictParams:
  if baseline and not ev.baseline_resample:
    resample, field = 0, "eval.baseline_resample=True"
  else:
    resample, field = int(ev.bootstrap_resample), "eval.bootstrap_resample=100"
  return verdict.VerdictParams(_specs(ev), _views(ev), tuple(ev.pair), int(ev.bootstrap),
                               resample, field, float(ev.ci), int(ev.seed), _calibration(ev))


def _baseline(config, kind: str) -> baselines.BaselineParams:
  if kind == "asif":
    from platonic_jax import asif  # noqa: PLC0415
    return asif.AsifParams(kind, tuple(config.eval.pair), int(config.eval.asif_k),
                           float(config.eval.asif_p), str(config.loss.positives))
  dim = int(config.eval.baseline_dim)
  if dim == 0:
    dim = int(config.adapter.dim)
  return baselines.BaselineParams(kind, dim, tuple(config.eval.pair))


def _gap_params(cfg) -> modality_gap.GapParams:
  return modality_gap.GapParams(tuple(cfg.eval.pair), int(cfg.eval.max_samples))


def build(config, view: Callable[[str, Any], Any] = lambda name, config: config) -> Plan:
  """The plan of ``config`` (already validated: ``platonic_jax.validate``).

  ``view(stage name, config)`` gives each stage's builder the config it reads (tests
  pass a recording proxy); by default the config itself.
  """
  c = view("plan", config)
  order = modality_order(c)
  pair = tuple(c.eval.pair)
  synthetic = c.data.name == "synthetic"
  baseline_kinds = tuple(c.eval.baselines)
  stages: dict[str, Stage] = {}

  def add(name, kind, build_params, upstream=()):
    stages[name] = Stage(name, kind, build_params(view(name, config)), dict(upstream))

  sources = order + (views.REF,)
  # modalities.<m>.layer = "auto": every layer on sampled training rows, then the choice,
  # which the chosen-layer entries of those modalities read. Whether any layer is "auto"
  # is read from the config itself (a layer that is not shapes no stage here: its
  # entries read it); when one is, the plan depends on every modality's layer, read
  # through the view.
  raw = {m: config.modalities[m].layer for m in order}
  choice_targets = layer_choice.targets(pair, order, raw)
  auto_up = {}
  if choice_targets:
    choice_targets = layer_choice.targets(pair, order, {m: c.modalities[m].layer
                                                        for m in order})
    sampled = sorted({m for t in choice_targets for m in (t.modality, t.partner)})
    for m in sampled:
      add(SAMPLE_PREFIX + m, "layer_sample", lambda cfg, m=m: _layer_sample(cfg, m))
    add(LAYERS, "layer_choice", lambda cfg: _layer_choice(cfg, order),
        {f"sample/{m}": SAMPLE_PREFIX + m for m in sampled})
    auto_up = {m: {LAYERS: LAYERS} for m in order if layer_choice.is_auto(c.modalities[m].layer)}
  for split in SPLITS:
    for name in sources:
      add(f"features/{split}/{name}", "features",
          lambda cfg, split=split, name=name: _feature(cfg, split, name), auto_up.get(name, {}))
    if synthetic:
      add(f"features/{split}/world", "world_extras", lambda cfg, split=split:
          fparams.WorldExtrasParams(split, fparams.data_from_config(cfg)))
  test = lambda names: {f"test/{m}": f"features/test/{m}" for m in names}
  trainf = lambda names: {f"train/{m}": f"features/train/{m}" for m in names}
  world = lambda split: {f"{split}/world": f"features/{split}/world"} if synthetic else {}

  add("before", "alignment_before", lambda cfg: _alignment(cfg.eval), test(sources))
  from platonic_jax import train  # noqa: PLC0415 - optax / orbax: not for validation
  add("train", "train", lambda cfg: train.TrainParams.from_config(cfg, order), trainf(order))
  add(TRAINED, "trained_space", lambda cfg: None, {"train": "train"})
  for kind in baseline_kinds:
    up = {**trainf(pair), **(world("train") if kind == "perfect_alignment" else {})}
    add(kind, "baseline", lambda cfg, kind=kind: _baseline(cfg, kind), up)
  sweep = tuple(float(t) for t in c.eval.gap_temperatures)
  for tau in sweep:  # the modality gap against the temperature: one training each
    add(f"{SWEEP}{tau:g}", "train", lambda cfg, tau=tau: train.TrainParams.from_config(
        cfg, order, tau=tau), trainf(order))

  for space in (TRAINED, *baseline_kinds):
    sides = order if space == TRAINED else pair
    base = {"space": space}
    add(f"{space}/alignment", "alignment", lambda cfg: _alignment(cfg.eval),
        {**base, **test(sides + (views.REF,))})
    add(f"{space}/verdict", "verdict",
        lambda cfg, b=space != TRAINED: _verdict(cfg.eval, b),
        {**base, **test(pair + (views.REF,))})
    add(f"{space}/retrieval", "retrieval", lambda cfg: retrieval.RetrievalParams(
        tuple(int(k) for k in cfg.eval.retrieval_ks), int(cfg.eval.max_samples),
        tuple(cfg.eval.pair)), {**base, **test(pair)})
    if synthetic and space != "asif":  # class labels; ASIF: one dimension per anchor
      add(f"{space}/transfer", "transfer", lambda cfg: transfer.TransferParams(
          int(cfg.eval.max_samples), tuple(cfg.eval.pair)),
          {**base, **trainf(pair), **test(pair), **world("train"), **world("test")})
    add(f"{space}/gap", "gap", _gap_params, {**base, **test(pair)})
    if space == TRAINED and c.cycle.modalities:
      cyc = tuple(c.cycle.modalities)
      add(f"{space}/cycle", "cycle", lambda cfg: cycle_eval.CycleEvalParams(
          tuple(cfg.cycle.modalities), tuple(int(k) for k in cfg.eval.retrieval_ks),
          int(cfg.eval.max_samples)), {**base, **test(cyc)})
    if space != TRAINED:
      add(f"{space}/info", "info", lambda cfg: InfoParams(int(cfg.eval.max_samples)),
          {**base, **test(pair), **world("test")})
  for tau in sweep:
    add(f"{SWEEP}{tau:g}/gap", "gap", _gap_params,
        {"space": f"{SWEEP}{tau:g}", **test(pair)})

  keys, docs = {}, {}
  for name, stage in stages.items():  # upstream stages are always added first
    docs[name] = store.inputs(stage.kind, stage.params,
                              {role: keys[u] for role, u in stage.upstream.items()})
    keys[name] = store.key(docs[name])
  from platonic_jax.report.labels import Labels  # noqa: PLC0415
  display = view("display", config)
  fields = {m: f"modalities.{m}.encoder" for m in order}
  fields[views.REF] = "reference.encoder"
  blocks = {**{m: display.modalities[m] for m in order}, views.REF: display.reference}
  labels = Labels(display.reference.name,
                  {m: b.encoder or "synthetic" for m, b in blocks.items()}, display.data.name)
  return Plan(stages, keys, docs, order, pair, display.reference.name,
              (TRAINED, *baseline_kinds), Knobs.from_config(view("knobs", config)), fields,
              labels, config.to_dict())
