"""Adapters vs float64 NumPy (linear) and PyTorch (MLP head), any number of modalities."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from platonic_jax import adapters


def _model(kind="linear", bias=False, names=("image", "text")):
  cfg = ml_collections.ConfigDict(dict(kind=kind, dim=5, bias=bias, mlp_hidden=7,
                                       dropout=0.0, identity=""))
  return adapters.build(adapters.AdapterParams.from_config(cfg), names)


def _np_unit(z):
  return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("bias", [False, True])
def test_linear_adapter_is_normalised_xw(bias):
  names = ("image", "text", "audio")  # any number of modalities
  dims = {"image": 6, "text": 9, "audio": 3}
  model = _model(bias=bias, names=names)
  params = model.init(jax.random.PRNGKey(0),
                      {m: jnp.zeros((1, d)) for m, d in dims.items()})["params"]
  assert sorted(params) == sorted(names)
  rng = np.random.default_rng(0)
  for m, d in dims.items():
    w = np.asarray(params[m]["W"]["kernel"], np.float64)
    assert w.shape == (d, 5)
    assert ("bias" in params[m]["W"]) == bias
    x = rng.normal(size=(11, d))
    want = x @ w + (np.asarray(params[m]["W"]["bias"], np.float64) if bias else 0)
    got = adapters.embed(model, params, m, x.astype(np.float32), batch_size=4)  # 3 chunks
    assert got.shape == (11, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, _np_unit(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)


def test_mlp_head_matches_torch():
  torch = pytest.importorskip("torch")
  model = _model(kind="mlp")
  params = model.init(jax.random.PRNGKey(1), {"image": jnp.zeros((1, 6)),
                                              "text": jnp.zeros((1, 4))})["params"]
  p = jax.tree.map(lambda a: torch.tensor(np.asarray(a, np.float64)), params["text"])
  head = torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.GELU(), torch.nn.Linear(7, 5))
  head = head.double()
  with torch.no_grad():
    head[0].weight.copy_(p["hidden"]["kernel"].T)
    head[0].bias.copy_(p["hidden"]["bias"])
    head[2].weight.copy_(p["out"]["kernel"].T)
    head[2].bias.copy_(p["out"]["bias"])
  x = np.random.default_rng(1).normal(size=(9, 4))
  want = torch.nn.functional.normalize(head(torch.tensor(x)), dim=1).detach().numpy()
  got = adapters.embed(model, params, "text", x.astype(np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_rows_stay_finite():
  model = _model()
  params = model.init(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 3))})["params"]
  out = adapters.embed(model, params, "image", np.zeros((2, 3), np.float32))
  assert np.isfinite(out).all()


def test_bad_inputs_name_the_problem():
  bad = ml_collections.ConfigDict(dict(kind="transformer", dim=0, bias=False, mlp_hidden=7,
                                       dropout=0.0, identity=""))
  problems = adapters.config_problems(bad)
  assert any("adapter.kind='transformer'" in p for p in problems)
  assert any("adapter.dim=0" in p for p in problems)
  with pytest.raises(ValueError, match="adapter.kind"):
    _model(kind="transformer").init(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 3))})
  model = _model()
  params = model.init(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 3))})["params"]
  with pytest.raises(ValueError, match="unknown modality 'video'"):
    adapters.embed(model, params, "video", np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    adapters.embed(model, params, "image", np.zeros((3,)))


def test_exact_gelu_and_its_derivative_against_float64():
  from scipy.special import erf
  x = np.linspace(-6, 6, 121)
  want = 0.5 * x * (1 + erf(x / np.sqrt(2)))
  dwant = 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
  xs = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(adapters.gelu_exact(xs), want, rtol=1e-6, atol=1e-6)  # float32
  got = jax.grad(lambda v: adapters.gelu_exact(v).sum())(xs)
  np.testing.assert_allclose(got, dwant, rtol=1e-6, atol=1e-6)
