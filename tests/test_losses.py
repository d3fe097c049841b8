"""Contrastive losses vs float64 NumPy / PyTorch, and sharded == global-batch."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy.special import log_expit, logsumexp

from platonic_jax import losses, sharding


def _unit(rng, n, e):
  x = rng.normal(size=(n, e))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# float64 NumPy references, written from the papers' formulas (not from losses.py).
def np_info_nce(a, b, s):
  logits = s * a @ b.T
  return -np.mean(np.diag(logits) - logsumexp(logits, axis=1))


def np_clip(a, b, s):
  return 0.5 * (np_info_nce(a, b, s) + np_info_nce(b, a, s))


def np_siglip(a, b, s, bias):
  logits = s * a @ b.T + bias
  labels = 2 * np.eye(len(a)) - 1
  return -np.sum(log_expit(labels * logits)) / len(a)


def _objective(cfg, order):
  return losses.objective(losses.LossParams.from_config(cfg, order))


def _cfg(**kw):
  d = dict(name="clip", tau=0.07, learn_tau=False, tau_min=0.01, pairs="all",
           anchor="image", siglip_bias=-10.0, positives="chosen", structure_weight=0.0,
           structure_levels=1, structure_tau=0.07)
  d.update(kw)
  return ml_collections.ConfigDict(d)


@pytest.mark.parametrize("n,e,tau", [(16, 8, 0.07), (33, 5, 1.0)])
def test_pair_losses_match_float64_numpy(n, e, tau):
  rng = np.random.default_rng(n)
  a, b = _unit(rng, n, e), _unit(rng, n, e)
  s = 1.0 / tau
  aj, bj = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  np.testing.assert_allclose(losses.clip_loss(aj, bj, s), np_clip(a, b, s), rtol=2e-5)
  np.testing.assert_allclose(losses.clip_one_way_loss(aj, bj, s), np_info_nce(a, b, s),
                             rtol=2e-5)
  np.testing.assert_allclose(losses.siglip_loss(aj, bj, s, -3.0), np_siglip(a, b, s, -3.0),
                             rtol=2e-5)
  # The one-way loss is not symmetric; CLIP's is.
  assert not np.isclose(np_info_nce(a, b, s), np_info_nce(b, a, s))
  np.testing.assert_allclose(losses.clip_loss(bj, aj, s), np_clip(a, b, s), rtol=2e-5)


def test_clip_gradient_matches_torch_autograd():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(12, 6)), rng.normal(size=(12, 7))
  wx, wy = rng.normal(size=(6, 4)), rng.normal(size=(7, 4))

  def jax_loss(wx, wy):
    a = x @ wx / jnp.linalg.norm(x @ wx, axis=1, keepdims=True)
    b = y @ wy / jnp.linalg.norm(y @ wy, axis=1, keepdims=True)
    return losses.clip_loss(a, b, 1 / 0.1)

  with jax.enable_x64(True):
    val, grads = jax.value_and_grad(jax_loss, argnums=(0, 1))(jnp.asarray(wx), jnp.asarray(wy))

  twx = torch.tensor(wx, requires_grad=True)
  twy = torch.tensor(wy, requires_grad=True)
  ta = torch.nn.functional.normalize(torch.tensor(x) @ twx, dim=1)
  tb = torch.nn.functional.normalize(torch.tensor(y) @ twy, dim=1)
  logits = ta @ tb.T / 0.1
  labels = torch.arange(12)
  tl = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) +
              torch.nn.functional.cross_entropy(logits.T, labels))
  tl.backward()
  np.testing.assert_allclose(float(val), tl.item(), rtol=1e-10)
  np.testing.assert_allclose(grads[0], twx.grad.numpy(), rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(grads[1], twy.grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("pairs", ["all", "anchor"])
@pytest.mark.parametrize("name", ["clip", "clip_one_way", "siglip"])
def test_multimodal_loss_three_modalities(name, pairs):
  rng = np.random.default_rng(1)
  names = ("text", "image", "audio")
  emb = {m: _unit(rng, 10, 4) for m in names}
  cfg = _cfg(name=name, pairs=pairs, anchor="image", tau=0.2)
  got = _objective(cfg, names)({m: jnp.float32(v) for m, v in emb.items()}, {})
  ref_pair = {"clip": lambda a, b: np_clip(a, b, 5.0),
              "clip_one_way": lambda a, b: np_info_nce(a, b, 5.0),
              "siglip": lambda a, b: np_siglip(a, b, 5.0, -10.0)}[name]
  want_pairs = (list(itertools.combinations(names, 2)) if pairs == "all" else
                [("image", "text"), ("image", "audio")])
  want = np.mean([ref_pair(emb[p], emb[q]) for p, q in want_pairs])
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_learned_temperature_is_clamped():
  cfg = _cfg(learn_tau=True, tau=0.07, tau_min=0.01, name="siglip", siglip_bias=-7.0)
  p = losses.init_loss_params(losses.LossParams.from_config(cfg, ("image", "text")))
  np.testing.assert_allclose(p["log_scale"], math.log(1 / 0.07), rtol=1e-6)
  np.testing.assert_allclose(p["bias"], -7.0)
  lp = losses.LossParams.from_config(cfg, ("image", "text"))
  s, b = losses.scale_and_bias(lp, {"log_scale": jnp.float32(10.0), "bias": p["bias"]})
  np.testing.assert_allclose(s, 100.0, rtol=1e-5)  # 1/tau_min
  # Beyond the clamp the log-scale gets no gradient (it cannot run away).
  g = jax.grad(lambda ls: losses.scale_and_bias(lp, {"log_scale": ls})[0])(jnp.float32(10.))
  assert g == 0.0
  g = jax.grad(lambda ls: losses.scale_and_bias(lp, {"log_scale": ls})[0])(jnp.float32(1.))
  np.testing.assert_allclose(g, math.e, rtol=1e-5)
  # Fixed temperature: no parameters.
  assert losses.init_loss_params(losses.LossParams.from_config(_cfg(), ("a", "b"))) == {}


@pytest.mark.parametrize("kw,match", [
    (dict(name="infonce"), "loss.name"),
    (dict(tau=0.0), "loss.tau"),
    (dict(learn_tau=True, tau_min=0.5), "loss.tau_min"),
    (dict(pairs="anchor", anchor="video"), "loss.anchor"),
    (dict(pairs="some"), "loss.pairs"),
])
def test_bad_loss_config_names_the_field(kw, match):
  problems = losses.config_problems(_cfg(**kw), ("image", "text"))
  assert len(problems) == 1 and match in problems[0], problems


def test_pairs_spelt_out_set_the_direction_of_one_way_losses():
  rng = np.random.default_rng(5)
  emb = {m: _unit(rng, 10, 4) for m in ("image", "text", "audio")}
  jemb = {m: jnp.float32(v) for m, v in emb.items()}
  order = ("image", "text", "audio")
  one_way = lambda pairs: float(_objective(_cfg(name="clip_one_way", pairs=pairs, tau=0.2),  # noqa: E731
                                           order)(jemb, {}))
  np.testing.assert_allclose(one_way("text->image"), np_info_nce(emb["text"], emb["image"], 5.0),
                             rtol=2e-5)
  np.testing.assert_allclose(one_way("image->text"), np_info_nce(emb["image"], emb["text"], 5.0),
                             rtol=2e-5)
  np.testing.assert_allclose(
      one_way("audio->text, image->text"),
      (np_info_nce(emb["audio"], emb["text"], 5.0) + np_info_nce(emb["image"], emb["text"],
                                                                 5.0)) / 2, rtol=2e-5)
  # "all": each pair queried from the modality listed first in the order (eval.pair first).
  assert losses.resolve_pairs("all", "", ("text", "image")) == (("text", "image"),)
  for bad in ("image->video", "image-text", "image->image", "image->text,image->text"):
    with pytest.raises(ValueError, match="loss.pairs"):
      losses.resolve_pairs(bad, "", order)


@pytest.mark.parametrize("name", ["clip", "clip_one_way", "siglip"])
def test_sharded_loss_equals_global_batch_loss(name, num_devices):
  """Per-device shares (all_gather negatives) pmean to the single-device loss, and their
  pmean-ed per-device gradients equal the global-batch gradient."""
  rng = np.random.default_rng(2)
  n, e = 4 * num_devices, 6
  a, b = jnp.float32(_unit(rng, n, e)), jnp.float32(_unit(rng, n, e))
  cfg = _cfg(name=name, tau=0.1)
  loss = _objective(cfg, ("image", "text"))
  want, want_g = jax.value_and_grad(
      lambda a, b: loss({"image": a, "text": b}, {}), argnums=(0, 1))(a, b)
  np.testing.assert_allclose(
      want, {"clip": np_clip, "clip_one_way": lambda a, b, s: np_info_nce(a, b, s),
             "siglip": lambda a, b, s: np_siglip(a, b, s, -10.0)}[name](
                 np.float64(a), np.float64(b), 10.0), rtol=2e-5)

  mesh = sharding.data_mesh()
  def per_device(a, b):
    l, g = jax.value_and_grad(
        lambda a, b: loss({"image": a, "text": b}, {}, axis_name=sharding.DATA),
        argnums=(0, 1))(a, b)
    # a, b are this device's rows: their gradient is d(global)/d(rows) times #devices.
    return jax.lax.pmean(l, sharding.DATA), tuple(x / num_devices for x in g)
  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data")),
                            out_specs=(P(), P("data"))))
  got, got_g = f(a, b)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for gg, wg in zip(got_g, want_g):
    np.testing.assert_allclose(gg, wg, rtol=1e-5, atol=1e-7)
