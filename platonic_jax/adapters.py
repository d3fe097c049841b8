"""Adapters: the only trained parameters. One per modality, each maps frozen features
``[N, D_m]`` into the shared space ``R^E`` (E = ``config.adapter.dim``) and l2-normalises.

- ``kind="linear"``: seed 000's ``W_m`` (``r = W_m x``; optional bias).
- ``kind="mlp"``: a post-hoc alignment head (seed 002): Dense(hidden) → GELU (erf) →
  dropout → Dense(E).

Any number of modalities: ``Adapters(names=(...))`` holds one adapter per name; its
parameters are ``{name: {...}}``, so adding a modality is adding a name.

    model = adapters.from_config(config)
    params = model.init(key, {m: jnp.zeros((1, d_m)) for m in names})["params"]
    z = adapters.embed(model, params, "image", x)   # np [N, E], unit rows
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("linear", "mlp")


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
      x = nn.gelu(x, approximate=False)  # exact erf GELU, as torch.nn.GELU()
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


def from_config(config) -> Adapters:
  """The ``Adapters`` for ``config.modalities`` (names, in order) and ``config.adapter``."""
  a = config.adapter
  if a.kind not in KINDS:
    raise ValueError(f"adapter.kind={a.kind!r}: use one of {KINDS}")
  if a.dim < 1:
    raise ValueError(f"adapter.dim={a.dim} must be >= 1 (the shared space's dimension)")
  return Adapters(names=tuple(config.modalities.keys()), dim=a.dim, kind=a.kind,
                  use_bias=a.bias, hidden=a.mlp_hidden, dropout=a.get("dropout", 0.0))


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
