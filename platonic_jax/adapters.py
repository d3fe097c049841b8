"""Adapters: the only trained parameters. One per modality, each maps frozen features
``[N, D_m]`` into the shared space ``R^E`` (E = ``config.adapter.dim``) and l2-normalises.

- ``kind="linear"``: seed 000's ``W_m`` (``r = W_m x``; optional bias).
- ``kind="mlp"``: a post-hoc alignment head (seed 002): Dense(hidden) → GELU (erf) →
  dropout → Dense(E).

Any number of modalities: ``Adapters(names=(...))`` holds one adapter per name; its
parameters are ``{name: {...}}``, so adding a modality is adding a name.

    model = adapters.build(adapters.AdapterParams.from_config(config.adapter), names)
    params = model.init(key, {m: jnp.zeros((1, d_m)) for m in names})["params"]
    z = adapters.embed(model, params, "image", x)   # np [N, E], unit rows
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("linear", "mlp")


@jax.custom_jvp
def gelu_exact(x: jax.Array) -> jax.Array:
  """GELU with the exact erf, x/2 · (1 + erf(x/√2)), as ``torch.nn.GELU()``.

  Its own derivative (Φ(x) + x φ(x)) instead of differentiating ``lax.erf``: in jax 0.12
  the derivative of erf fails ``shard_map``'s varying-axes check ("Primitive polynomial
  requires varying manual axes to match"), which breaks the data-parallel step of the
  MLP adapters. Same values as ``jax.nn.gelu(approximate=False)`` to ~1e-7.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(0.7071067811865476)))


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  cdf = 0.5 * (1.0 + jax.lax.erf(x * np.float32(0.7071067811865476)))
  pdf = jnp.exp(-0.5 * x * x) * np.float32(0.3989422804014327)  # 1/sqrt(2 pi)
  return gelu_exact(x), dx * (cdf + x * pdf)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows to unit length: x / max(‖x‖, eps) (as torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  return (x / jnp.maximum(norm, eps)).astype(x.dtype)


class Adapter(nn.Module):
  """One modality's adapter: ``[..., D] -> [..., E]``, unit-norm rows, float32 out."""
  dim: int
  kind: str = "linear"
  use_bias: bool = False
  hidden: int = 1024
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    if self.kind == "linear":
      x = nn.Dense(self.dim, use_bias=self.use_bias, name="W")(x)  # [N, D] x [D, E] -> [N, E]
    elif self.kind == "mlp":
      x = nn.Dense(self.hidden, name="hidden")(x)  # [N, D] x [D, H] -> [N, H]
      x = gelu_exact(x)  # exact erf GELU, as torch.nn.GELU()
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Dense(self.dim, name="out")(x)  # [N, H] x [H, E] -> [N, E]
    else:
      raise ValueError(f"adapter.kind={self.kind!r}: use one of {KINDS}")
    return l2_normalize(x)


class Adapters(nn.Module):
  """One ``Adapter`` per modality name; ``__call__`` embeds whichever are given."""
  names: Sequence[str]
  dim: int
  kind: str = "linear"
  use_bias: bool = False
  hidden: int = 1024
  dropout: float = 0.0

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array], *,
               train: bool = False) -> dict[str, jax.Array]:
    """{name: [n, D_name]} -> {name: [n, E]} (unit rows)."""
    unknown = set(features) - set(self.names)
    if unknown:
      raise ValueError(f"no adapter for modalities {sorted(unknown)}; the adapters are "
                       f"{list(self.names)} (config.modalities)")
    out = {}
    for name in self.names:
      if name in features:
        out[name] = Adapter(self.dim, self.kind, self.use_bias, self.hidden, self.dropout,
                            name=name)(features[name], train=train)
    return out


@dataclasses.dataclass(frozen=True)
class AdapterParams:
  """What defines the adapters (``config.adapter``); the MLP fields only for kind "mlp"."""
  kind: str
  dim: int
  bias: bool | None = None          # linear only
  mlp_hidden: int | None = None     # mlp only
  dropout: float | None = None      # mlp only

  @classmethod
  def from_config(cls, cfg) -> "AdapterParams":
    if cfg.kind == "mlp":
      return cls(kind=cfg.kind, dim=int(cfg.dim), mlp_hidden=int(cfg.mlp_hidden),
                 dropout=float(cfg.dropout))
    return cls(kind=cfg.kind, dim=int(cfg.dim), bias=bool(cfg.bias))


def config_problems(cfg) -> list[str]:
  """Every unusable value of ``config.adapter``, one line each."""
  out = []
  if cfg.kind not in KINDS:
    out.append(f"adapter.kind={cfg.kind!r}: allowed {KINDS}")
  if cfg.dim < 1:
    out.append(f"adapter.dim={cfg.dim}: must be >= 1 (the shared space's dimension)")
  if cfg.kind == "mlp":
    if cfg.mlp_hidden < 1:
      out.append(f"adapter.mlp_hidden={cfg.mlp_hidden}: must be >= 1")
    if not 0 <= cfg.dropout < 1:
      out.append(f"adapter.dropout={cfg.dropout}: must be in [0, 1)")
  return out


def build(params: AdapterParams, names: Sequence[str]) -> Adapters:
  """The ``Adapters`` of ``params`` for the modalities ``names`` (in order)."""
  return Adapters(names=tuple(names), dim=params.dim, kind=params.kind,
                  use_bias=bool(params.bias), hidden=params.mlp_hidden or 0,
                  dropout=params.dropout or 0.0)


def embed(model: Adapters, params, name: str, x: np.ndarray, *,
          batch_size: int = 8192) -> np.ndarray:
  """Embeds ``x: [N, D]`` with modality ``name``'s adapter -> np float32 ``[N, E]``.

  ``params`` are the adapter parameters ``{name: ...}`` (``TrainResult.params["adapters"]``).
  Runs jitted in row chunks of ``batch_size`` on the default device (inference is a
  single matmul per row; no need to shard it).
  """
  if name not in model.names:
    raise ValueError(f"unknown modality {name!r}; the adapters are {list(model.names)}")
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"embed({name!r}) expects features [N, D], got shape {x.shape}")
  fn = _apply_fn(model, name)
  chunks = [np.asarray(fn(params, x[i:i + batch_size]))
            for i in range(0, x.shape[0], batch_size)]
  if not chunks:
    return np.zeros((0, model.dim), np.float32)
  return np.concatenate(chunks, axis=0)


_APPLY_CACHE: dict = {}


def _apply_fn(model: Adapters, name: str):
  # Cached so that embedding many chunks / calls compiles once per (model, name, shape).
  key = (model, name)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(
        lambda p, x: model.apply({"params": p}, {name: x})[name])
  return _APPLY_CACHE[key]
