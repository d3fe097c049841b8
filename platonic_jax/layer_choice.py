"""``modalities.<m>.layer = "auto"``: each encoder's layer chosen by its alignment.

STRUCTURE's rule (Gröger et al., NeurIPS 2025, arXiv 2506.16895, Sec. 4 "which layers to
align"; public code ``compute_score`` of ``src/measure_alignment.py`` and
``AlignmentTrainer``'s layer selection): on a random sample of training pairs
(``layer_choice.samples``, 5000 in their configs), the features of every layer of one
encoder are compared with those of the other modality by mutual k-NN (rows
l2-normalised, k by ``layer_choice.k_rule``: their default "rice" = ceil(2 n^(1/3)), or
"sqrt" ceil(√n), "sturges" ceil(log2 n + 1), "fixed" = ``layer_choice.k``), and the pair
of layers with the highest score is aligned (``best_only``). Here:

- both ``eval.pair`` sides "auto": the argmax over every (layer, layer) pair;
- one side "auto": the argmax over its layers against the other side's fixed layer;
- a further modality (e.g. ``audio``) "auto": against ``eval.pair``'s first side (at its
  chosen layer when that is "auto" too).
Ties go to the earlier layers. The features of every layer of an "auto" modality (and of
a fixed partner's layer) are extracted once, for the sampled rows only
(``layers/sample/<m>`` entries: one [S, D_l] array per layer, as ResNet stages differ in
width); then each modality's entries are extracted at the chosen layer (their keys hold
"auto" and the choice's key).
The report lists every layer's score beside the choice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Mapping

import numpy as np

from platonic_jax import errors
from platonic_jax.data import synthetic
from platonic_jax.evaluation.recipe_records import LayerChoice, LayerChoiceEntry
from platonic_jax.features import params as fparams
from platonic_jax.features.store import Entry

AUTO = "auto"
K_RULES = ("rice", "sqrt", "sturges", "fixed")
LAYER = "layer_{}"           # an entry's arrays: [S, D_l] for each sampled layer l
ROWS = "rows"                # and the sampled training rows [S]
SAMPLE_SEED = 7              # the row sample's stream: default_rng([seed, 7])


def is_auto(layer) -> bool:
  return isinstance(layer, str) and layer == AUTO


@dataclasses.dataclass(frozen=True)
class LayerSampleParams:
  """One source's ``layer`` ("all", or a fixed partner's layer) on ``size`` training
  rows drawn with ``seed``. ``encoder``: the encoder (None: the synthetic world's
  layered views)."""
  data: fparams.DataParams
  source: str
  encoder: fparams.EncoderParams | None
  layer: int | str
  size: int
  seed: int


@dataclasses.dataclass(frozen=True)
class Target:
  """One choice: ``modality``'s layer against ``partner`` (chosen jointly when
  ``partner_auto``, else at ``partner_layer``)."""
  modality: str
  partner: str
  partner_auto: bool
  partner_layer: int | None


@dataclasses.dataclass(frozen=True)
class LayerChoiceParams:
  pair: tuple[str, str]     # eval.pair: whose partner each modality is
  targets: tuple[Target, ...]
  k_rule: str
  k: int | None      # "fixed" only


def k_of(rule: str, n: int, k: int | None = None) -> int:
  """The k of mutual k-NN for n sampled rows (STRUCTURE's rules)."""
  if rule == "rice":
    return int(math.ceil(2 * n ** (1 / 3)))
  if rule == "sqrt":
    return int(math.ceil(math.sqrt(n)))
  if rule == "sturges":
    return int(math.ceil(math.log2(n) + 1))
  if rule == "fixed":
    return int(k)
  raise errors.ConfigError(f"layer_choice.k_rule={rule!r}: allowed {K_RULES}")


def targets(pair: tuple[str, str], order, layers: Mapping) -> tuple[Target, ...]:
  """The choices to make, given every modality's configured ``layers`` value."""
  auto = [m for m in order if is_auto(layers[m])]
  out = []
  x, y = pair
  for m in auto:
    partner = (y if m == x else x) if m in pair else x
    if m == y and is_auto(layers[x]):
      continue  # chosen jointly with x
    p_auto = is_auto(layers[partner])
    out.append(Target(m, partner, p_auto, None if p_auto else int(layers[partner])))
  return tuple(out)


def config_problems(config, order) -> list[str]:
  lc, out = config.layer_choice, []
  if not any(is_auto(config.modalities[m].layer) for m in config.modalities):
    return out
  if lc.k_rule not in K_RULES:
    out.append(f"layer_choice.k_rule={lc.k_rule!r}: allowed {K_RULES}")
  if lc.samples < 8:
    out.append(f"layer_choice.samples={lc.samples}: must be >= 8 training pairs")
  elif lc.k_rule == "fixed" and not 1 <= lc.k < lc.samples:
    out.append(f"layer_choice.k={lc.k}: must be in [1, layer_choice.samples={lc.samples})")
  return out


# ---------------------------------------------------------------------------- samples


def sample_rows(num_rows: int, size: int, seed: int) -> np.ndarray:
  """The sampled training rows, sorted: ``default_rng([seed, 7])`` without replacement."""
  r = np.random.default_rng([seed, SAMPLE_SEED])
  return np.sort(r.choice(num_rows, min(size, num_rows), replace=False))


class _Subset:
  """Records ``rows`` of a random-access source (picklable for grain)."""

  def __init__(self, source, rows):
    self.source, self.rows = source, np.asarray(rows)

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.source[int(self.rows[int(i)])]


def _synthetic_sample(p: LayerSampleParams) -> dict[str, np.ndarray]:
  split = synthetic.make_world(p.data)["train"]
  num = p.data.num_layers
  if num < 1:
    raise errors.ConfigError(f"modalities.{p.source}.layer='auto' needs layered views: set "
                             "data.synthetic.num_layers (e.g. 4)")
  rows = sample_rows(p.data.num_train, p.size, p.seed)
  layers = range(num) if p.layer == "all" else [int(p.layer)]
  out = {LAYER.format(i): split[synthetic.view_name(p.source, l, num)][rows]
         for i, l in enumerate(layers)}
  return {**out, ROWS: rows}


def _stack(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
  """The per-layer arrays of a stored sample, in layer order."""
  n = sum(1 for k in arrays if k.startswith("layer_"))
  return [arrays[LAYER.format(i)] for i in range(n)]


def _encoded_samples(reqs, *, batch_size, num_workers, data_dir, log) -> dict[str, dict]:
  from platonic_jax.data import loader as loader_lib  # noqa: PLC0415
  from platonic_jax.features import extract  # noqa: PLC0415
  first = next(iter(reqs.values())).params
  source = extract.open_source(first.data, "train", data_dir)
  rows = sample_rows(len(source), first.size, first.seed)
  cache: dict = {}
  as_feature = {n: dataclasses.replace(r, params=fparams.FeatureParams(
      "train", r.params.data, encoder=r.params.encoder)) for n, r in reqs.items()}
  encs = extract.load_encoders(as_feature, cache)
  parts: dict[str, list] = {n: [] for n in reqs}
  it = iter(loader_lib.make_loader(_Subset(source, rows), batch_size=batch_size,
                                   preprocess=None, worker_count=num_workers,
                                   shard_index=0, shard_count=1))
  try:
    for batch in it:
      keep = batch["mask"]
      for name, r in reqs.items():
        e = r.params.encoder
        items = (list(batch["image"][keep]) if e.input == "image"
                 else [str(c) for c in batch["caption"][keep]])
        layers = "all" if r.params.layer == "all" else [int(r.params.layer)]
        out = encs[e].encode(items, batch_size=batch_size, layers=layers, pool=e.pool)
        parts[name].append(list(out))  # [L] x [b, D_l] (widths may differ by layer)
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()
  log(f"layer choice: every layer of {sorted(reqs)} on {len(rows)} training rows")
  return {n: {**{LAYER.format(i): np.concatenate(per_layer, 0)
                 for i, per_layer in enumerate(zip(*p))}, ROWS: rows}
          for n, p in parts.items()}


def extract_samples(requests: Mapping, workdir: str, *, batch_size: int = 64,
                    num_workers: int = 0, data_dir: str = "", write: bool = True,
                    log: Callable[[str], None] | None = None) -> dict[str, list]:
  """{source: [[S, D_l] per layer]} the sampled layers of each requested source
  (``requests``: {source: features.Request} with ``LayerSampleParams``)."""
  log = log or logging.info
  out, pending = {}, {}
  entries = {n: Entry(workdir, r.key, r.inputs, write=write) for n, r in requests.items()}
  for n, e in entries.items():
    if e.done():
      out[n] = _stack(e.load())
    else:
      pending[n] = requests[n]
  synth = {n: r for n, r in pending.items() if r.params.encoder is None}
  for n, r in synth.items():
    arrays = _synthetic_sample(r.params)
    entries[n].save(arrays)
    out[n] = _stack(arrays)
  enc = {n: r for n, r in pending.items() if r.params.encoder is not None}
  if enc:
    got = _encoded_samples(enc, batch_size=batch_size, num_workers=num_workers,
                           data_dir=data_dir, log=log)
    for n, arrays in got.items():
      entries[n].save(arrays)
      out[n] = _stack(arrays)
  return out


# ---------------------------------------------------------------------------- choice


def _neighbours(layers: list, k: int) -> list:
  """k-NN lists of every sampled layer [S, D_l] (rows l2-normalised), once each."""
  from platonic_jax.metrics import knn  # noqa: PLC0415
  out = []
  for x in layers:
    x = np.asarray(x, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out.append(knn.nearest_neighbors(x, k)[1])
  return out


def choose(params: LayerChoiceParams, samples: Mapping[str, list]) -> LayerChoice:
  """The choice of every target from the sampled layers ``samples`` {source: [[S, D_l]]}
  (every layer of an "auto" source; the one fixed layer of a fixed partner)."""
  from platonic_jax.metrics import knn  # noqa: PLC0415
  chosen: dict[str, int] = {}
  entries = []
  lists: dict[str, list] = {}
  for t in params.targets:
    a, b = samples[t.modality], samples[t.partner]
    n = a[0].shape[0]
    k = k_of(params.k_rule, n, params.k)
    if not 1 <= k < n:
      raise errors.ConfigError(f"layer_choice: k={k} must be below the {n} sampled rows; "
                               "raise layer_choice.samples or lower layer_choice.k")
    for m, s in ((t.modality, a), (t.partner, b)):
      if m not in lists:
        lists[m] = _neighbours(s, k)
    la = list(range(len(a)))
    if t.partner_auto and t.partner not in chosen:
      lb, cols = list(range(len(b))), list(range(len(b)))
    elif t.partner_auto:  # chosen before (jointly with its own partner)
      lb = cols = [chosen[t.partner]]
    else:  # a fixed partner: its one sampled layer
      lb, cols = [t.partner_layer], [0]
    scores = np.array([[float(knn.mutual_from_idx(lists[t.modality][i], lists[t.partner][j]))
                        for j in cols] for i in la])
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)  # first max: earlier layers
    chosen[t.modality] = la[i]
    chosen.setdefault(t.partner, lb[j])
    entries.append(LayerChoiceEntry(
        modality=t.modality, partner=t.partner, layers=tuple(la), partner_layers=tuple(lb),
        scores=tuple(tuple(float(v) for v in row) for row in scores), chosen=la[i],
        partner_chosen=lb[j], k=k, samples=n))
    if t.partner_auto and len(lb) > 1:  # the partner's layer was chosen jointly
      entries.append(LayerChoiceEntry(
          modality=t.partner, partner=t.modality, layers=tuple(lb), partner_layers=tuple(la),
          scores=tuple(tuple(float(v) for v in col) for col in scores.T), chosen=lb[j],
          partner_chosen=la[i], k=k, samples=n))
  return LayerChoice(tuple(entries))


def resolve(requests: Mapping[str, Mapping], choice: LayerChoice) -> dict:
  """The feature requests with every "auto" layer replaced by the chosen one (keys and
  recorded inputs unchanged: they hold "auto" and the choice's key)."""
  out = {}
  for split, reqs in requests.items():
    out[split] = {}
    for name, r in reqs.items():
      p = r.params
      if isinstance(p, fparams.FeatureParams) and p.encoder is not None and is_auto(
          p.encoder.layer):
        p = dataclasses.replace(p, encoder=dataclasses.replace(p.encoder,
                                                               layer=choice.layer(name)))
      elif isinstance(p, fparams.FeatureParams) and p.view and p.view.endswith("@" + AUTO):
        p = dataclasses.replace(p, view=synthetic.view_name(
            name, choice.layer(name), p.data.num_layers))
      out[split][name] = dataclasses.replace(r, params=p)
  return out
