"""The STRUCTURE regulariser: keep the frozen spaces' neighbourhood structure while aligning.

Gröger, Wen, Le, Brbić, "With Limited Data for Multimodal Alignment, Let the STRUCTURE
Guide You", NeurIPS 2025, arXiv 2506.16895 (Sec. 3, the regulariser R_S; public code
``src/loss/clip_loss.py::structure_reg`` of github.com/mlbio-epfl/STRUCTURE). For one
modality with frozen features X and adapted embeddings Z of the same batch of B rows:

    x̂_i = x_i / ‖x_i‖,  x̃_i = x̂_i − mean_j x̂_j         (unit rows, then centred: the
                                                         code's default, centering="mean")
    P(X)_ij = softmax_j(<x̃_i, x̃_j> / τ_s)               (row-stochastic [B, B]; the
                                                         diagonal, self-similarity, kept)
    R_S(X, Z) = (1/L) Σ_{l=1..L} (1/l) · JS(P(X)^l ‖ P(Z)^l)
    JS(P ‖ Q) = (1/B) Σ_i [½ KL(P_i ‖ M_i) + ½ KL(Q_i ‖ M_i)],  M = (P + Q)/2

P^l, the l-th matrix power, is the l-step random walk on the batch's similarity graph:
level 1 keeps each sample's neighbourhood, higher levels the neighbourhoods of its
neighbours. The training objective adds λ · mean_m R_S(X_m, Z_m) over the modalities
(the code averages its image and text terms the same way). Fields: ``loss.structure_weight``
(λ; 0 = off), ``loss.structure_levels`` (L), ``loss.structure_tau`` (τ_s).

Where this follows the public code and where it does not:
- weighting 1/l and the final division by L: the code's ``weighting="inverse"`` returns
  ``total / levels``; with L = 1 both are plain JS. The issue's formula λ Σ_l (1/l) JS_l
  is this with λ/L folded into λ.
- JS: the code calls ``F.kl_div((aligned + eps).log(), m + eps)``, i.e. KL(M ‖ Q) —
  ``kl_div(input, target)`` is KL(target ‖ exp(input)) — the reversed KL of the
  Jensen-Shannon divergence the paper names. Here JS is the paper's, ½KL(P‖M) + ½KL(Q‖M)
  (bounded by log 2 per row), computed as ½ Σ p log p + ½ Σ q log q − Σ m log m with
  0 log 0 = 0 instead of adding eps = 1e-12.
- the code ramps λ linearly over ``warmup_steps``; here λ is constant.
- the code uses the contrastive loss's temperature; here τ_s is its own field.

Data parallel: called inside the shard_map step with ``axis_name``, x and z are this
device's rows. The batch mean is a ``psum``; each device forms its row block [n, B] of P
against the all-gathered rows; for L > 1 the row blocks of P are all-gathered once
([B, B]) and every level is one [n, B] x [B, B] product per device, so the B³ work of the
powers is split over the devices, not repeated. The returned value is this device's
share (a mean over its rows), whose ``pmean`` is the global-batch value — the convention
of ``platonic_jax.losses``. Cost per modality: 2·B²·(D + E) FLOP for the two
similarity matrices (+ 4·B²·E backward for the adapted one), 2·(L − 1)·B³ per side for
the powers (+ twice that backward for the adapted side), and ~4 B² transcendental
functions (softmax exps, the JS logs) per level. The softmaxes skip their row-max pass
(``_row_softmax``: a shift bounded by the features' norms).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class StructureParams:
  """λ (``loss.structure_weight``), L (``structure_levels``), τ_s (``structure_tau``)."""
  weight: float
  levels: int
  tau: float

  @classmethod
  def from_config(cls, cfg) -> "StructureParams | None":
    """From ``config.loss``; None when ``structure_weight`` is 0 (off)."""
    if not float(cfg.structure_weight):
      return None
    return cls(weight=float(cfg.structure_weight), levels=int(cfg.structure_levels),
               tau=float(cfg.structure_tau))


def config_problems(cfg) -> list[str]:
  """Every unusable STRUCTURE value of ``config.loss``, one line each."""
  out = []
  if not cfg.structure_weight >= 0:
    out.append(f"loss.structure_weight={cfg.structure_weight}: must be >= 0 (λ; 0 turns "
               "the STRUCTURE regulariser off)")
  if cfg.structure_weight:
    if cfg.structure_levels < 1:
      out.append(f"loss.structure_levels={cfg.structure_levels}: must be >= 1 (the random "
                 "walk lengths 1..L)")
    if not cfg.structure_tau > 0:
      out.append(f"loss.structure_tau={cfg.structure_tau}: must be > 0 (the temperature "
                 "of the similarity softmax)")
  return out


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _gather(x, axis_name):
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _unit_centred(x: jax.Array, axis_name: str | None) -> jax.Array:
  """[n, D] -> unit rows minus the mean unit row of the *global* batch, float32."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  total = _psum(jnp.sum(x, axis=0), axis_name)
  count = _psum(jnp.asarray(x.shape[0], x.dtype), axis_name)
  return x - total / count


# ``_row_softmax`` shifts by a bound instead of the row max where 1 / τ <= SHIFT_SLACK: the
# row's largest term is then >= exp(-SHIFT_SLACK), far from fp32 underflow (~exp(-87)).
SHIFT_SLACK = 60.0


def _row_softmax(logits: jax.Array, xc: jax.Array, tau: float,
                 axis_name: str | None) -> jax.Array:
  """``jax.nn.softmax(logits, axis=1)`` for the Gram rows logits_ij = <x̃_i, x̃_j> / τ of
  this device's unit, centred rows xc [n, D] (``_unit_centred``) against the global
  batch, without the pass over [n, B] that finds each row's max where τ allows it.

  Why: softmax is invariant to a per-row shift, and the features bound it. By
  Cauchy-Schwarz every logit of row i is at most u_i = |x̃_i| · max_j |x̃_j| / τ, and the
  row holds its own logit |x̃_i|² / τ, so its max lies in [|x̃_i|² / τ, u_i], an interval
  of width |x̃_i| (max_j |x̃_j| - |x̃_i|) / τ <= max_j |x̃_j|² / (4τ) <= 1 / τ (unit rows
  minus their mean have |x̃| <= 2). Shifting by u_i therefore leaves every row's largest
  term >= exp(-1 / τ): safe for τ >= 1 / SHIFT_SLACK (decided when tracing, τ being a
  config constant; a ``lax.cond`` on the batch's actual gap was tried first and dropped
  after one XLA:CPU abort in CI that could not be ruled out as its cause). Smaller τ
  takes the exact softmax. The benchmark on the 2-core Xeon (docs/training.md): the
  STRUCTURE step 14% faster at B = 1024, 21% at B = 8192. The max pass costs more than
  its share there because XLA:CPU fuses it into the similarity product and adds a tree
  reduction for it.
  """
  if tau < 1.0 / SHIFT_SLACK:
    return jax.nn.softmax(logits, axis=1)
  # No gradient flows through the shift (the softmax does not depend on it). The global
  # max norm through an all-gather of the [n] norms: ``lax.pmax`` has no differentiation
  # rule, and in the first (``lax.cond``) version it made the jitted step 20 ms slower.
  norms = jax.lax.stop_gradient(jnp.linalg.norm(xc, axis=1))   # [n]
  upper = norms * _gather(norms, axis_name).max() / tau        # >= every logit of the row
  e = jnp.exp(logits - upper[:, None])
  return e / jnp.sum(e, axis=1, keepdims=True)


def walk_rows(x: jax.Array, tau: float, levels: int, axis_name: str | None = None):
  """This device's rows of P, P², ..., P^L for the features x [n, D] of its rows.

  Returns a list of L arrays [n, B] (B = the global batch).
  """
  xc = _unit_centred(x, axis_name)
  x_all = _gather(xc, axis_name)
  logits = jnp.einsum("nd,md->nm", xc, x_all) / tau  # [n, D] x [B, D] -> [n, B]
  p = _row_softmax(logits, xc, tau, axis_name)
  out = [p]
  if levels > 1:
    p_all = _gather(p, axis_name)  # [B, B]: the whole walk matrix, once
    for _ in range(levels - 1):
      out.append(out[-1] @ p_all)  # [n, B] x [B, B] -> [n, B]
  return out


def _xlogx(x):
  """x log x with 0 log 0 = 0, and a finite gradient at 0."""
  pos = x > 0
  return jnp.where(pos, x * jnp.log(jnp.where(pos, x, 1.0)), 0.0)


def js_rows(p: jax.Array, q: jax.Array) -> jax.Array:
  """[n] Jensen-Shannon divergence of each row pair of the row-stochastic p, q [n, B]."""
  m = 0.5 * (p + q)
  return jnp.sum(0.5 * _xlogx(p) + 0.5 * _xlogx(q) - _xlogx(m), axis=1)


def structure_term(frozen: jax.Array, adapted: jax.Array, params: StructureParams,
                   axis_name: str | None = None) -> jax.Array:
  """R_S(X, Z) for one modality (this device's share; scalar). frozen: [n, D] features,
  adapted: [n, E] embeddings of the same rows."""
  target = walk_rows(jax.lax.stop_gradient(frozen), params.tau, params.levels, axis_name)
  target = [jax.lax.stop_gradient(t) for t in target]
  walks = walk_rows(adapted, params.tau, params.levels, axis_name)
  total = 0.0
  for level, (p, q) in enumerate(zip(target, walks), start=1):
    total = total + jnp.mean(js_rows(p, q)) / level
  return total / params.levels


def regulariser(frozen: Mapping[str, jax.Array], adapted: Mapping[str, jax.Array],
                params: StructureParams, axis_name: str | None = None) -> jax.Array:
  """λ · mean over the modalities of ``adapted`` of R_S(frozen[m], adapted[m]). Scalar."""
  names = list(adapted)
  terms = [structure_term(frozen[m], adapted[m], params, axis_name) for m in names]
  return params.weight * sum(terms) / len(terms)
