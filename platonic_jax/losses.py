"""Contrastive losses on l2-normalised embeddings: pure functions, no parameters inside.

Every loss takes the embeddings of a batch, ``a: [n, E]`` and ``b: [n, E]`` (row i of
``a`` and row i of ``b`` are the same sample seen by two modalities), and a logit
``scale`` (= 1 / temperature). Used as is, ``n`` is the whole batch and the result is
the plain global-batch loss.

Data parallel: called inside ``jax.shard_map`` with ``axis_name="data"``, ``a`` and ``b``
are this device's rows; the other devices' rows are ``lax.all_gather``-ed so that the
negatives are the *global* batch, and the returned value is the mean over this device's
rows (its share of the global loss, scaled as a mean). Its ``lax.pmean`` over the axis
is exactly the global-batch loss, and so is the ``pmean`` of its gradients (the pmap
convention, see ``platonic_jax.train``).

Formulas (N = global batch, s = scale, ``<.,.>`` = dot product):
- ``clip_loss`` (CLIP, Radford et al. 2021): symmetric InfoNCE,
  ½·[−1/N Σ_i log softmax_j(s<a_i, b_j>)_i  −1/N Σ_i log softmax_j(s<b_i, a_j>)_i].
- ``clip_one_way_loss`` (seed 000's formula): only the first term, a → b.
- ``siglip_loss`` (SigLIP, Zhai et al. 2023): −1/N Σ_i Σ_j log σ(y_ij (s<a_i, b_j> + bias)),
  y_ii = 1, y_ij = −1 (i ≠ j).
- ``multimodal_loss``: with M modalities, the mean of a pair loss over all unordered
  pairs (in the given order), or over (anchor, other) pairs (ImageBind style).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

PairLoss = Callable[..., jax.Array]


def _gather(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array | int]:
  """([N, E] all rows of every device, offset of this device's rows in them)."""
  if axis_name is None:
    return x, 0
  n = x.shape[0]
  return jax.lax.all_gather(x, axis_name, tiled=True), jax.lax.axis_index(axis_name) * n


def _at_least_f32(x: jax.Array) -> jax.Array:
  # logsumexp / log-sigmoid over N terms in (at least) float32, even for bf16 embeddings.
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _info_nce_rows(q: jax.Array, keys: jax.Array, scale, offset) -> jax.Array:
  """mean_i −log softmax_j(scale <q_i, keys_j>)[offset + i]; q: [n, E], keys: [N, E]."""
  logits = scale * jnp.einsum("ne,me->nm", q, keys)  # [n, E] x [N, E] -> [n, N]
  positives = offset + jnp.arange(q.shape[0])
  logp = jax.nn.log_softmax(_at_least_f32(logits), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, positives[:, None], axis=1))


def clip_one_way_loss(a: jax.Array, b: jax.Array, scale, *, axis_name: str | None = None):
  """Seed 000's InfoNCE: −1/N Σ_i log [exp(s<a_i,b_i>) / Σ_j exp(s<a_i,b_j>)]. Scalar."""
  b_all, offset = _gather(b, axis_name)
  return _info_nce_rows(a, b_all, scale, offset)


def clip_loss(a: jax.Array, b: jax.Array, scale, *, axis_name: str | None = None):
  """CLIP's symmetric InfoNCE: mean of the a → b and b → a cross-entropies. Scalar.

  One logit matrix serves both directions (the b → a logits are its transpose): each
  device computes its row block ``[n, N]``; the column log-sum-exps (over the rows of
  every device) are combined with a ``pmax`` / ``psum`` of ``[N]`` vectors. This halves
  the logit FLOPs and the all-gather of computing ``b @ A.T`` separately.
  """
  b_all, offset = _gather(b, axis_name)
  n = a.shape[0]
  logits = _at_least_f32(scale * jnp.einsum("ne,me->nm", a, b_all))  # [n, E] x [N, E] -> [n, N]
  rows = jnp.arange(n)
  pos = logits[rows, offset + rows]  # [n] the positive pairs of this device's rows
  a_to_b = jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos)
  col_max = jax.lax.stop_gradient(jnp.max(logits, axis=0))  # [N], for a stable exp
  if axis_name is not None:
    col_max = jax.lax.pmax(col_max, axis_name)
  col_sum = jnp.sum(jnp.exp(logits - col_max), axis=0)  # [N]
  if axis_name is not None:
    col_sum = jax.lax.psum(col_sum, axis_name)
  col_lse = jax.lax.dynamic_slice_in_dim(col_max + jnp.log(col_sum), offset, n)  # [n]
  b_to_a = jnp.mean(col_lse - pos)  # the columns of this device's rows' partners
  return 0.5 * (a_to_b + b_to_a)


def siglip_loss(a: jax.Array, b: jax.Array, scale, bias=0.0, *,
                axis_name: str | None = None):
  """SigLIP's sigmoid loss: −1/N Σ_ij log σ(y_ij (s<a_i,b_j> + bias)). Scalar.

  Normalised by the batch size N (not N²), as in the paper and big_vision.
  """
  b_all, offset = _gather(b, axis_name)
  logits = scale * jnp.einsum("ne,me->nm", a, b_all) + bias  # [n, E] x [N, E] -> [n, N]
  rows = offset + jnp.arange(a.shape[0])
  labels = jnp.where(rows[:, None] == jnp.arange(b_all.shape[0])[None, :], 1.0, -1.0)
  per_row = -jnp.sum(jax.nn.log_sigmoid(labels * _at_least_f32(logits)), axis=1)
  return jnp.mean(per_row)


PAIR_LOSSES: dict[str, PairLoss] = {
    "clip": clip_loss,
    "clip_one_way": clip_one_way_loss,
    "siglip": siglip_loss,
}


def modality_pairs(names: Sequence[str], pairs: str = "all",
                   anchor: str | None = None) -> list[tuple[str, str]]:
  """The (query, key) modality pairs a multimodal loss sums over.

  ``pairs="all"``: every unordered pair in the order of ``names``;
  ``pairs="anchor"``: ``(anchor, m)`` for every other modality m (ImageBind style).
  """
  names = list(names)
  if len(names) < 2:
    raise ValueError(f"a contrastive loss needs at least 2 modalities, got {names}")
  if pairs == "all":
    return list(itertools.combinations(names, 2))
  if pairs == "anchor":
    if anchor not in names:
      raise ValueError(f"loss.anchor={anchor!r} is not one of the modalities {names}; "
                       "set --config.loss.anchor to one of them")
    return [(anchor, m) for m in names if m != anchor]
  raise ValueError(f"loss.pairs={pairs!r}: use 'all' or 'anchor'")


def multimodal_loss(embeddings: Mapping[str, jax.Array], pair_loss: PairLoss,
                    pairs: Sequence[tuple[str, str]], **kw) -> jax.Array:
  """Mean of ``pair_loss(embeddings[p], embeddings[q], **kw)`` over ``pairs``. Scalar."""
  total = sum(pair_loss(embeddings[p], embeddings[q], **kw) for p, q in pairs)
  return total / len(pairs)


def check_loss_config(loss_cfg, names: Sequence[str]) -> None:
  """ValueError naming the field for an unusable ``config.loss``."""
  if loss_cfg.name not in PAIR_LOSSES:
    raise ValueError(f"loss.name={loss_cfg.name!r}: use one of {sorted(PAIR_LOSSES)}")
  if not loss_cfg.tau > 0:
    raise ValueError(f"loss.tau={loss_cfg.tau} must be > 0 (it is the temperature)")
  if loss_cfg.learn_tau and not 0 < loss_cfg.tau_min <= loss_cfg.tau:
    raise ValueError(f"loss.tau_min={loss_cfg.tau_min} must be in (0, loss.tau="
                     f"{loss_cfg.tau}]: it clamps the learned temperature from below")
  modality_pairs(names, loss_cfg.pairs, loss_cfg.anchor)


def init_loss_params(loss_cfg) -> dict:
  """Trainable parameters of the loss: {} for a fixed temperature.

  Learned temperature (``learn_tau``): ``log_scale`` = log(1/tau) as in CLIP (the
  parameter is the log of the logit scale); SigLIP also learns ``bias``
  (init ``loss.siglip_bias``, −10 in the paper).
  """
  if not loss_cfg.learn_tau:
    return {}
  p = {"log_scale": jnp.asarray(math.log(1.0 / loss_cfg.tau), jnp.float32)}
  if loss_cfg.name == "siglip":
    p["bias"] = jnp.asarray(loss_cfg.siglip_bias, jnp.float32)
  return p


def scale_and_bias(loss_cfg, loss_params: Mapping[str, jax.Array]):
  """(logit scale = 1/tau, SigLIP bias) from the config and the learned parameters.

  The learned log-scale is clamped at log(1/tau_min) (CLIP clamps the scale at 100,
  i.e. tau_min = 0.01); beyond the clamp its gradient is zero, so it stops growing.
  """
  if loss_cfg.learn_tau:
    log_scale = jnp.minimum(loss_params["log_scale"], math.log(1.0 / loss_cfg.tau_min))
    scale = jnp.exp(log_scale)
    bias = loss_params.get("bias", 0.0)
  else:
    scale = 1.0 / loss_cfg.tau
    bias = loss_cfg.siglip_bias
  return scale, bias


def from_config(loss_cfg, names: Sequence[str]) -> Callable:
  """``loss(embeddings, loss_params, *, axis_name=None) -> scalar`` for ``config.loss``.

  ``embeddings`` maps each modality of ``names`` to its l2-normalised ``[n, E]`` rows.
  """
  check_loss_config(loss_cfg, names)
  pair_loss = PAIR_LOSSES[loss_cfg.name]
  pairs = modality_pairs(names, loss_cfg.pairs, loss_cfg.anchor)

  def loss(embeddings, loss_params, *, axis_name=None):
    scale, bias = scale_and_bias(loss_cfg, loss_params)
    kw = dict(axis_name=axis_name)
    if loss_cfg.name == "siglip":
      kw["bias"] = bias
    return multimodal_loss(embeddings, pair_loss, pairs, scale=scale, **kw)

  return loss
