"""Contrastive adapter training on cached frozen features, data parallel over every
device of every host.

    params = TrainParams.from_config(config, order=("image", "text"))
    result = train_adapters(params, {"image": x [N, D_x], "text": y [N, D_y]}, directory)
    z = result.embed(result.params, "image", x)      # np [N, E], unit rows

``TrainParams`` holds exactly what determines the trained adapters (the experiment keys
``directory`` by it); ``Cadence`` (logging, checkpoint cadence and retention) does not
change them.

The step (``train_step``) is the pmap programming model written with ``jax.shard_map``
over the 1-D ``data`` mesh: each device embeds its rows of the global batch,
``lax.all_gather`` makes the contrastive negatives the *global* batch
(``platonic_jax.losses``), each device differentiates its own share of the loss and the
gradients are ``lax.pmean``-ed, so the update equals the single-device update on the
whole global batch. Encoder weights never enter the state: the step reads features.

Data order: epoch e visits the rows in ``np.random.default_rng([seed, e]).permutation(N)``
order, ``N // batch_size`` batches per epoch (the remainder is dropped); the rows of step
s are therefore a pure function of (seed, s), and resuming from a checkpoint at step s
resumes the data exactly (``batch_indices``). Each process feeds its own contiguous slice
of every global batch (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import PartitionSpec as P

from platonic_jax import (adapters, checkpointing, cycle, errors, losses, objective, sharding,
                          typed_json)
from platonic_jax.sharding import DATA


@dataclasses.dataclass(frozen=True)
class OptimParams:
  """AdamW + schedule + data order (``config.train`` without the cadence fields)."""
  num_steps: int
  batch_size: int
  lr: float
  warmup_steps: int
  weight_decay: float
  grad_clip: float

  @classmethod
  def from_config(cls, cfg) -> "OptimParams":
    return cls(num_steps=int(cfg.num_steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
               warmup_steps=int(cfg.warmup_steps), weight_decay=float(cfg.weight_decay),
               grad_clip=float(cfg.grad_clip))


@dataclasses.dataclass(frozen=True)
class TrainParams:
  """Everything that determines the trained adapters (the training stage's inputs).

  modalities: adapter names in order (``eval.pair`` first, then the others by name).
  """
  seed: int
  modalities: tuple[str, ...]
  adapter: adapters.AdapterParams
  loss: losses.LossParams
  optim: OptimParams
  cycle: cycle.CycleParams | None = dataclasses.field(default=None,
                                                      metadata=typed_json.OPTIONAL)

  @classmethod
  def from_config(cls, config, order: tuple[str, ...], tau: float | None = None
                  ) -> "TrainParams":
    """``tau``: train at this fixed temperature instead (the modality-gap sweep)."""
    return cls(seed=int(config.seed), modalities=tuple(order),
               adapter=adapters.AdapterParams.from_config(config.adapter),
               loss=losses.LossParams.from_config(config.loss, order, tau),
               optim=OptimParams.from_config(config.train),
               cycle=cycle.CycleParams.from_config(config.cycle))


@dataclasses.dataclass(frozen=True)
class Cadence:
  """How often to log and checkpoint, and how many checkpoints to keep: never an input
  of the result (a changed cadence reuses the trained adapters)."""
  log_every: int = 50
  ckpt_every: int = 200
  keep_ckpts: int = 3

  def __post_init__(self):
    for field in ("log_every", "ckpt_every", "keep_ckpts"):
      if getattr(self, field) < 1:
        raise errors.ConfigError(f"train.{field}={getattr(self, field)} must be >= 1")

  @classmethod
  def from_config(cls, cfg) -> "Cadence":
    return cls(log_every=int(cfg.log_every), ckpt_every=int(cfg.ckpt_every),
               keep_ckpts=int(cfg.keep_ckpts))


@flax.struct.dataclass
class TrainState:
  """Everything training changes, and nothing else (this is what a checkpoint holds).

  step: int32 [] — updates done; params: {"adapters": {modality: ...}, "loss": {...}}
  ("loss" only with a learned temperature); opt_state: optax state of ``params``;
  rng: uint32 [2] base key (step keys are ``fold_in(rng, step)``).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class TrainResult(NamedTuple):
  """params: host (numpy) parameters; embed(params, name, x [N, D]) -> np [N, E];
  history: one dict per log step (step, loss, grad_norm, lr, tau, steps_per_s);
  heads(path, e [N, E]) -> np [N, E]: the circular heads along ``path`` (hops (a, b) in
  order) with the trained head parameters, or None without ``cycle``."""
  params: Any
  embed: Callable[[Any, str, np.ndarray], np.ndarray]
  history: list
  heads: Callable | None = None


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint; re-run to resume."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"preempted (SIGTERM) at step {step}; checkpoint saved in {directory}; "
                     "re-run the same command to resume")
    self.step = step
    self.directory = directory


# ---------------------------------------------------------------------------- optimizer


def make_optimizer(train_cfg: OptimParams
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup to ``lr`` then cosine decay to 0 at ``num_steps``, after
  clipping the global gradient norm at ``grad_clip`` (0 disables it).

  Weight decay applies to matrices only (ndim >= 2): not to biases, nor to the learned
  temperature / SigLIP bias (as in CLIP and SigLIP).
  """
  if train_cfg.num_steps < 1:
    raise errors.ConfigError(f"train.num_steps={train_cfg.num_steps} must be >= 1")
  if not 0 <= train_cfg.warmup_steps < train_cfg.num_steps:
    raise errors.ConfigError(f"train.warmup_steps={train_cfg.warmup_steps} must be in "
                     f"[0, train.num_steps={train_cfg.num_steps})")
  if not train_cfg.lr > 0:
    raise errors.ConfigError(f"train.lr={train_cfg.lr} must be > 0")
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_cfg.lr, warmup_steps=train_cfg.warmup_steps,
      decay_steps=train_cfg.num_steps, end_value=0.0)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = []
  if train_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
  parts.append(optax.adamw(schedule, weight_decay=train_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts), schedule


# ---------------------------------------------------------------------------- the step


def make_loss_fn(model: adapters.Adapters, loss_cfg: losses.LossParams, heads=None,
                 cycle_params: cycle.CycleParams | None = None) -> Callable:
  """``loss_fn(params, batch, rng) -> loss``, one device's share (call inside shard_map).

  batch: {modality: [n, D_m]} this device's rows (and ``objective.GROUPS``); rng: this
  device's dropout key. The embeddings of the other devices are all-gathered inside the
  loss, so the ``pmean`` of the returned value over ``data`` is the global-batch loss
  (``platonic_jax.objective``: the contrastive loss and the recipes' terms).
  """
  return objective.make_loss_fn(model, loss_cfg, heads, cycle_params, axis_name=DATA)


def train_step(state: TrainState, batch, *, tx: optax.GradientTransformation,
               loss_fn: Callable) -> tuple[TrainState, dict]:
  """One update on a global batch ``{modality: [B, D_m]}`` sharded over ``data``.

  Runs under ``jax.set_mesh(data mesh)`` (the shard_map takes the mesh from there).
  Returns the new state and ``{"loss", "grad_norm"}`` (device scalars; the loss is
  the global-batch loss at the parameters before the update).
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def per_device(params, batch, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA))
    # Make the replicated params per-device values, as under pmap: each device then
    # differentiates only its own share of the loss and the pmean below averages the
    # shares. (Differentiating the replicated params directly would psum implicitly.)
    params = jax.lax.pcast(params, DATA, to="varying")
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    return jax.lax.pmean(loss, DATA), jax.lax.pmean(grads, DATA)

  loss, grads = jax.shard_map(per_device, in_specs=(P(), P(DATA), P()),
                              out_specs=(P(), P()))(state.params, batch, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def make_step_fn(model: adapters.Adapters, loss_cfg: losses.LossParams,
                 tx: optax.GradientTransformation, heads=None,
                 cycle_params: cycle.CycleParams | None = None) -> Callable:
  """``step_fn(state, batch) -> (state, metrics)``: ``train_step`` for ``model`` and
  the loss, jitted with the state donated."""
  loss_fn = make_loss_fn(model, loss_cfg, heads, cycle_params)
  return jax.jit(functools.partial(train_step, tx=tx, loss_fn=loss_fn), donate_argnums=0)


@jax.jit
def _first_nonfinite(first, loss, step):
  """``step`` if ``loss`` is the first non-finite one seen, else ``first`` (-1 = none).

  Kept on device so the loop never waits for the loss except on log steps, yet a NaN is
  reported with the exact step where it appeared.
  """
  return jnp.where((first < 0) & ~jnp.isfinite(loss), step, first)


# ---------------------------------------------------------------------------- data


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int,
                  _cache: dict | None = None) -> np.ndarray:
  """Row indices [batch_size] of the global batch of update ``step`` (0-based).

  Epoch e = step // (N // B) visits ``default_rng([seed, e]).permutation(N)`` in order.
  """
  per_epoch = num_examples // batch_size
  epoch, pos = divmod(step, per_epoch)
  if _cache is not None and _cache.get("epoch") == epoch:
    perm = _cache["perm"]
  else:
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    if _cache is not None:
      _cache.update(epoch=epoch, perm=perm)
  return perm[pos * batch_size:(pos + 1) * batch_size]


class _Batches:
  """This process's rows of each global batch, gathered one step ahead in a thread.

  rows: {modality: [N] int} the row of ``features[m]`` that each training row reads
  (default: row i); groups: [N] int, each training row's group (``objective.GROUPS``).
  """

  def __init__(self, features: Mapping[str, np.ndarray], batch_size: int, seed: int,
               mesh, rows: Mapping[str, np.ndarray] | None = None,
               groups: np.ndarray | None = None):
    self.features = features
    self.index = dict(rows or {})
    self.groups = groups
    self.n = training_rows(features, self.index)
    self.batch_size, self.seed = batch_size, seed
    self.sharding = sharding.batch_sharding(mesh)
    nproc, pid = jax.process_count(), jax.process_index()
    local = batch_size // nproc
    self.rows = slice(pid * local, (pid + 1) * local)
    self._cache: dict = {}
    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._next: tuple[int, concurrent.futures.Future] | None = None

  def _gather(self, step):
    idx = batch_indices(step, self.n, self.batch_size, self.seed, self._cache)[self.rows]
    out = {m: np.take(x, self.index[m][idx] if m in self.index else idx, axis=0)
           for m, x in self.features.items()}
    if self.groups is not None:
      out[objective.GROUPS] = np.take(self.groups, idx).astype(np.int32)
    return out

  def get(self, step: int):
    if self._next is not None and self._next[0] == step:
      host = self._next[1].result()
    else:
      host = self._gather(step)
    self._next = (step + 1, self._pool.submit(self._gather, step + 1))
    return {m: jax.make_array_from_process_local_data(self.sharding, x)
            for m, x in host.items()}

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)


def training_rows(features: Mapping[str, np.ndarray],
                  rows: Mapping[str, np.ndarray]) -> int:
  """The number of training rows: the rows maps' length, else the features' N."""
  if rows:
    return len(next(iter(rows.values())))
  return next(iter(features.values())).shape[0]


def check_rows(features: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray] | None,
               groups: np.ndarray | None, batch_size: int) -> dict[str, np.ndarray]:
  """The row maps as int64 arrays after checking them against ``features``."""
  out = {}
  for m, r in (rows or {}).items():
    r = np.asarray(r)
    if m not in features or r.ndim != 1 or r.dtype.kind not in "iu":
      raise errors.InputError(f"rows[{m!r}] must be a [N] integer array for a modality of "
                              f"the features {sorted(features)}")
    if r.size and (r.min() < 0 or r.max() >= features[m].shape[0]):
      raise errors.InputError(f"rows[{m!r}] indexes rows {r.min()}..{r.max()} but "
                              f"features[{m!r}] has {features[m].shape[0]}")
    out[m] = r.astype(np.int64)
  n = training_rows(features, out)
  bad = [m for m in out if len(out[m]) != n]
  bad += [m for m, x in features.items() if m not in out and x.shape[0] != n]
  if bad:
    raise errors.InputError(f"training rows disagree: {sorted(bad)} do not have {n} rows "
                            "(every modality reads one row per training pair)")
  if groups is not None and np.shape(groups) != (n,):
    raise errors.InputError(f"groups must be [{n}] (one per training row), got shape "
                            f"{np.shape(groups)}")
  if n < batch_size:
    raise errors.InputError(f"train.batch_size={batch_size} is larger than the {n} training "
                            "rows; lower --config.train.batch_size")
  return out


def check_features(features: Mapping[str, np.ndarray], names, batch_size: int,
                   paired: bool = True) -> dict[str, np.ndarray]:
  """float32 copies-if-needed of ``features``, after checking them; InputError otherwise.
  ``paired=False``: the arrays may have different N (rows maps say which row each
  training pair reads)."""
  missing = [m for m in names if m not in features]
  extra = [m for m in features if m not in names]
  if missing or extra:
    raise errors.InputError(f"features must have exactly the modalities of config.modalities "
                     f"{list(names)}; missing {missing}, unexpected {extra}")
  out, n = {}, None
  for m in names:
    x = np.asarray(features[m])
    if x.ndim != 2:
      raise errors.InputError(f"features[{m!r}] must be [N, D], got shape {x.shape}")
    if paired and n is not None and x.shape[0] != n:
      raise errors.InputError(f"features disagree on N (paired rows): {m!r} has {x.shape[0]} rows, "
                       f"{names[0]!r} has {n}")
    n = x.shape[0]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
      bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
      raise errors.InputError(f"features[{m!r}] has NaN/inf (first in row {bad}); fix the "
                       "feature cache before training")
    out[m] = x
  if paired and n < batch_size:
    raise errors.InputError(f"train.batch_size={batch_size} is larger than the {n} training rows; "
                     "lower --config.train.batch_size")
  return out


# ---------------------------------------------------------------------------- logging


class ProgressLog:
  """Console progress, ``<train dir>/metrics.jsonl`` and TensorBoard events (process 0)."""

  def __init__(self, workdir: str, num_steps: int, start_step: int):
    self.num_steps = num_steps
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.history = self._earlier(start_step)
    self.writer = None  # opened at the first record: a finished run writes no events file
    self._events_dir = os.path.join(workdir, "tensorboard")
    self.t0, self.s0 = time.perf_counter(), start_step

  def _earlier(self, start_step: int) -> list[dict]:
    """Records of previous runs of this workdir up to the resumed step (a killed run may
    have logged steps past its last checkpoint; those are redone and logged again)."""
    if not os.path.exists(self.path):
      return []
    by_step = {}
    with open(self.path) as f:
      for line in f:
        try:
          r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
          continue
        if r.get("step", math.inf) <= start_step:
          by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]

  def log(self, step: int, record: dict):
    now = time.perf_counter()
    rate = (step - self.s0) / max(now - self.t0, 1e-9)
    self.t0, self.s0 = now, step
    record = {"step": step, **record, "steps_per_s": rate}
    self.history.append(record)
    if not self.enabled:
      return
    eta = (self.num_steps - step) / rate if rate > 0 else math.inf
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    logging.info("step %d/%d  loss %.4f  %.1f steps/s  ETA %s", step, self.num_steps,
                 record["loss"], rate, eta_s)
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.writer is None:
      from tensorboardX import SummaryWriter  # noqa: PLC0415 - only process 0 writes
      self.writer = SummaryWriter(self._events_dir)
    for k, v in record.items():
      if k != "step":
        self.writer.add_scalar(f"train/{k}", v, step)
    self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()


# ---------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a dict whose "set" becomes True on SIGTERM (single-process runs).

  Multi-process runs use JAX's preemption sync point instead (via Orbax), so every
  process stops at the same step.
  """
  flag = {"set": False}
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    flag["set"] = True

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def _host(x):
  """A replicated (possibly multi-host) array as numpy, from this process's copy: an
  explicit transfer (``jax.device_get``), so the loop runs under
  ``jax.transfer_guard("disallow")`` (tests)."""
  return np.asarray(jax.device_get(x.addressable_data(0)))


def init_params(model: adapters.Adapters, params: TrainParams, dims: Mapping[str, int],
                heads=None) -> dict:
  """The parameters at step 0: {"adapters", ["loss"], ["heads"]} (a pure function of the
  params; the "before training" space of the modality-gap report embeds with them)."""
  rng = jax.random.PRNGKey(params.seed)
  dummy = {m: jnp.zeros((1, d), jnp.float32) for m, d in dims.items()}
  variables = {"adapters": model.init(jax.random.fold_in(rng, 0), dummy)["params"]}
  loss_params = losses.init_loss_params(params.loss)
  if loss_params:
    variables["loss"] = loss_params
  if heads is not None:
    e = {m: jnp.zeros((1, params.adapter.dim), jnp.float32) for m in params.cycle.modalities}
    variables["heads"] = heads.init(jax.random.fold_in(rng, 2), e)["params"]
  return variables


def initial_params(params: TrainParams, dims: Mapping[str, int]) -> dict:
  """Host copies of the parameters at step 0 (what the "before training" space embeds
  with); ``dims``: {modality: feature width}."""
  model = adapters.build(params.adapter, params.modalities)
  heads = cycle.build(params.cycle, params.adapter.dim) if params.cycle else None
  return jax.tree.map(np.asarray, jax.jit(lambda: init_params(model, params, dims, heads))())


def init_state(model: adapters.Adapters, params: TrainParams, dims: Mapping[str, int],
               tx: optax.GradientTransformation, heads=None) -> TrainState:
  """The state at step 0 (pure function of the params: jit/eval_shape it)."""
  rng = jax.random.PRNGKey(params.seed)
  variables = init_params(model, params, dims, heads)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables,
                    opt_state=tx.init(variables), rng=jax.random.fold_in(rng, 1))


INPUTS_FILE = "inputs.json"


def _claim(directory: str, params: TrainParams, inputs: Mapping | None) -> None:
  """Records what the training in ``directory`` is for; refuses a directory recorded for
  other inputs (its checkpoints would be stale for this request)."""
  from platonic_jax import workdir as workdir_lib  # noqa: PLC0415 - small, local use
  doc = dict(inputs) if inputs is not None else {"params": typed_json.dump(params,
                                                                          sort_keys=True)}
  path = os.path.join(directory, INPUTS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored != json.loads(json.dumps(doc)):
      raise errors.CacheError(
          f"{directory} holds a training for other inputs than requested ({path} differs); "
          "it is never resumed for this config. Delete that directory to train again there.")
    return
  if jax.process_index() == 0:
    workdir_lib.atomic_write_json(path, doc)


def train_adapters(params: TrainParams, features: Mapping[str, np.ndarray], directory: str,
                   *, cadence: Cadence = Cadence(), inputs: Mapping | None = None,
                   rows: Mapping[str, np.ndarray] | None = None,
                   groups: np.ndarray | None = None) -> TrainResult:
  """Trains ``params.adapter`` adapters on ``features`` ({modality: [N, D_m]} train split)
  with ``params.loss`` for ``params.optim.num_steps`` updates, resuming from the latest
  checkpoint in ``<directory>/checkpoints`` if there is one.

  Several rows per sample (every caption a positive): ``rows[m]`` [N] maps each training
  pair to its row of ``features[m]`` (e.g. the image of each caption), ``groups`` [N] is
  each pair's image (same-group rows are never each other's negatives).

  ``directory`` belongs to these params alone (the experiment names it by their key);
  ``inputs`` (the stage's recorded inputs: params and upstream feature keys; default the
  params) is written to ``inputs.json``, and a directory recorded for different inputs
  is refused. Progress goes
  to ``<directory>/metrics.jsonl`` and TensorBoard events there.
  Raises ``Preempted`` after saving on SIGTERM; FloatingPointError naming the step if the
  loss becomes NaN/inf (no checkpoint is written past it); InputError on bad inputs.
  """
  op = params.optim
  names = params.modalities
  if op.batch_size % jax.device_count():
    raise errors.InputError(
        f"train.batch_size={op.batch_size} must be a multiple of the {jax.device_count()} "
        "devices (each takes an equal share)")
  if params.loss.positives == "all_captions" and groups is None:
    raise errors.InputError("loss.positives='all_captions' trains on caption rows grouped by "
                            "image: pass groups (each row's image) and rows (see "
                            "experiment.training_inputs)")
  feats = check_features(features, names, op.batch_size, paired=not rows)
  rows = check_rows(feats, rows, groups, op.batch_size)
  model = adapters.build(params.adapter, names)
  heads = cycle.build(params.cycle, params.adapter.dim) if params.cycle else None
  tx, schedule = make_optimizer(op)
  step_fn = make_step_fn(model, params.loss, tx, heads, params.cycle)
  mesh = sharding.data_mesh()
  replicated = sharding.replicated(mesh)
  os.makedirs(directory, exist_ok=True)
  _claim(directory, params, inputs)

  init_fn = functools.partial(init_state, model, params,
                              {m: x.shape[1] for m, x in feats.items()}, tx, heads)
  mngr = checkpointing.manager(directory, keep=cadence.keep_ckpts)
  restored = checkpointing.restore_latest(
      mngr, checkpointing.abstract_state(init_fn, replicated))
  if restored is None:
    state = jax.jit(init_fn, out_shardings=replicated)()
    start = 0
  else:
    state, start = restored
  batches = _Batches(feats, op.batch_size, params.seed, mesh, rows, groups)
  logger = ProgressLog(directory, op.num_steps, start)
  if start:
    logging.info("Resuming at step %d of %d", start, op.num_steps)

  def check_finite(first_bad):
    bad = int(_host(first_bad))
    if bad >= 0:
      raise FloatingPointError(
          f"loss is NaN/inf at step {bad}: training stopped (no checkpoint written after "
          f"it). Lower --config.train.lr, raise --config.loss.tau, or check the features.")

  # What a log step reads, computed on the device from the state (the schedule at the
  # update just made, the learned temperature) and then fetched explicitly: the loop
  # moves nothing implicitly between host and device (tests run it under
  # jax.transfer_guard("disallow")), so no step waits on a hidden transfer.
  logged_lr = jax.jit(lambda s: schedule(s - 1))
  logged_tau = jax.jit(lambda p: 1.0 / losses.scale_and_bias(params.loss, p)[0])

  try:
    with jax.set_mesh(mesh), _sigterm_flag() as sigterm:
      # made on the devices (a constant of the program): no transfer, also multi-host
      first_bad = jax.jit(lambda: jnp.int32(-1), out_shardings=replicated)()
      step = start
      while step < op.num_steps:
        state, metrics = step_fn(state, batches.get(step))
        step += 1
        # state.step (on the device, = step) marks the step: no host scalar goes up.
        first_bad = _first_nonfinite(first_bad, metrics["loss"], state.step)
        if step % cadence.log_every == 0 or step == op.num_steps:
          check_finite(first_bad)
          record = {k: float(_host(v)) for k, v in metrics.items()}
          record["lr"] = float(_host(logged_lr(state.step)))
          if params.loss.learn_tau:
            record["tau"] = float(_host(logged_tau(state.params["loss"])))
          logger.log(step, record)
        preempted = sigterm["set"] or (jax.process_count() > 1 and
                                       mngr.reached_preemption(step))
        if step % cadence.ckpt_every == 0 or step == op.num_steps or preempted:
          check_finite(first_bad)
          checkpointing.save(mngr, step, state, force=True)
        if preempted and step < op.num_steps:
          raise Preempted(step, mngr.directory)
  finally:
    batches.close()
    logger.close()
    mngr.wait_until_finished()  # the last save completes before return or raise
    mngr.close()

  host_params = jax.tree.map(_host, state.params)
  embed = lambda p, name, x: adapters.embed(model, p.get("adapters", p), name, x)
  run_heads = None
  if heads is not None:
    apply = cycle.apply_fn(heads)
    run_heads = lambda path, x: apply(host_params["heads"], path, x)
  return TrainResult(params=host_params, embed=embed, history=logger.history,
                     heads=run_heads)
