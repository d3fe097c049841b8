"""The training recipes' parts against independent references (docs/training.md):
every caption as a positive (a batch with duplicated images), the STRUCTURE regulariser
(float64 NumPy values, PyTorch float64 gradients, 8 devices == 1 device), SAIL's GLU
adapter and the identity side (PyTorch), the modality gap (float64 NumPy), ASIF's tiled
top-k (NumPy argsort) and relative representations, the circular heads' loss."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy.special import log_expit, logsumexp, softmax

from platonic_jax import (adapters, asif, cycle, errors, losses, losses_structure, objective,
                          sharding)
from platonic_jax.evaluation import modality_gap


def _unit(rng, n, e):
  x = rng.normal(size=(n, e))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------ float64 references
# Written from the formulas of docs/training.md and the papers, not from the modules.

def np_masked_info_nce(a, b, s, groups):
  """−mean_i log softmax over {i} ∪ {j: group_j != group_i} of s<a_i, b_j>, at j = i."""
  logits = s * a @ b.T
  same = (groups[:, None] == groups[None, :]) & ~np.eye(len(a), dtype=bool)
  logits = np.where(same, -np.inf, logits)
  return -np.mean(np.diag(logits) - logsumexp(logits, axis=1))


def np_masked_clip(a, b, s, groups):
  return 0.5 * (np_masked_info_nce(a, b, s, groups) + np_masked_info_nce(b, a, s, groups))


def np_masked_siglip(a, b, s, bias, groups):
  logits = s * a @ b.T + bias
  labels = 2 * np.eye(len(a)) - 1
  same = (groups[:, None] == groups[None, :]) & ~np.eye(len(a), dtype=bool)
  return -np.sum(np.where(same, 0.0, log_expit(labels * logits))) / len(a)


def np_unit_centred(x):
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  return u - u.mean(0)


def np_walks(x, tau, levels):
  u = np_unit_centred(x)
  p = softmax(u @ u.T / tau, axis=1)
  return [np.linalg.matrix_power(p, l) for l in range(1, levels + 1)]


def np_js(p, q):
  m = (p + q) / 2
  kl = lambda a, b: np.sum(np.where(a > 0, a * np.log(a / b), 0.0), axis=1)
  return np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m))


def np_structure(frozen, adapted, tau, levels):
  """R_S = (1/L) Σ_l (1/l) JS(P_l(frozen) ‖ P_l(adapted))."""
  pf, pa = np_walks(frozen, tau, levels), np_walks(adapted, tau, levels)
  return sum(np_js(f, a) / l for l, (f, a) in enumerate(zip(pf, pa), 1)) / levels


def torch_structure(torch, frozen, adapted, tau, levels):
  def walks(x):
    u = torch.nn.functional.normalize(x, dim=1)
    u = u - u.mean(0, keepdim=True)
    p = torch.softmax(u @ u.T / tau, dim=1)
    return [torch.linalg.matrix_power(p, l) for l in range(1, levels + 1)]

  def js(p, q):
    m = (p + q) / 2
    return torch.mean(torch.sum(0.5 * p * torch.log(p / m) + 0.5 * q * torch.log(q / m), 1))

  pf = [w.detach() for w in walks(frozen)]
  pa = walks(adapted)
  return sum(js(f, a) / l for l, (f, a) in enumerate(zip(pf, pa), 1)) / levels


def _loss_cfg(**kw):
  d = dict(name="clip", tau=0.1, learn_tau=False, tau_min=0.01, pairs="all", anchor="image",
           siglip_bias=-10.0, positives="chosen", structure_weight=0.0, structure_levels=1,
           structure_tau=0.07)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def _duplicated_batch(rng, n=16, e=6):
  """A batch whose rows 0-2 are one image with three captions and rows 5-6 another:
  duplicated image rows, different captions."""
  groups = np.arange(n)
  groups[1], groups[2], groups[6] = 0, 0, 5
  a = _unit(rng, n, e)
  a[1], a[2], a[6] = a[0], a[0], a[5]  # the same image embedding, repeated
  b = _unit(rng, n, e)
  return a, b, groups


# ------------------------------------------------------------------ all captions


@pytest.mark.parametrize("name", ["clip", "clip_one_way", "siglip"])
def test_same_image_captions_are_never_negatives(name):
  rng = np.random.default_rng(0)
  a, b, groups = _duplicated_batch(rng)
  fn = losses.PAIR_LOSSES[name]
  kw = dict(bias=-10.0) if name == "siglip" else {}
  got = fn(jnp.float32(a), jnp.float32(b), 10.0, groups=jnp.int32(groups), **kw)
  want = {"clip": lambda: np_masked_clip(a, b, 10.0, groups),
          "clip_one_way": lambda: np_masked_info_nce(a, b, 10.0, groups),
          "siglip": lambda: np_masked_siglip(a, b, 10.0, -10.0, groups)}[name]()
  np.testing.assert_allclose(got, want, rtol=2e-5)
  plain = fn(jnp.float32(a), jnp.float32(b), 10.0, **kw)
  assert not np.isclose(got, plain)  # the duplicates were negatives without groups
  # Distinct groups: exactly the plain loss.
  distinct = fn(jnp.float32(a), jnp.float32(b), 10.0, groups=jnp.arange(16), **kw)
  np.testing.assert_allclose(distinct, plain, rtol=1e-6)


@pytest.mark.parametrize("name", ["clip", "clip_one_way", "siglip"])
def test_masked_loss_gradients_match_torch(name):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 4))
  x[3] = x[2]  # a duplicated image
  groups = np.arange(12)
  groups[3] = 2
  w = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  fn = losses.PAIR_LOSSES[name]
  kw = dict(bias=-2.0) if name == "siglip" else {}

  def jax_loss(wx, wy):
    a, b = x @ wx, y @ wy
    a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=1, keepdims=True)
    return fn(a, b, 5.0, groups=jnp.asarray(groups), **kw)

  with jax.enable_x64(True):
    val, grads = jax.value_and_grad(jax_loss, argnums=(0, 1))(*map(jnp.asarray, w))
  tw = [torch.tensor(v, requires_grad=True) for v in w]
  ta = torch.nn.functional.normalize(torch.tensor(x) @ tw[0], dim=1)
  tb = torch.nn.functional.normalize(torch.tensor(y) @ tw[1], dim=1)
  same = torch.tensor((groups[:, None] == groups[None, :]) & ~np.eye(12, dtype=bool))
  logits = ta @ tb.T * 5.0
  labels = torch.arange(12)
  ce = lambda z: torch.nn.functional.cross_entropy(z.masked_fill(same, float("-inf")), labels)
  if name == "clip":
    tl = 0.5 * (ce(logits) + ce(logits.T))
  elif name == "clip_one_way":
    tl = ce(logits)
  else:
    sign = 2 * torch.eye(12, dtype=torch.float64) - 1
    terms = torch.nn.functional.logsigmoid(sign * (logits - 2.0))
    tl = -terms.masked_fill(same, 0.0).sum() / 12
  tl.backward()
  np.testing.assert_allclose(float(val), tl.item(), rtol=1e-10)
  for g, t in zip(grads, tw):
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ STRUCTURE


@pytest.mark.parametrize("levels,tau", [(1, 0.07), (3, 0.2)])
def test_structure_matches_float64_numpy(levels, tau):
  rng = np.random.default_rng(2)
  x, z = rng.normal(size=(24, 9)), rng.normal(size=(24, 4))
  params = losses_structure.StructureParams(weight=1.0, levels=levels, tau=tau)
  got = losses_structure.structure_term(jnp.float32(x), jnp.float32(z), params)
  np.testing.assert_allclose(got, np_structure(x, z, tau, levels), rtol=2e-4)
  # The same space: no divergence; λ and the mean over modalities.
  assert abs(float(losses_structure.structure_term(jnp.float32(x), jnp.float32(x),
                                                   params))) < 1e-6
  reg = losses_structure.regulariser({"a": jnp.float32(x), "b": jnp.float32(z)},
                                     {"a": jnp.float32(z), "b": jnp.float32(z[:, ::-1])},
                                     dataclasses_replace(params, weight=2.5))
  want = 2.5 * 0.5 * (np_structure(x, z, tau, levels) + np_structure(z, z[:, ::-1], tau,
                                                                      levels))
  np.testing.assert_allclose(reg, want, rtol=2e-4)


@pytest.mark.parametrize("tau", [0.07, 0.05, 1 / 60, 1e-3])
def test_walk_softmax_without_its_max_pass_equals_the_softmax(tau):
  """_row_softmax shifts each row by a norm bound instead of its max where τ >= 1/60
  (there the bound sits at most 1/τ above the row's max, for any unit, centred rows:
  here of very unequal norms); below it, the exact softmax. Either way the float64
  softmax, never an underflowed 0 / 0."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(32, 6)) * rng.uniform(0.2, 3.0, size=(32, 1))
  x[:4] = x[4] + 1e-3 * rng.normal(size=(4, 6))   # near-duplicates: rows far from the mean
  u = np_unit_centred(x)
  norms = np.linalg.norm(u, axis=1)
  logits = u @ u.T / tau
  gap = (norms * norms.max() / tau - logits.max(1)).max()   # bound above the row max
  assert gap <= 1 / tau + 1e-9                               # the docstring's bound
  xc = losses_structure._unit_centred(jnp.float32(x), None)
  got = losses_structure._row_softmax(xc @ xc.T / tau, xc, tau, None)
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(got, softmax(logits, axis=1), rtol=2e-3, atol=1e-6)
  if tau < 1 / losses_structure.SHIFT_SLACK:   # the bound alone would have underflowed
    assert np.exp(np.float32(-gap)) == 0 and gap > 104


def dataclasses_replace(p, **kw):
  import dataclasses  # noqa: PLC0415
  return dataclasses.replace(p, **kw)


def test_structure_gradient_matches_torch_autograd():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(3)
  x, w = rng.normal(size=(20, 7)), rng.normal(size=(7, 5))
  params = losses_structure.StructureParams(weight=1.0, levels=3, tau=0.1)

  def jax_loss(w):
    z = x @ w
    return losses_structure.structure_term(jnp.asarray(x), z / jnp.linalg.norm(
        z, axis=1, keepdims=True), params)

  with jax.enable_x64(True):
    val, grad = jax.value_and_grad(jax_loss)(jnp.asarray(w))
  tw = torch.tensor(w, requires_grad=True)
  tx = torch.tensor(x)
  tl = torch_structure(torch, tx, torch.nn.functional.normalize(tx @ tw, dim=1), 0.1, 3)
  tl.backward()
  np.testing.assert_allclose(float(val), tl.item(), rtol=1e-9)
  np.testing.assert_allclose(grad, tw.grad.numpy(), rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(float(val), np_structure(x, np.asarray(x @ w), 0.1, 3),
                             rtol=1e-9)


@pytest.mark.parametrize("name,structure,groups", [
    ("clip", 2.0, False), ("siglip", 0.5, True), ("clip_one_way", 1.0, True)])
def test_objective_on_eight_devices_equals_the_global_batch(num_devices, name, structure,
                                                            groups):
  """The contrastive loss with groups + STRUCTURE (levels 2: the gathered walk matrix)
  inside shard_map: pmean of the per-device shares and of their gradients = the
  single-device global-batch objective."""
  rng = np.random.default_rng(4)
  n = 4 * num_devices
  feats = {"image": rng.normal(size=(n, 6)).astype(np.float32),
           "text": rng.normal(size=(n, 5)).astype(np.float32)}
  g = np.arange(n, dtype=np.int32)
  if groups:
    g[1], g[2], g[n - 1] = 0, 0, n - 2  # duplicated images across device boundaries
    feats["image"][1] = feats["image"][2] = feats["image"][0]
  cfg = _loss_cfg(name=name, structure_weight=structure, structure_levels=2,
                  structure_tau=0.2)
  lp = losses.LossParams.from_config(cfg, ("image", "text"))
  model = adapters.build(adapters.AdapterParams("linear", 4, bias=False), ("image", "text"))
  params = {"adapters": model.init(jax.random.PRNGKey(0), feats)["params"]}
  batch = dict(feats)
  if groups:
    batch[objective.GROUPS] = g
  single = objective.make_loss_fn(model, lp)
  want, want_g = jax.value_and_grad(single)(params, batch, jax.random.PRNGKey(1))
  # the reference: contrastive (masked) + λ · mean of the NumPy STRUCTURE terms
  emb = {m: np.asarray(model.apply({"params": params["adapters"]}, {m: feats[m]})[m],
                       np.float64) for m in feats}
  contrastive = float(losses.objective(lp)(
      {m: jnp.float32(v) for m, v in emb.items()}, {},
      groups=jnp.int32(g) if groups else None))
  ref = contrastive + structure * np.mean([np_structure(feats[m].astype(np.float64),
                                                        emb[m], 0.2, 2) for m in feats])
  np.testing.assert_allclose(want, ref, rtol=1e-4)

  assert_sharded_equals(objective.make_loss_fn(model, lp, axis_name=sharding.DATA), params,
                        batch, jax.random.PRNGKey(1), want, want_g)


def assert_sharded_equals(sharded, params, batch, rng, want, want_g):
  """The pmean over the data mesh of each device's share ``sharded(params, rows, rng)``
  and of its gradients (params pcast to per-device values, as in the step) equals the
  single-device ``want`` and ``want_g``; returns the sharded gradients."""
  mesh = sharding.data_mesh()

  def per_device(params, batch):
    params = jax.lax.pcast(params, sharding.DATA, to="varying")
    v, grads = jax.value_and_grad(sharded)(params, batch, rng)
    return jax.lax.pmean(v, sharding.DATA), jax.lax.pmean(grads, sharding.DATA)

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(sharding.DATA)),
                            out_specs=(P(), P())))
  got, got_g = f(params, jax.device_put(batch, sharding.batch_sharding(mesh)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               got_g, want_g)
  return got_g


def test_structure_config_is_checked():
  bad = _loss_cfg(structure_weight=-1.0)
  assert any("loss.structure_weight=-1.0" in p for p in losses.config_problems(bad, ("a", "b")))
  bad = _loss_cfg(structure_weight=1.0, structure_levels=0, structure_tau=0.0)
  probs = losses.config_problems(bad, ("a", "b"))
  assert any("loss.structure_levels=0" in p for p in probs)
  assert any("loss.structure_tau=0.0" in p for p in probs)
  assert losses.LossParams.from_config(_loss_cfg(), ("a", "b")).structure is None
  assert any("loss.positives='some'" in p for p in
             losses.config_problems(_loss_cfg(positives="some"), ("a", "b")))


# ------------------------------------------------------------------ adapters


def _adapter_model(kind, identity=""):
  cfg = ml_collections.ConfigDict(dict(kind=kind, dim=5, bias=False, mlp_hidden=7,
                                       dropout=0.0, identity=identity))
  return adapters.build(adapters.AdapterParams.from_config(cfg), ("image", "text"))


def test_glu_adapter_matches_torch():
  torch = pytest.importorskip("torch")
  model = _adapter_model("glu")
  params = model.init(jax.random.PRNGKey(3), {"image": jnp.zeros((1, 6)),
                                              "text": jnp.zeros((1, 4))})["params"]
  p = jax.tree.map(lambda a: torch.tensor(np.asarray(a, np.float64)), params["text"])
  assert set(p) == {"norm", "gate", "value", "out"}
  x = torch.tensor(np.random.default_rng(5).normal(size=(9, 4)) * 3 + 1)
  # SAIL: LayerNorm on the inputs, then StarMLP: ReLU6(f1 x) * f2 x -> g (clamped ±1e3)
  h = torch.nn.functional.layer_norm(x, (4,), p["norm"]["scale"], p["norm"]["bias"], 1e-5)
  lin = lambda q, v: v @ q["kernel"] + q["bias"]
  h = torch.nn.functional.relu6(lin(p["gate"], h).clamp(-1e3, 1e3)) * lin(
      p["value"], h).clamp(-1e3, 1e3)
  want = torch.nn.functional.normalize(lin(p["out"], h), dim=1).numpy()
  got = adapters.embed(model, params, "text", x.numpy().astype(np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Xavier-uniform kernels (SAIL's init), zero biases
  k = np.asarray(params["text"]["gate"]["kernel"])
  assert np.abs(k).max() <= np.sqrt(6 / (4 + 7)) and not np.any(params["text"]["gate"]["bias"])


def test_identity_side_is_the_unit_features_and_needs_equal_widths():
  model = _adapter_model("linear", identity="text")
  params = model.init(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 6)),
                                              "text": jnp.zeros((1, 5))})["params"]
  assert set(params) == {"image"}  # only the other side learns
  y = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  np.testing.assert_allclose(adapters.embed(model, params, "text", y),
                             y / np.linalg.norm(y, axis=1, keepdims=True), rtol=1e-6)
  with pytest.raises(errors.InputError, match=r"adapter.dim=5.*--config.adapter.dim=4"):
    model.init(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 6)), "text": jnp.zeros((1, 4))})
  cfg = ml_collections.ConfigDict(dict(kind="linear", dim=5, bias=False, mlp_hidden=7,
                                       dropout=0.0, identity="text"))
  assert any("needs equal widths: set adapter.dim=4" in p for p in
             adapters.config_problems(cfg, ("image", "text"), {"image": 6, "text": 4}))
  cfg.identity = "audio"
  assert any("adapter.identity='audio'" in p
             for p in adapters.config_problems(cfg, ("image", "text")))


# ------------------------------------------------------------------ modality gap


def np_gap(x, y):
  """The modality gap in float64 NumPy, from Liang et al.'s definitions and the
  documented classifier (an independent write-up: eigendecomposition for the PCA)."""
  xu = x / np.linalg.norm(x, axis=1, keepdims=True)
  yu = y / np.linalg.norm(y, axis=1, keepdims=True)
  delta = xu.mean(0) - yu.mean(0)
  g = delta / np.linalg.norm(delta)
  share = lambda u: np.var(u @ g) / np.trace(np.cov(u.T, bias=True))
  h = len(x) // 2
  fit = np.vstack([xu[:h], yu[:h]])
  mu = fit.mean(0)
  w, v = np.linalg.eigh((fit - mu).T @ (fit - mu))
  r = min(x.shape[1], 64, 2 * h - 2)
  basis = v[:, ::-1][:, :r]
  px, py = (xu - mu) @ basis, (yu - mu) @ basis
  mx, my = px[:h].mean(0), py[:h].mean(0)
  within = np.vstack([px[:h] - mx, py[:h] - my])
  cov = within.T @ within / (2 * h - 2)
  cov = cov + 1e-3 * np.trace(cov) / r * np.eye(r)
  d = np.linalg.solve(cov, mx - my)
  c = (mx + my) / 2
  acc = np.mean(np.concatenate([(px[h:] - c) @ d > 0, (py[h:] - c) @ d <= 0]))
  return np.linalg.norm(delta), share(xu), share(yu), acc


@pytest.mark.parametrize("shift,d", [(0.0, 6), (0.8, 6), (0.3, 80)])
def test_modality_gap_matches_float64_numpy(shift, d):
  rng = np.random.default_rng(6)
  n = 60
  z = rng.normal(size=(n, d))
  x = z + 0.3 * rng.normal(size=(n, d)) + shift
  y = z + 0.3 * rng.normal(size=(n, d)) - shift
  got = modality_gap.gap_stats(x.astype(np.float32), y.astype(np.float32), ("a", "b"))
  dist, sa, sb, acc = np_gap(x.astype(np.float32).astype(np.float64),
                             y.astype(np.float32).astype(np.float64))
  np.testing.assert_allclose(got.distance, dist, rtol=1e-9)
  np.testing.assert_allclose(got.variance_share["a"], sa, rtol=1e-8)
  np.testing.assert_allclose(got.variance_share["b"], sb, rtol=1e-8)
  np.testing.assert_allclose(got.separability, acc)
  if shift >= 0.8:
    assert got.separability > 0.9 and got.distance > 0.5
  with pytest.raises(errors.InputError, match="one space"):
    modality_gap.gap_stats(x, y[:, :3], ("a", "b"))


# ------------------------------------------------------------------ ASIF


@pytest.mark.parametrize("tile", [7, 64, 4096])
def test_asif_top_anchors_equal_a_full_sort(num_devices, tile):
  rng = np.random.default_rng(7)
  q = rng.normal(size=(21, 5)).astype(np.float32)  # not a multiple of the devices
  a = rng.normal(size=(50, 5)).astype(np.float32)
  a[17] = a[3]  # a tie: the lower anchor index comes first
  sims, idx = asif.top_anchors(q, a, 9, tile=tile)
  s = q.astype(np.float64) @ a.T.astype(np.float64)
  order = np.lexsort((np.broadcast_to(np.arange(50), s.shape), -s), axis=1)[:, :9]
  np.testing.assert_array_equal(idx, order)
  np.testing.assert_allclose(sims, np.take_along_axis(s, order, 1), rtol=1e-5)


def test_asif_relative_representations():
  rng = np.random.default_rng(8)
  ax, ay = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
  space = asif.AsifSpace("asif", ("x", "y"), {"x": ax, "y": ay}, k=5, p=3.0)
  q = rng.normal(size=(4, 6))
  got = space.embed("x", q)
  qn, an = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (q, ax))
  s = qn @ an.T
  want = np.zeros_like(s)
  for i, row in enumerate(s):
    top = np.argsort(-row)[:5]
    want[i, top] = row[top] ** 3
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
  assert space.k == 5 and asif.AsifSpace("a", ("x", "y"), {"x": ax, "y": ay}, 800, 8).k == 40
  # joint: the rows of both sides in a basis of their span, every inner product kept
  e = {"x": got, "y": space.embed("y", rng.normal(size=(3, 3)))}
  j = space.joint(e)
  full = np.vstack([e["x"], e["y"]])
  red = np.vstack([j["x"], j["y"]])
  assert red.shape[1] <= 7
  np.testing.assert_allclose(red @ red.T, full @ full.T, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ circular heads


def np_head(p, x):
  """A circular head in float64 NumPy: normalize(W_2 GELU_erf(W_1 x + b_1) + b_2)."""
  from scipy.special import erf  # noqa: PLC0415
  h = x @ p["hidden"]["kernel"] + p["hidden"]["bias"]
  h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
  o = h @ p["out"]["kernel"] + p["out"]["bias"]
  return o / np.linalg.norm(o, axis=1, keepdims=True)


def np_clip(a, b, s):
  la = s * a @ b.T
  one = lambda l: -np.mean(np.diag(l) - logsumexp(l, axis=1))
  return 0.5 * (one(la) + one(la.T))


def test_cycle_heads_loss_matches_numpy_and_torch_and_stays_post_hoc():
  torch = pytest.importorskip("torch")
  params = cycle.CycleParams(("audio", "image", "text"), hidden=8, weight=2.0, hop_weight=0.5)
  assert params.hops == (("audio", "image"), ("image", "text"), ("text", "audio"))
  assert params.path("text") == (("text", "audio"), ("audio", "image"), ("image", "text"))
  rng = np.random.default_rng(9)
  emb = {m: _unit(rng, 10, 4) for m in params.modalities}
  heads = cycle.build(params, 4)
  with jax.enable_x64(True):
    hp = heads.init(jax.random.PRNGKey(0), {m: jnp.asarray(v) for m, v in emb.items()})["params"]
    hp = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), hp)
    contrast = lambda q, k: losses.clip_loss(q, k, 10.0)
    fn = lambda hp, e: cycle.loss(heads, params, hp, e, contrast)
    e64 = {m: jnp.asarray(v) for m, v in emb.items()}
    got, grads = jax.value_and_grad(fn)(hp, e64)
    g_emb = jax.grad(fn, argnums=1)(hp, e64)
  names = {h: cycle.head_name(*h) for h in params.hops}
  p = {h: jax.tree.map(np.asarray, hp[f"heads_{names[h]}"]) for h in params.hops}
  run = lambda path, x: functools.reduce(lambda v, h: np_head(p[h], v), path, x)
  hop = np.mean([np_clip(run(((a, b),), emb[a]), emb[b], 10.0) for a, b in params.hops])
  cyc = np.mean([np.mean(np.sum((run(params.path(m), emb[m]) - emb[m]) ** 2, 1))
                 for m in params.modalities])
  np.testing.assert_allclose(got, 0.5 * hop + 2.0 * cyc, rtol=1e-10)
  # gradients w.r.t. the heads vs PyTorch autograd
  tp = {h: {k: {kk: torch.tensor(vv, requires_grad=True) for kk, vv in v.items()}
            for k, v in p[h].items()} for h in params.hops}

  def t_head(q, x):
    hh = torch.nn.functional.gelu(x @ q["hidden"]["kernel"] + q["hidden"]["bias"])
    return torch.nn.functional.normalize(hh @ q["out"]["kernel"] + q["out"]["bias"], dim=1)

  te = {m: torch.tensor(v) for m, v in emb.items()}
  trun = lambda path, x: functools.reduce(lambda v, h: t_head(tp[h], v), path, x)

  def t_clip(a, b):
    logits = a @ b.T * 10.0
    labels = torch.arange(len(a))
    return 0.5 * (torch.nn.functional.cross_entropy(logits, labels) +
                  torch.nn.functional.cross_entropy(logits.T, labels))

  tl = (0.5 * sum(t_clip(trun(((a, b),), te[a]), te[b]) for a, b in params.hops) / 3 +
        2.0 * sum(torch.mean(torch.sum((trun(params.path(m), te[m]) - te[m]) ** 2, 1))
                  for m in params.modalities) / 3)
  tl.backward()
  for h in params.hops:
    for layer in ("hidden", "out"):
      for k in ("kernel", "bias"):
        np.testing.assert_allclose(grads[f"heads_{names[h]}"][layer][k],
                                   tp[h][layer][k].grad.numpy(), rtol=1e-8, atol=1e-12)
  # post-hoc: no gradient reaches the embeddings (the adapters)
  assert all(float(np.abs(np.asarray(v)).max()) == 0.0 for v in g_emb.values())
  bad = ml_collections.ConfigDict(dict(modalities=("image", "video"), hidden=0, weight=1.0,
                                       hop_weight=-1.0))
  probs = cycle.config_problems(bad, ("image", "text"))
  assert any("cycle.modalities" in p for p in probs) and any("cycle.hidden=0" in p
                                                             for p in probs)
  assert any("cycle.hop_weight=-1.0" in p for p in probs)


def test_objective_with_circular_heads_on_eight_devices_equals_one(num_devices):
  rng = np.random.default_rng(11)
  n = 4 * num_devices
  names = ("image", "text", "audio")
  feats = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in zip(names, (6, 5, 3))}
  lp = losses.LossParams.from_config(_loss_cfg(pairs="anchor"), names)
  cp = cycle.CycleParams(("audio", "image", "text"), hidden=8, weight=1.0, hop_weight=1.0)
  model = adapters.build(adapters.AdapterParams("linear", 4, bias=False), names)
  heads = cycle.build(cp, 4)
  params = {"adapters": model.init(jax.random.PRNGKey(0), feats)["params"],
            "heads": heads.init(jax.random.PRNGKey(1), {m: jnp.zeros((1, 4))
                                                        for m in names})["params"]}
  single = objective.make_loss_fn(model, lp, heads, cp)
  want, want_g = jax.value_and_grad(single)(params, feats, jax.random.PRNGKey(2))
  got_g = assert_sharded_equals(
      objective.make_loss_fn(model, lp, heads, cp, axis_name=sharding.DATA), params, feats,
      jax.random.PRNGKey(2), want, want_g)
  assert float(jnp.abs(got_g["heads"]["heads_audio_to_image"]["out"]["kernel"]).max()) > 0


# ------------------------------------------------------------------ the step, all captions


def _all_caption_steps(devices, steps=5):
  """Steps of the train loop's feeding (rows map + groups) and the jitted step on a mesh
  over ``devices``: 48 images with 2-3 captions each."""
  from helpers import load_config  # noqa: PLC0415
  from platonic_jax import plan, train  # noqa: PLC0415
  rng = np.random.default_rng(10)
  owner = np.repeat(np.arange(48), [2, 3] * 24)  # 120 caption rows
  feats = {"image": rng.normal(size=(48, 6)).astype(np.float32),
           "text": (rng.normal(size=(120, 5)) + rng.normal(size=(48, 5))[owner] * 2
                    ).astype(np.float32)}
  c = load_config()
  c.adapter.dim = 4
  c.train.update(dict(num_steps=10, batch_size=32, warmup_steps=1, lr=1e-2))
  c.loss.update(dict(structure_weight=1.0, structure_levels=2))
  p = train.TrainParams.from_config(c, plan.modality_order(c))
  model = adapters.build(p.adapter, p.modalities)
  tx, _ = train.make_optimizer(p.optim)
  mesh = sharding.data_mesh(devices)
  state = jax.jit(functools.partial(train.init_state, model, p, {"image": 6, "text": 5}, tx),
                  out_shardings=sharding.replicated(mesh))()
  step_fn = train.make_step_fn(model, p.loss, tx)
  batches = train._Batches(feats, 32, p.seed, mesh, {"image": owner}, owner)
  out = []
  try:
    with jax.set_mesh(mesh):
      for s in range(steps):
        batch = batches.get(s)
        idx = train.batch_indices(s, 120, 32, p.seed)
        np.testing.assert_array_equal(np.asarray(batch[objective.GROUPS]), owner[idx])
        np.testing.assert_array_equal(np.asarray(batch["image"]), feats["image"][owner[idx]])
        state, m = step_fn(state, batch)
        out.append(float(m["loss"]))
  finally:
    batches.close()
  return np.array(out), jax.tree.map(np.asarray, state.params)


def test_all_caption_rows_train_the_same_on_eight_devices_as_on_one(num_devices):
  l8, p8 = _all_caption_steps(jax.devices())
  l1, p1 = _all_caption_steps(jax.devices()[:1])
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  assert l8[-1] < l8[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p8, p1)


def test_all_captions_without_groups_says_what_to_pass(tmp_path):
  from helpers import load_config  # noqa: PLC0415
  from platonic_jax import plan, train  # noqa: PLC0415
  c = load_config()
  c.loss.positives = "all_captions"
  p = train.TrainParams.from_config(c, plan.modality_order(c))
  x = np.zeros((64, 4), np.float32)
  with pytest.raises(errors.InputError, match="pass groups"):
    train.train_adapters(p, {"image": x, "text": x}, str(tmp_path))
