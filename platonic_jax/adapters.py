"""Adapters: the only trained parameters. One per modality, each maps frozen features
``[N, D_m]`` into the shared space ``R^E`` (E = ``config.adapter.dim``) and l2-normalises.

- ``kind="linear"``: seed 000's ``W_m`` (``r = W_m x``; optional bias).
- ``kind="mlp"``: a post-hoc alignment head (seed 002): Dense(hidden) → GELU (erf) →
  dropout → Dense(E).
- ``kind="glu"``: SAIL's gated MLP (Zhang et al., "Assessing and Learning Alignment of
  Unimodal Vision and Language Models", CVPR 2025, arXiv 2412.04616; its code's
  ``AlignmentLayer`` with ``linear_type="star"``: a LayerNorm on the inputs, then
  ``StarMLP``): LayerNorm(x) → ReLU6(W_g x) ⊙ (W_v x) (both clamped to ±1e3 as SAIL does)
  → dropout → W_o (E); Xavier-uniform kernels, zero biases (SAIL's init). SAIL's hidden
  width is 8·D (``width_factor``); here it is ``adapter.mlp_hidden``.
- ``identity`` (``adapter.identity = "<modality>"``): that modality is not adapted
  (LiT-style: a locked side, only the others learn): r = x / ‖x‖, which needs its width
  to be E.

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

from platonic_jax import errors, typed_json

KINDS = ("linear", "mlp", "glu")
IDENTITY = "identity"  # the kind of the modality named by ``adapter.identity``
GLU_CLAMP = 1e3        # SAIL clamps both branches to [-1e3, 1e3]


@jax.custom_jvp
def gelu_exact(x: jax.Array) -> jax.Array:
  """GELU with the exact erf, x/2 · (1 + erf(x/√2)), as ``torch.nn.GELU()``.

  Its own derivative (Φ(x) + x φ(x)) instead of differentiating ``lax.erf``: in jax 0.12
  the derivative of erf fails ``shard_map``'s varying-axes check ("Primitive polynomial
  requires varying manual axes to match"), which breaks the data-parallel step of the
  MLP adapters. Same values as ``jax.nn.gelu(approximate=False)`` to ~1e-7.
  """
  # Python-float constants are weakly typed: they take x's dtype (float64 under x64),
  # where an np.float32 constant would round the result to float32's precision.
  return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  cdf = 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))
  pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
  return gelu_exact(x), dx * (cdf + x * pdf)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows to unit length: x / max(‖x‖, eps) (as torch.nn.functional.normalize)."""
  # at least float32 (bf16 embeddings), float64 kept (the tests' float64 references)
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))),
                          axis=-1, keepdims=True))
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
    elif self.kind == "glu":
      dense = lambda width, name: nn.Dense(width, name=name,
                                           kernel_init=nn.initializers.xavier_uniform())
      x = nn.LayerNorm(epsilon=1e-5, name="norm")(x)  # torch.nn.LayerNorm's eps
      gate = jnp.clip(dense(self.hidden, "gate")(x), -GLU_CLAMP, GLU_CLAMP)  # [N, D] -> [N, H]
      value = jnp.clip(dense(self.hidden, "value")(x), -GLU_CLAMP, GLU_CLAMP)
      x = nn.relu6(gate) * value
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = dense(self.dim, "out")(x)  # [N, H] x [H, E] -> [N, E]
    elif self.kind == IDENTITY:
      if x.shape[-1] != self.dim:
        raise errors.InputError(
            f"adapter.identity: the identity side's features are {x.shape[-1]} wide but "
            f"adapter.dim={self.dim}; set --config.adapter.dim={x.shape[-1]} (the locked "
            "side's width is the shared space)")
    else:
      raise ValueError(f"adapter.kind={self.kind!r}: use one of {KINDS}")
    return l2_normalize(x)


class Adapters(nn.Module):
  """One ``Adapter`` per modality name; ``__call__`` embeds whichever are given. The
  modalities in ``identity`` get the identity (no parameters)."""
  names: Sequence[str]
  dim: int
  kind: str = "linear"
  use_bias: bool = False
  hidden: int = 1024
  dropout: float = 0.0
  identity: Sequence[str] = ()

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
        kind = IDENTITY if name in self.identity else self.kind
        out[name] = Adapter(self.dim, kind, self.use_bias, self.hidden, self.dropout,
                            name=name)(features[name], train=train)
    return out


@dataclasses.dataclass(frozen=True)
class AdapterParams:
  """What defines the adapters (``config.adapter``); the hidden width and dropout only
  for the "mlp" and "glu" kinds; ``identity``: the modality left unadapted ("": none)."""
  kind: str
  dim: int
  bias: bool | None = None          # linear only
  mlp_hidden: int | None = None     # mlp / glu only
  dropout: float | None = None      # mlp / glu only
  identity: str = dataclasses.field(default="", metadata=typed_json.OPTIONAL)

  @classmethod
  def from_config(cls, cfg) -> "AdapterParams":
    if cfg.kind in ("mlp", "glu"):
      return cls(kind=cfg.kind, dim=int(cfg.dim), mlp_hidden=int(cfg.mlp_hidden),
                 dropout=float(cfg.dropout), identity=str(cfg.identity))
    return cls(kind=cfg.kind, dim=int(cfg.dim), bias=bool(cfg.bias),
               identity=str(cfg.identity))


def config_problems(cfg, modalities: Sequence[str] = (),
                    widths: Mapping[str, int] | None = None) -> list[str]:
  """Every unusable value of ``config.adapter``, one line each. ``modalities``: the
  config's; ``widths``: the features' widths when known before any work (synthetic)."""
  out = []
  if cfg.kind not in KINDS:
    out.append(f"adapter.kind={cfg.kind!r}: allowed {KINDS}")
  if cfg.dim < 1:
    out.append(f"adapter.dim={cfg.dim}: must be >= 1 (the shared space's dimension)")
  if cfg.identity and modalities:
    if cfg.identity not in modalities:
      out.append(f"adapter.identity={cfg.identity!r}: not one of the modalities "
                 f"{list(modalities)} ('' = every modality is adapted)")
    elif len(modalities) < 2:
      out.append("adapter.identity: at least one other modality must learn")
    elif widths and cfg.identity in widths and widths[cfg.identity] != cfg.dim:
      out.append(f"adapter.identity={cfg.identity!r}: its features are "
                 f"{widths[cfg.identity]} wide but adapter.dim={cfg.dim}; the identity "
                 f"needs equal widths: set adapter.dim={widths[cfg.identity]}")
  if cfg.kind in ("mlp", "glu"):
    if cfg.mlp_hidden < 1:
      out.append(f"adapter.mlp_hidden={cfg.mlp_hidden}: must be >= 1")
    if not 0 <= cfg.dropout < 1:
      out.append(f"adapter.dropout={cfg.dropout}: must be in [0, 1)")
  return out


def build(params: AdapterParams, names: Sequence[str]) -> Adapters:
  """The ``Adapters`` of ``params`` for the modalities ``names`` (in order)."""
  return Adapters(names=tuple(names), dim=params.dim, kind=params.kind,
                  use_bias=bool(params.bias), hidden=params.mlp_hidden or 0,
                  dropout=params.dropout or 0.0,
                  identity=(params.identity,) if params.identity else ())


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
