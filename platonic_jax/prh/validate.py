"""The sweep's config checked before any work: every problem in one message.

Reads no data, starts no JAX backend, writes nothing; looks at the file system only for
``data.path`` and ``features.source`` (a release feature directory must hold every
configured model's file, named as the release's ``utils.to_feature_filename``).
"""

from __future__ import annotations

import os

from platonic_jax import errors
from platonic_jax.metrics import registry
from platonic_jax.prh import models as models_lib
from platonic_jax.prh import plan as plan_lib

DTYPES = ("float32", "bfloat16")


def _models(config, out: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
  m = config.models
  if m.set not in ("", *models_lib.SETS):
    out.append(f"models.set={m.set!r}: allowed {('',) + tuple(models_lib.SETS)} (the release's "
               "model sets; '' = only models.vision and models.language)")
    return (), ()
  language, vision = plan_lib.model_lists(config)
  for field, names in (("models.language", language), ("models.vision", vision)):
    if not names:
      out.append(f"{field} is empty (models.set={m.set!r} lists none): name at least one "
                 "model, e.g. --config." + field + "=\"('owner/name',)\"")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
      out.append(f"{field}: {bad} are not model names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
      out.append(f"{field}: {dup} listed twice")
  slugs = [plan_lib.slug(n) for n in language + vision if isinstance(n, str) and n.strip()]
  clash = sorted({s for s in slugs if slugs.count(s) > 1})
  if clash and not any("listed twice" in p for p in out):
    out.append(f"models: two models share the name {clash} (a hub id and a directory?)")
  return language, vision


def _source(config, language, vision, out: list[str]) -> None:
  src = config.features.source
  if not src:
    return
  d = os.path.expanduser(src)
  if not os.path.isdir(d):
    out.append(f"features.source={src!r} is not a directory; point it at the release's feature "
               "directory (extract_features.py's results/features/<dataset>/<subset>)")
    return
  missing = [plan_lib.release_file(d, n, mod, int(config.data.caption_idx))
             for mod, names in ((models_lib.LANGUAGE, language), (models_lib.VISION, vision))
             for n in names if isinstance(n, str)]
  missing = [p for p in missing if not os.path.isfile(p)]
  if missing:
    out.append(f"features.source={src!r} lacks {len(missing)} feature file(s): "
               f"{[os.path.basename(p) for p in missing[:8]]}"
               f"{' ...' if len(missing) > 8 else ''} (named as the release's "
               "utils.to_feature_filename: language '<id with / as _>_pool-avg.pt', vision "
               "'<timm name>_pool-cls.pt'); extract them with extract_features.py or drop "
               "those models from models.language / models.vision")


def problems(config) -> list[str]:
  out: list[str] = []
  if config.experiment != "prh":
    out.append(f"experiment={config.experiment!r}: this schema is the 'prh' sweep's")
  d, f, s = config.data, config.features, config.scores
  for field in ("repo", "revision", "split"):
    if not d[field]:
      out.append(f"data.{field} is empty")
  if d.path and not os.path.isdir(os.path.expanduser(d.path)):
    out.append(f"data.path={d.path!r} is not a directory (a local copy of {d.repo}, or '' "
               "for the hub)")
  if d.caption_idx < 0:
    out.append(f"data.caption_idx={d.caption_idx}: must be >= 0")
  language, vision = _models(config, out)
  for field in ("vision_dtype", "language_dtype"):
    if f[field] not in DTYPES:
      out.append(f"features.{field}={f[field]!r}: allowed {DTYPES}")
  for field in ("text_max_length", "batch_size", "chunk_size"):
    if f[field] < 1:
      out.append(f"features.{field}={f[field]}: must be >= 1")
  if f.model_parallel < 0:
    out.append(f"features.model_parallel={f.model_parallel}: must be >= 0 (0 = automatic)")
  _source(config, language, vision, out)
  out += registry.selection_problems("scores", s.metrics, s.k)
  if d.num_samples < 4 or d.num_samples <= s.k:
    out.append(f"data.num_samples={d.num_samples}: must be >= 4 and > scores.k={s.k}")
  if not 0 < s.q <= 1:
    out.append(f"scores.q={s.q}: must be a quantile in (0, 1] (1 turns the clamp off)")
  if s.cca_dim < 1:
    out.append(f"scores.cca_dim={s.cca_dim}: must be >= 1")
  if s.calibration_K < 0:
    out.append(f"scores.calibration_K={s.calibration_K}: must be >= 0 (0 = no calibration)")
  if not 0 < s.calibration_alpha < 1:
    out.append(f"scores.calibration_alpha={s.calibration_alpha}: must be in (0, 1)")
  if config.report.top < 1:
    out.append(f"report.top={config.report.top}: must be >= 1")
  return out


def check(config) -> None:
  """Raises ``errors.ConfigError`` listing every problem of the sweep's ``config``."""
  found = problems(config)
  if found:
    raise errors.ConfigError(
        f"the config has {len(found)} problem(s):\n" + "\n".join(f"  {p}" for p in found) +
        "\nFix each with --config.FIELD=VALUE (docs/prh.md lists every field).")
