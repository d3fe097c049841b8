"""The config checked before any work: every problem in one message.

``check(config)`` raises one ``errors.ConfigError`` listing each bad field with its value
and the allowed values (enumerations, ranges, metric and baseline names, the modalities
the loss, verdict and retrieval refer to). It reads no data, starts no JAX backend and
writes nothing. ``check_sizes(plan, sizes)`` does the checks that need the number of
rows of each split (known before any encoder runs).
"""

from __future__ import annotations

from typing import Mapping

from platonic_jax import errors


def _enum(out, field, value, allowed):
  if value not in allowed:
    out.append(f"{field}={value!r}: allowed {tuple(allowed)}")


def _at_least(out, cfg, prefix, names, minimum):
  for name in names:
    if cfg[name] < minimum:
      out.append(f"{prefix}.{name}={cfg[name]}: must be >= {minimum}")


def _data(config) -> list[str]:
  from platonic_jax import data  # noqa: PLC0415 - TFDS, no jax
  from platonic_jax.data import synthetic  # noqa: PLC0415
  d, out = config.data, []
  _enum(out, "data.name", d.name, data.SOURCES)
  if d.name == "synthetic":
    out += synthetic.config_problems(d.synthetic)
    observed = set(synthetic.modalities(d.synthetic.dims))
    for m in config.modalities:
      blk = config.modalities[m]
      if m not in observed:
        out.append(f"modalities.{m}: the synthetic world has no modality {m!r} (it has "
                   f"{sorted(observed)}; add its width in data.synthetic.dims)")
      for field, default in (("encoder", ""), ("pool", "")):
        if blk[field] != default:
          out.append(f"modalities.{m}.{field}={blk[field]!r}: the synthetic world has no raw "
                     f"inputs to encode; leave it {default!r}")
      out += _synthetic_layer(m, blk.layer, int(d.synthetic.num_layers))
    for field, default in (("encoder", ""), ("layer", -1), ("pool", "")):
      if config.reference[field] != default:
        out.append(f"reference.{field}={config.reference[field]!r}: the synthetic world's "
                   f"reference view has no encoder; leave it {default!r}")
    return out
  if d.name in data.SOURCES:
    _enum(out, "data.caption_policy", d.caption_policy, data.CAPTION_POLICIES)
  if d.num_workers < 0:
    out.append(f"data.num_workers={d.num_workers}: must be >= 0 (0 decodes in-process)")
  from platonic_jax.features import params as fparams  # noqa: PLC0415 - light
  for m in config.modalities:
    if not config.modalities[m].encoder:
      out.append(f"modalities.{m}.encoder is empty: set a hub id or a checkpoint directory "
                 "(only data.name=synthetic has built-in features)")
    if m not in fparams.INPUTS:
      out.append(f"modalities.{m}: {d.name} data has no {m!r} input (it has "
                 f"{fparams.INPUTS})")
  if not config.reference.encoder:
    out.append("reference.encoder is empty: set a hub id or a checkpoint directory")
  _enum(out, "reference.modality", config.reference.modality, fparams.INPUTS)
  return out


def _synthetic_layer(m, layer, num_layers: int) -> list[str]:
  if num_layers < 1:
    if layer != -1:
      return [f"modalities.{m}.layer={layer!r}: the synthetic world's views have no layers; "
              "leave it -1 or set data.synthetic.num_layers (e.g. 4) for layered views"]
    return []
  if layer == "auto" or (isinstance(layer, int) and not isinstance(layer, bool)
                         and -num_layers <= layer < num_layers):
    return []
  return [f"modalities.{m}.layer={layer!r}: allowed 'auto' or a layer in [-{num_layers}, "
          f"{num_layers}) (data.synthetic.num_layers={num_layers})"]


def _layers(config) -> list[str]:
  """modalities.<m>.layer of encoders: an int or "auto"; and the choice's options."""
  from platonic_jax import layer_choice  # noqa: PLC0415 - numpy only
  out = []
  if config.data.name != "synthetic":
    for m in config.modalities:
      layer = config.modalities[m].layer
      if not (layer == "auto" or (isinstance(layer, int) and not isinstance(layer, bool))):
        out.append(f"modalities.{m}.layer={layer!r}: allowed an integer (a hidden state; -1 "
                   "= last) or 'auto' (chosen by mutual k-NN, docs/training.md)")
  return out + layer_choice.config_problems(config, tuple(config.modalities))


def _recipes(config) -> list[str]:
  """loss.positives, adapter.identity, cycle.*: what the data and modalities allow."""
  from platonic_jax import cycle  # noqa: PLC0415
  out, mods = [], tuple(config.modalities)
  if config.loss.positives == "all_captions":
    if config.data.name == "synthetic":
      out.append("loss.positives='all_captions': the synthetic world has one view per "
                 "sample; use a caption dataset (data.name=flickr30k / image_text_folder)")
    elif config.data.caption_policy == "all":
      out.append("loss.positives='all_captions' with data.caption_policy='all': the policy "
                 "already makes one training row per caption (and counts the other "
                 "captions of an image as negatives); use caption_policy='longest'")
    elif "text" not in mods or "image" not in mods:
      out.append("loss.positives='all_captions' needs the modalities 'image' and 'text'")
  widths = None
  if config.data.name == "synthetic":
    dims = config.data.synthetic.dims
    widths = {m: int(dims[m]) for m in mods if m in dims}
  from platonic_jax import adapters  # noqa: PLC0415
  out += [p for p in adapters.config_problems(config.adapter, mods, widths)
          if p.startswith("adapter.identity")]
  return out + cycle.config_problems(config.cycle, mods)


def _encoders(config) -> list[str]:
  out = []
  from platonic_jax.encoders import auto_dtype  # noqa: PLC0415 - light, no jax
  _enum(out, "encoders.dtype", config.encoders.dtype, auto_dtype.CHOICES)
  _at_least(out, config.encoders, "encoders", ("batch_size", "text_max_length"), 1)
  _at_least(out, config.features, "features", ("chunk_size",), 1)
  return out


def _roles(config) -> list[str]:
  from platonic_jax.evaluation import views  # noqa: PLC0415 - numpy only
  mods, out = list(config.modalities), []
  if len(mods) < 2:
    out.append(f"modalities: need at least two, the config has {mods}")
  for m in mods:
    if m in views.RESERVED:
      out.append(f"modalities.{m}: {m!r} is reserved (the reference / mean representation "
                 "in every table); rename the modality")
  pair = tuple(config.eval.pair)
  if len(pair) != 2 or len(set(pair)) != 2 or not set(pair) <= set(mods):
    out.append(f"eval.pair={pair!r}: must name two different modalities of {mods} (the X, Y "
               "of the verdict; retrieval's query and gallery)")
  if not config.reference.name or config.reference.name in mods:
    out.append(f"reference.name={config.reference.name!r}: must be a non-empty name other "
               f"than the modalities {mods}")
  return out


def _training(config) -> list[str]:
  from platonic_jax import adapters, losses  # noqa: PLC0415 - jax / flax, no data
  from platonic_jax import plan  # noqa: PLC0415
  out = adapters.config_problems(config.adapter)
  t = config.train
  _at_least(out, t, "train", ("num_steps", "batch_size", "log_every", "ckpt_every",
                              "keep_ckpts"), 1)
  if t.num_steps >= 1 and not 0 <= t.warmup_steps < t.num_steps:
    out.append(f"train.warmup_steps={t.warmup_steps}: must be in [0, train.num_steps="
               f"{t.num_steps})")
  if not t.lr > 0:
    out.append(f"train.lr={t.lr}: must be > 0")
  for field in ("weight_decay", "grad_clip"):
    if not t[field] >= 0:
      out.append(f"train.{field}={t[field]}: must be >= 0 (grad_clip 0 turns clipping off)")
  pair = tuple(config.eval.pair)
  order = plan.modality_order(config) if set(pair) <= set(config.modalities) else tuple(
      config.modalities)
  return out + losses.config_problems(config.loss, order)


def _evaluation(config) -> list[str]:
  from platonic_jax.evaluation import baselines  # noqa: PLC0415 - numpy only
  from platonic_jax.metrics import registry  # noqa: PLC0415 - jax, no backend start
  ev, out = config.eval, []
  out += registry.selection_problems("eval", ev.metrics, ev.k)
  for name in ("ks", "retrieval_ks"):
    bad = [k for k in ev[name] if int(k) < 1]
    if bad:
      out.append(f"eval.{name}={tuple(ev[name])!r}: every k must be >= 1 (got {bad})")
  if not 0 < ev.q <= 1:
    out.append(f"eval.q={ev.q}: must be a quantile in (0, 1] (1 turns the clamp off)")
  if not 0 < ev.ci < 1:
    out.append(f"eval.ci={ev.ci}: must be in (0, 1)")
  _at_least(out, ev, "eval", ("cca_dim",), 1)
  if not 0 <= ev.approx_recall <= 1:
    out.append(f"eval.approx_recall={ev.approx_recall}: must be 0 (exact top-k) or a "
               "recall target in (0, 1]")
  _at_least(out, ev, "eval", ("bootstrap", "bootstrap_resample", "max_samples",
                              "baseline_dim", "calibration_K"), 0)
  if not 0 < ev.calibration_alpha < 1:
    out.append(f"eval.calibration_alpha={ev.calibration_alpha}: must be a level in (0, 1)")
  low = max([int(ev.k)] + [int(k) for k in ev.ks]) + 2
  bad = [n for n in ev.n_curve if int(n) < low]
  if bad:
    out.append(f"eval.n_curve={tuple(ev.n_curve)!r}: every size must be >= {low} (the "
               f"largest k + 2, so each subset has k + 1 other samples), got {bad}; () "
               "turns the scale curve off")
  unknown = [b for b in ev.baselines if b not in baselines.BASELINES]
  if unknown:
    out.append(f"eval.baselines={tuple(ev.baselines)!r}: unknown {unknown}; allowed (any "
               f"of) {tuple(baselines.BASELINES)}")
  if ev.asif_k < 1:
    out.append(f"eval.asif_k={ev.asif_k}: must be >= 1 (anchors kept per sample)")
  if not ev.asif_p > 0:
    out.append(f"eval.asif_p={ev.asif_p}: must be > 0 (the power of the kept similarities)")
  bad = [t for t in ev.gap_temperatures if not float(t) > 0]
  if bad or len(set(ev.gap_temperatures)) != len(ev.gap_temperatures):
    out.append(f"eval.gap_temperatures={tuple(ev.gap_temperatures)!r}: distinct "
               "temperatures > 0, e.g. (0.01, 0.07, 1.0)")
  return out


def _distributed(config) -> list[str]:
  from platonic_jax import runtime  # noqa: PLC0415
  return runtime.config_problems(config.distributed)


def problems(config) -> list[str]:
  """Every problem of ``config``, one line each (empty when it is usable)."""
  roles = _roles(config)
  out = _data(config) + _encoders(config) + roles + _evaluation(config) + _distributed(config)
  return out + _training(config) + _layers(config) + _recipes(config)


def check(config) -> None:
  """Raises ``errors.ConfigError`` listing every problem of ``config``."""
  found = problems(config)
  if found:
    raise errors.ConfigError(
        f"the config has {len(found)} problem(s):\n" + "\n".join(f"  {p}" for p in found) +
        "\nFix each with --config.FIELD=VALUE (docs/configuration.md lists every field).")


def check_sizes(plan, sizes: Mapping[str, int]) -> None:
  """The checks that need the rows of each split: k and max_samples against the test
  rows, the batch against the train rows. All problems in one ConfigError."""
  out = []
  before = plan.stages["before"].params
  n_test = sizes["test"]
  if before.views.max_samples > n_test:
    out.append(f"eval.max_samples={before.views.max_samples}: the test split has only "
               f"{n_test} rows")
  n = min(before.views.max_samples or n_test, n_test)
  big = [(s.label, s.k) for s in before.metrics if s.k is not None and s.k >= n]
  if big:
    out.append(f"eval.k / eval.ks: k must be smaller than the {n} test samples evaluated, "
               f"but {big} are not; lower them or use more test samples")
  train_params = plan.stages["train"].params
  if train_params.optim.batch_size > sizes["train"]:
    out.append(f"train.batch_size={train_params.optim.batch_size}: larger than the "
               f"{sizes['train']} training rows; lower it")
  if out:
    raise errors.ConfigError(f"the config does not fit the data ({len(out)} problem(s)):\n" +
                             "\n".join(f"  {p}" for p in out))
