"""Every stored result is keyed by exactly its inputs: a walk over every config field.

For each field of each config variant the field is changed and the plan rebuilt:
- a field declared not an input (``NOT_INPUTS``) is read by no stage and changes no key;
- any other field changes the keys of exactly the stages whose builder read it and of
  their downstream stages (fields that shape the plan itself — which modalities, data
  source, pair, baselines — change at least those);
- every input field is read by some stage in some variant (none is silently ignored).
A builder that read a field without putting it into its parameters, or forgot to read
one its stage depends on, fails here.
"""

import ml_collections
import pytest

from helpers import config_leaves as leaves, load_config
from platonic_jax import plan

# Fields that never change a stored result, and why.
NOT_INPUTS = {
    "encoders.batch_size": "rows per compiled encoder step; a frozen encoder's outputs "
                           "do not depend on it",
    "data.num_workers": "grain decode processes",
    "data.data_dir": "where TFDS keeps its prepared files",
    "features.chunk_size": "shapes an extraction in progress only",
    "train.log_every": "logging cadence",
    "train.ckpt_every": "checkpoint cadence (resume is exact at any cadence)",
    "train.keep_ckpts": "checkpoint retention",
    "distributed.multihost": "process set-up at the entry point",
    "distributed.coordinator_address": "process set-up",
    "distributed.num_processes": "process set-up",
    "distributed.process_id": "process set-up",
    "reference.name": "a display name (records call the reference 'ref')",
}
NON_STAGE_SCOPES = {"knobs", "display"}


class Recorder:
  """A read-only view of a ConfigDict that records the leaf paths read through it."""

  def __init__(self, cfg, reads: set, prefix: str = ""):
    object.__setattr__(self, "_cfg", cfg)
    object.__setattr__(self, "_reads", reads)
    object.__setattr__(self, "_prefix", prefix)

  def _wrap(self, name, value):
    path = f"{self._prefix}{name}"
    if isinstance(value, ml_collections.ConfigDict):
      return Recorder(value, self._reads, path + ".")
    self._reads.add(path)
    return value

  def __getattr__(self, name):
    return self._wrap(name, getattr(self._cfg, name))

  def __getitem__(self, name):
    return self._wrap(name, self._cfg[name])

  def __iter__(self):
    self._reads.add(self._prefix.rstrip(".") + "[keys]")
    return iter(self._cfg)

  def __contains__(self, name):
    self._reads.add(self._prefix.rstrip(".") + "[keys]")
    return name in self._cfg

  def to_dict(self):
    raise AssertionError("a stage builder must read fields, not the whole config")


def build_recorded(config):
  reads: dict[str, set] = {}

  def view(name, cfg):
    reads.setdefault(name, set())
    return Recorder(cfg, reads[name])

  return plan.build(config, view=view), reads


OVERRIDES = {  # a different valid value where the generic change would not be one
    "eval.pair": lambda v: tuple(reversed(v)),
    "loss.anchor": lambda v: "text" if v != "text" else "image",
    # ("anchor" with anchor=image is "all" for two modalities: the same resolved pairs)
    "loss.pairs": lambda v: "text->image" if v != "text->image" else "all",
    "eval.gap_temperatures": lambda v: tuple(v) + (2 * max(v, default=0.5),),
    "cycle.modalities": lambda v: ("text", "image") if v != ("text", "image") else (
        "image", "text"),
}


def changed_value(path, v):
  if path in OVERRIDES:
    return OVERRIDES[path](v)
  if isinstance(v, bool):
    return not v
  if isinstance(v, int):
    return v + 1
  if isinstance(v, float):
    return v * 1.5 + 0.1
  if isinstance(v, str):
    return v + "_x"
  if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
    return v + (max(v, default=0) + 1,)  # dropping one could leave the same specs
  if isinstance(v, tuple):
    return v[:-1] if len(v) > 1 else v + v
  raise TypeError(f"no change rule for {path}={v!r}")


def with_value(config, path, value):
  c = config.copy_and_resolve_references()
  c.unlock()
  *parents, last = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[last] = value
  return c


def downstream(p: plan.Plan, names: set) -> set:
  out = set(names)
  grew = True
  while grew:
    grew = False
    for name, stage in p.stages.items():
      if name not in out and set(stage.upstream.values()) & out:
        out.add(name)
        grew = True
  return out


def _variant(name):
  if name == "synthetic":
    return load_config("synthetic")
  if name == "flickr":
    c = load_config("flickr")
    c.data.manual_dir = "/data/flickr30k"
    return c
  if name == "audio":
    return load_config("synthetic", "tiny,audio")
  c = load_config("synthetic")
  if name == "seed003":
    c.data.synthetic.preset = "seed003"
  elif name == "options":  # the fields read only when these are on
    c.loss.update(dict(name="siglip", learn_tau=True, structure_weight=10.0))
    c.adapter.kind = "mlp"
    c.data.synthetic.map = "linear"
    c.eval.update(dict(baseline_dim=16, baseline_resample=True, gap_temperatures=(0.05,),
                       baselines=("cca", "asif")))
    c.data.synthetic.num_layers = 3  # the training recipes (docs/training.md)
    c.modalities.image.layer = "auto"
    c.layer_choice.k_rule = "fixed"
    c.cycle.modalities = ("image", "text")
  return c


VARIANTS = ("synthetic", "flickr", "audio", "seed003", "options")


def stage_readers(config) -> dict[str, set]:
  """{field path: the scopes (stages, "plan", "knobs", "display") that read it}."""
  _, reads = build_recorded(config)
  readers = {}
  for scope, paths in reads.items():
    for path in paths:
      readers.setdefault(path, set()).add(scope)
  return readers


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_a_field_changes_exactly_the_keys_of_the_stages_that_read_it(variant):
  config = _variant(variant)
  base = plan.build(config)
  readers = stage_readers(config)
  for path, value in leaves(config):
    scopes = readers.get(path, set())
    other = plan.build(with_value(config, path, changed_value(path, value)))
    changed = {n for n in set(base.keys) | set(other.keys)
               if base.keys.get(n) != other.keys.get(n)}
    if path in NOT_INPUTS:
      assert scopes <= NON_STAGE_SCOPES, (path, scopes)
      assert not changed, (path, changed)
      continue
    expected = downstream(base, scopes & set(base.stages))
    if "plan" in scopes:  # the field shapes the plan: at least its readers change
      assert expected <= changed and changed, (path, expected - changed)
    else:
      assert changed == expected, (path, "changed but not read:", changed - expected,
                                   "read but unchanged:", expected - changed)


def test_every_input_field_is_read_by_some_stage():
  read_somewhere: dict[str, set] = {}
  for v in VARIANTS:
    config = _variant(v)
    readers = stage_readers(config)
    for path, _ in leaves(config):
      read_somewhere.setdefault(path, set()).update(readers.get(path, set()) - NON_STAGE_SCOPES)
  # A modality's fields count as one ("modalities.*.encoder"): audio exists only in the
  # synthetic world, whose modalities have no encoder.
  generic = lambda p: ".".join("*" if i == 1 and p.startswith("modalities.") else part  # noqa
                               for i, part in enumerate(p.split(".")))
  read = {}
  for p, s in read_somewhere.items():
    read.setdefault(generic(p), set()).update(s)
  unread = sorted(p for p, s in read.items() if not s and p not in NOT_INPUTS)
  assert not unread, f"config fields no stage reads (declare them in NOT_INPUTS or use them): {unread}"
