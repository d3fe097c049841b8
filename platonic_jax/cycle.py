"""Circular heads (seed 002): small MLPs that map one modality's embeddings to the next
around a cycle, trained with a cycle-consistency term beside a contrastive one.

Seed 002 proposes "MLP heads as a lightweight post-ImageBind processing method to enable
circular transformation between modalities (audio → image → text → audio)". For a cycle
m_1 → m_2 → ... → m_K → m_1 (``cycle.modalities``), head h_{a→b}: R^E → R^E maps the
shared-space embedding of a towards b's:

    h(e) = normalize(W_2 GELU(W_1 e + c_1) + c_2)          (hidden width ``cycle.hidden``)

and the heads train with, over the batch (s = the loss's logit scale),

    hop term    (1/K) Σ_{hops a→b} ℓ(h_{a→b}(e_a), e_b)      ℓ = the pair loss of
                                                              ``loss.name``
    cycle term  (1/K) Σ_{start m} mean_i ‖H_m(e_{m,i}) − e_{m,i}‖²   H_m = the K hops
                                                              from m back to m

    total += cycle.hop_weight · hop term + cycle.weight · cycle term.

The heads read the adapters' embeddings through ``stop_gradient``: they are post-hoc
(seed 002 trains them on frozen ImageBind embeddings), so the adapters — and every
number of the run without heads — are the same with or without them. They are evaluated
by retrieval after each hop (query h_{a→b}(e_a) in b's gallery) and after the full cycle
(query H_m(e_m) in m's own gallery: a sample should come back to itself).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from platonic_jax import adapters


@dataclasses.dataclass(frozen=True)
class CycleParams:
  """``config.cycle``: the cycle's modalities in order, the heads' hidden width, the
  weights of the cycle-consistency and the per-hop contrastive terms."""
  modalities: tuple[str, ...]
  hidden: int
  weight: float
  hop_weight: float

  @classmethod
  def from_config(cls, cfg) -> "CycleParams | None":
    mods = tuple(cfg.modalities)
    if not mods:
      return None
    return cls(modalities=mods, hidden=int(cfg.hidden), weight=float(cfg.weight),
               hop_weight=float(cfg.hop_weight))

  @property
  def hops(self) -> tuple[tuple[str, str], ...]:
    """(a, b) of each head, around the cycle: m_1 → m_2, ..., m_K → m_1."""
    m = self.modalities
    return tuple(zip(m, m[1:] + m[:1]))

  def path(self, start: str) -> tuple[tuple[str, str], ...]:
    """The K hops from ``start`` back to ``start``."""
    i = self.modalities.index(start)
    return self.hops[i:] + self.hops[:i]


def config_problems(cfg, modalities: Sequence[str]) -> list[str]:
  """Every unusable value of ``config.cycle``, one line each."""
  mods = tuple(cfg.modalities)
  if not mods:
    return []
  out = []
  unknown = [m for m in mods if m not in modalities]
  if unknown or len(set(mods)) != len(mods) or len(mods) < 2:
    out.append(f"cycle.modalities={mods!r}: must name at least two different modalities "
               f"of {list(modalities)} in cycle order, e.g. {tuple(modalities)!r}")
  if cfg.hidden < 1:
    out.append(f"cycle.hidden={cfg.hidden}: must be >= 1")
  for f in ("weight", "hop_weight"):
    if not cfg[f] >= 0:
      out.append(f"cycle.{f}={cfg[f]}: must be >= 0")
  return out


class Head(nn.Module):
  """[..., E] -> [..., E] unit rows: Dense(hidden) → GELU (erf) → Dense(E)."""
  dim: int
  hidden: int

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.hidden, name="hidden")(x)  # [N, E] x [E, H] -> [N, H]
    x = adapters.gelu_exact(x)  # its own derivative: see adapters.gelu_exact (jax 0.12)
    x = nn.Dense(self.dim, name="out")(x)  # [N, H] x [H, E] -> [N, E]
    return adapters.l2_normalize(x)


def head_name(a: str, b: str) -> str:
  return f"{a}_to_{b}"


class CycleHeads(nn.Module):
  """One ``Head`` per hop; parameters ``{"<a>_to_<b>": {...}}``."""
  hops: tuple[tuple[str, str], ...]
  dim: int
  hidden: int

  def setup(self):
    self.heads = {head_name(a, b): Head(self.dim, self.hidden) for a, b in self.hops}

  def hop(self, a: str, b: str, x):
    return self.heads[head_name(a, b)](x)

  def __call__(self, embeddings: Mapping[str, jax.Array]) -> dict:
    """{(a, b): h_{a→b}(embeddings[a])} for every hop (what ``init`` traces)."""
    return {(a, b): self.hop(a, b, embeddings[a]) for a, b in self.hops}


def build(params: CycleParams, dim: int) -> CycleHeads:
  return CycleHeads(hops=params.hops, dim=dim, hidden=params.hidden)


def run_path(model: CycleHeads, head_params, path, x):
  """Applies the heads of ``path`` (hops in order) to x [n, E]."""
  for a, b in path:
    x = model.apply({"params": head_params}, a, b, x, method=CycleHeads.hop)
  return x


def loss(model: CycleHeads, params: CycleParams, head_params,
         embeddings: Mapping[str, jax.Array], contrast: Callable) -> jax.Array:
  """cycle.hop_weight · hop term + cycle.weight · cycle term (see the module docstring).

  ``contrast(q, k)``: the pair loss on this device's rows (negatives all-gathered), as
  the contrastive objective calls it. Returns this device's share (a mean over its rows).
  """
  e = {m: jax.lax.stop_gradient(embeddings[m]) for m in params.modalities}
  hop_terms = [contrast(model.apply({"params": head_params}, a, b, e[a],
                                    method=CycleHeads.hop), e[b]) for a, b in params.hops]
  cyc_terms = []
  for m in params.modalities:
    back = run_path(model, head_params, params.path(m), e[m])
    cyc_terms.append(jnp.mean(jnp.sum(jnp.square(back - e[m]), axis=1)))
  k = len(params.modalities)
  return params.hop_weight * sum(hop_terms) / k + params.weight * sum(cyc_terms) / k


def apply_fn(model: CycleHeads):
  """A jitted ``(head_params, path, x [n, E]) -> [n, E]`` on host arrays."""
  fns = {}

  def run(head_params, path, x):
    path = tuple(path)
    if path not in fns:
      fns[path] = jax.jit(lambda p, x: run_path(model, p, path, x))
    return np.asarray(fns[path](head_params, jnp.asarray(x, jnp.float32)))

  return run
