"""The data-parallel step (8 devices == 1 device == plain global-batch gradient), the
data order, and train_adapters in process (progress files, NaN, bad input)."""

import functools
import glob
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from helpers import load_config
from platonic_jax import adapters, errors, losses, plan, sharding, train


def params_of(config) -> train.TrainParams:
  return train.TrainParams.from_config(config, plan.modality_order(config))


def train_adapters(config, feats, directory):
  return train.train_adapters(params_of(config), feats, directory,
                              cadence=train.Cadence.from_config(config.train))


def paired_features(n=256, dx=12, dy=10, seed=0):
  """Stand-in for cached features: two noisy linear views of a shared latent."""
  r = np.random.default_rng(seed)
  z = r.normal(size=(n, 6))
  x = z @ r.normal(size=(6, dx)) + 0.3 * r.normal(size=(n, dx))
  y = np.tanh(z @ r.normal(size=(6, dy))) + 0.3 * r.normal(size=(n, dy))
  return {"image": x.astype(np.float32), "text": y.astype(np.float32)}


def small_config(**train):
  c = load_config()
  c.adapter.dim = 8
  c.train.update(dict(num_steps=12, batch_size=32, warmup_steps=2, ckpt_every=5,
                      log_every=4, lr=1e-2))
  c.train.update(train)
  return c


def _run_steps(config, feats, devices, steps):
  """Runs ``steps`` train_steps on a mesh over ``devices``; returns (losses, params)."""
  p = params_of(config)
  model = adapters.build(p.adapter, p.modalities)
  tx, _ = train.make_optimizer(p.optim)
  mesh = sharding.data_mesh(devices)
  state = jax.jit(functools.partial(
      train.init_state, model, p, {m: x.shape[1] for m, x in feats.items()}, tx),
      out_shardings=sharding.replicated(mesh))()
  step_fn = train.make_step_fn(model, p.loss, tx)
  out = []
  with jax.set_mesh(mesh):
    for s in range(steps):
      idx = train.batch_indices(s, 256, config.train.batch_size, config.seed)
      batch = jax.device_put({m: x[idx] for m, x in feats.items()},
                             sharding.batch_sharding(mesh))
      state, metrics = step_fn(state, batch)
      out.append(float(metrics["loss"]))
  return np.array(out), jax.tree.map(np.asarray, state.params)


@pytest.mark.parametrize("loss,learn_tau,three_mlp", [
    ("clip", True, False), ("siglip", False, False), ("clip_one_way", False, True)])
def test_eight_devices_match_one_device(num_devices, loss, learn_tau, three_mlp):
  config = small_config()
  config.loss.name, config.loss.learn_tau = loss, learn_tau
  feats = paired_features()
  if three_mlp:  # a third modality, MLP heads, ImageBind-style anchored pairs
    feats["audio"] = paired_features(dx=5, seed=0)["image"][:, :5] * 2 + 1
    config.modalities.audio = ml_collections.ConfigDict(dict(encoder="", layer=-1, pool=""))
    config.adapter.kind, config.loss.pairs, config.loss.anchor = "mlp", "anchor", "text"
  l8, p8 = _run_steps(config, feats, jax.devices(), 6)
  l1, p1 = _run_steps(config, feats, jax.devices()[:1], 6)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  assert l8[-1] < l8[0]  # it trains
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p8, p1)
  if learn_tau:
    assert p8["loss"]["log_scale"] != np.log(1 / config.loss.tau)  # the temperature moved


def test_step_equals_plain_global_batch_gradient(num_devices):
  """The shard_map step (pcast + pmean over 8 devices) applies exactly the gradient of the
  un-sharded global-batch loss, through the same optax transformation."""
  config = small_config()
  config.loss.learn_tau = True
  feats = paired_features()
  p = params_of(config)
  model = adapters.build(p.adapter, p.modalities)
  tx, _ = train.make_optimizer(p.optim)
  state = train.init_state(model, p, {"image": 12, "text": 10}, tx)
  idx = train.batch_indices(0, 256, 32, config.seed)
  batch = {m: jnp.asarray(x[idx]) for m, x in feats.items()}
  objective = losses.objective(p.loss)

  def global_loss(params):
    emb = model.apply({"params": params["adapters"]}, batch)
    return objective(emb, params["loss"])

  want_loss, grads = jax.value_and_grad(global_loss)(state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  want = optax.apply_updates(state.params, updates)

  mesh = sharding.data_mesh()
  with jax.set_mesh(mesh):
    new, metrics = jax.jit(functools.partial(
        train.train_step, tx=tx, loss_fn=train.make_loss_fn(model, p.loss)))(
            state, jax.device_put(batch, sharding.batch_sharding(mesh)))
  np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
  assert int(new.step) == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               new.params, want)


def test_schedule_and_weight_decay_mask():
  tc = ml_collections.ConfigDict(dict(num_steps=100, warmup_steps=10, lr=1.0,
                                      weight_decay=0.5, grad_clip=0.0))
  tx, sched = train.make_optimizer(tc)
  np.testing.assert_allclose([sched(0), sched(5), sched(10)], [0.0, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(sched(55), 0.5 * (1 + np.cos(np.pi * 45 / 90)), rtol=1e-5)
  np.testing.assert_allclose(sched(100), 0.0, atol=1e-7)
  # With zero gradients only weight decay moves parameters: matrices, not scalars/biases.
  params = {"W": jnp.ones((2, 2)), "b": jnp.ones((2,)), "log_scale": jnp.float32(1.0)}
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(6):
    upd, state = tx.update(zeros, state, params)
  assert float(upd["W"][0, 0]) < 0 and float(upd["b"][0]) == 0
  assert float(upd["log_scale"]) == 0
  with pytest.raises(ValueError, match="train.warmup_steps"):
    train.make_optimizer(ml_collections.ConfigDict(dict(tc, warmup_steps=100)))


def test_batch_indices_cover_each_epoch_once():
  n, b = 103, 10  # 10 batches per epoch, 3 rows dropped
  for epoch in range(2):
    rows = np.concatenate([train.batch_indices(epoch * 10 + s, n, b, seed=3)
                           for s in range(10)])
    assert len(set(rows.tolist())) == 100
  e0 = [train.batch_indices(s, n, b, 3) for s in range(10)]
  e1 = [train.batch_indices(10 + s, n, b, 3) for s in range(10)]
  assert not all(np.array_equal(x, y) for x, y in zip(e0, e1))  # reshuffled per epoch
  cache = {}
  for s in (0, 13, 25, 7):  # position is a pure function of the step
    np.testing.assert_array_equal(train.batch_indices(s, n, b, 3, cache),
                                  train.batch_indices(s, n, b, 3))
  assert not np.array_equal(train.batch_indices(0, n, b, 3), train.batch_indices(0, n, b, 4))


def test_train_adapters_end_to_end(tmp_path):
  config = small_config(num_steps=16, lr=5e-2)
  feats = paired_features()
  res = train_adapters(config, feats, str(tmp_path))
  assert [h["step"] for h in res.history] == [4, 8, 12, 16]
  assert res.history[-1]["loss"] < res.history[0]["loss"]
  for h in res.history:
    assert {"loss", "grad_norm", "lr", "steps_per_s"} <= set(h)
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [4, 8, 12, 16]
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "15", "16"]
  z = res.embed(res.params, "text", feats["text"][:7])
  w = res.params["adapters"]["text"]["W"]["kernel"]
  want = feats["text"][:7] @ w
  np.testing.assert_allclose(z, want / np.linalg.norm(want, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)
  # Paired rows now find each other: median rank of the partner well below chance (128).
  zx, zy = res.embed(res.params, "image", feats["image"]), res.embed(res.params, "text",
                                                                     feats["text"])
  sim = zx @ zy.T
  assert np.median(np.sum(sim > np.diag(sim)[:, None], axis=1)) < 20
  # Running again finds the finished checkpoint and returns the same parameters.
  again = train_adapters(config, feats, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, again.params, res.params)
  assert [h["step"] for h in again.history] == [4, 8, 12, 16]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_nan_stops_training_naming_the_step(tmp_path):
  # An infinite learning rate makes the parameters non-finite after the first update,
  # so the loss of update 2 is the first NaN; it is found at the checkpoint of step 3.
  config = small_config(lr=1e39, warmup_steps=0, grad_clip=0.0, ckpt_every=3, log_every=5)
  with pytest.raises(FloatingPointError, match="at step 2"):
    train_adapters(config, paired_features(), str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == []


@pytest.mark.parametrize("change,match", [
    (lambda f, c: f.pop("text"), "missing \\['text'\\]"),
    (lambda f, c: f.update(text=f["text"][:100]), "disagree on N"),
    (lambda f, c: f["image"].__setitem__((5, 1), np.nan), "NaN/inf \\(first in row 5\\)"),
    (lambda f, c: c.train.update(batch_size=36), "multiple of the 8 devices"),
    (lambda f, c: c.train.update(batch_size=512), "larger than the 256"),
    (lambda f, c: c.train.update(ckpt_every=0), "train.ckpt_every=0 must be >= 1"),
])
def test_bad_input_names_the_problem(tmp_path, change, match):
  config, feats = small_config(), paired_features()
  change(feats, config)
  with pytest.raises(ValueError, match=match):
    train_adapters(config, feats, str(tmp_path))


def test_a_directory_recorded_for_other_inputs_is_refused(tmp_path):
  config = small_config(num_steps=4)
  feats = paired_features()
  inputs = {"params": "first", "upstream": {"train/image": "k1"}}
  train.train_adapters(params_of(config), feats, str(tmp_path), inputs=inputs)
  assert json.load(open(tmp_path / "inputs.json")) == inputs
  with pytest.raises(errors.CacheError, match="other inputs"):
    train.train_adapters(params_of(config), feats, str(tmp_path),
                         inputs={**inputs, "upstream": {"train/image": "k2"}})
