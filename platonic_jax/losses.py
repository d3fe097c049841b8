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
- ``multimodal_loss``: with M modalities, the mean of a pair loss over the directed
  (query, key) pairs of ``LossParams.pairs`` (``config.loss.pairs``): every pair, the
  anchor with each other modality (ImageBind style), or a list spelt out. The direction
  matters for ``clip_one_way`` only (the others are symmetric in a and b).

Several positives per sample (``config.loss.positives="all_captions"``): every pair loss
takes ``groups: [n]`` int, the image each row belongs to (all-gathered like the rows).
Row i's positive stays column i; every other column of the same group (another caption
of the same image, or the same image again) is removed from the negatives: its logit is
−inf in the softmaxes and it has no term in the sigmoid loss. With distinct groups the
losses are exactly the plain ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from platonic_jax import errors, typed_json
from platonic_jax.losses_structure import StructureParams

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


def _same_group(groups, axis_name, n: int, offset):
  """[n, N] bool: column j is another row of row i's group (never the positive j = i),
  or None without groups. groups: [n] int, this device's rows."""
  if groups is None:
    return None
  g_all, _ = _gather(groups, axis_name)
  rows = offset + jnp.arange(n)
  cols = jnp.arange(g_all.shape[0])
  return (groups[:, None] == g_all[None, :]) & (rows[:, None] != cols[None, :])


def _mask(logits, same):
  return logits if same is None else jnp.where(same, -jnp.inf, logits)


def _info_nce_rows(q: jax.Array, keys: jax.Array, scale, offset, same=None) -> jax.Array:
  """mean_i −log softmax_j(scale <q_i, keys_j>)[offset + i]; q: [n, E], keys: [N, E];
  same: [n, N] columns left out of row i's negatives (or None)."""
  logits = scale * jnp.einsum("ne,me->nm", q, keys)  # [n, E] x [N, E] -> [n, N]
  positives = offset + jnp.arange(q.shape[0])
  logp = jax.nn.log_softmax(_mask(_at_least_f32(logits), same), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, positives[:, None], axis=1))


def clip_one_way_loss(a: jax.Array, b: jax.Array, scale, *, axis_name: str | None = None,
                      groups=None):
  """Seed 000's InfoNCE: −1/N Σ_i log [exp(s<a_i,b_i>) / Σ_j exp(s<a_i,b_j>)]. Scalar."""
  b_all, offset = _gather(b, axis_name)
  return _info_nce_rows(a, b_all, scale, offset, _same_group(groups, axis_name, a.shape[0],
                                                             offset))


def clip_loss(a: jax.Array, b: jax.Array, scale, *, axis_name: str | None = None,
              groups=None):
  """CLIP's symmetric InfoNCE: mean of the a → b and b → a cross-entropies. Scalar.

  One logit matrix serves both directions (the b → a logits are its transpose): each
  device computes its row block ``[n, N]``; the column log-sum-exps (over the rows of
  every device) are combined with a ``pmax`` / ``psum`` of ``[N]`` vectors. This halves
  the logit FLOPs and the all-gather of computing ``b @ A.T`` separately.
  """
  b_all, offset = _gather(b, axis_name)
  n = a.shape[0]
  logits = _at_least_f32(scale * jnp.einsum("ne,me->nm", a, b_all))  # [n, E] x [N, E] -> [n, N]
  # The same-group mask is symmetric (group_i == group_j), so one masked block also
  # serves the columns' direction.
  logits = _mask(logits, _same_group(groups, axis_name, n, offset))
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
                axis_name: str | None = None, groups=None):
  """SigLIP's sigmoid loss: −1/N Σ_ij log σ(y_ij (s<a_i,b_j> + bias)). Scalar.

  Normalised by the batch size N (not N²), as in the paper and big_vision.
  """
  b_all, offset = _gather(b, axis_name)
  logits = scale * jnp.einsum("ne,me->nm", a, b_all) + bias  # [n, E] x [N, E] -> [n, N]
  rows = offset + jnp.arange(a.shape[0])
  labels = jnp.where(rows[:, None] == jnp.arange(b_all.shape[0])[None, :], 1.0, -1.0)
  terms = jax.nn.log_sigmoid(labels * _at_least_f32(logits))
  same = _same_group(groups, axis_name, a.shape[0], offset)
  if same is not None:
    terms = jnp.where(same, 0.0, terms)
  return jnp.mean(-jnp.sum(terms, axis=1))


PAIR_LOSSES: dict[str, PairLoss] = {
    "clip": clip_loss,
    "clip_one_way": clip_one_way_loss,
    "siglip": siglip_loss,
}


PAIR_MODES = ("all", "anchor")  # or an explicit "a->b,c->d" list
POSITIVES = ("chosen", "all_captions")


def resolve_pairs(spec: str, anchor: str, order: Sequence[str]) -> tuple[tuple[str, str], ...]:
  """The directed (query, key) modality pairs of ``config.loss.pairs``.

  ``"all"``: every unordered pair, each queried from the modality earlier in ``order``
  (``eval.pair`` first, then the others by name); ``"anchor"``: ``(anchor, m)`` for every
  other modality m (ImageBind style); otherwise a comma-separated list of ``q->k``.
  Raises ConfigError naming the field for anything else.
  """
  order = list(order)
  if spec == "all":
    return tuple(itertools.combinations(order, 2))
  if spec == "anchor":
    if anchor not in order:
      raise errors.ConfigError(f"loss.anchor={anchor!r}: not one of the modalities {order}")
    return tuple((anchor, m) for m in order if m != anchor)
  pairs = []
  for part in spec.split(","):
    q, sep, k = part.strip().partition("->")
    q, k = q.strip(), k.strip()
    if not sep or q not in order or k not in order or q == k:
      raise errors.ConfigError(
          f"loss.pairs={spec!r}: {part.strip()!r} is not 'query->key' of two different "
          f"modalities of {order}; use 'all', 'anchor' or e.g. "
          f"'{order[0]}->{order[1]}'")
    pairs.append((q, k))
  if len(set(pairs)) != len(pairs):
    raise errors.ConfigError(f"loss.pairs={spec!r} names a pair twice")
  return tuple(pairs)


def multimodal_loss(embeddings: Mapping[str, jax.Array], pair_loss: PairLoss,
                    pairs: Sequence[tuple[str, str]], **kw) -> jax.Array:
  """Mean of ``pair_loss(embeddings[p], embeddings[q], **kw)`` over ``pairs``. Scalar."""
  total = sum(pair_loss(embeddings[p], embeddings[q], **kw) for p, q in pairs)
  return total / len(pairs)


@dataclasses.dataclass(frozen=True)
class LossParams:
  """What defines the training objective (``config.loss`` with its pairs resolved)."""
  name: str
  tau: float
  learn_tau: bool
  pairs: tuple[tuple[str, str], ...]
  tau_min: float | None = None      # learn_tau only
  siglip_bias: float | None = None  # siglip only
  # "chosen" (one caption per image) or "all_captions" (every caption, same-image
  # negatives removed); the STRUCTURE regulariser (None: off).
  positives: str = dataclasses.field(default="chosen", metadata=typed_json.OPTIONAL)
  structure: StructureParams | None = dataclasses.field(default=None,
                                                        metadata=typed_json.OPTIONAL)

  @classmethod
  def from_config(cls, cfg, order: Sequence[str], tau: float | None = None) -> "LossParams":
    """From ``config.loss``; ``order``: the modalities, ``eval.pair`` first. ``tau``: a
    fixed temperature instead of the config's (the modality-gap sweep; the temperature
    fields are then not read)."""
    learn = False if tau is not None else bool(cfg.learn_tau)
    return cls(name=cfg.name, tau=float(cfg.tau if tau is None else tau), learn_tau=learn,
               pairs=resolve_pairs(cfg.pairs, cfg.anchor if cfg.pairs == "anchor" else "",
                                   order),
               tau_min=float(cfg.tau_min) if learn else None,
               siglip_bias=float(cfg.siglip_bias) if cfg.name == "siglip" else None,
               positives=str(cfg.positives), structure=StructureParams.from_config(cfg))


def config_problems(cfg, order: Sequence[str]) -> list[str]:
  """Every unusable value of ``config.loss``, one line each."""
  out = []
  if cfg.name not in PAIR_LOSSES:
    out.append(f"loss.name={cfg.name!r}: allowed {tuple(PAIR_LOSSES)}")
  if not cfg.tau > 0:
    out.append(f"loss.tau={cfg.tau}: must be > 0 (it is the temperature)")
  if cfg.learn_tau and not 0 < cfg.tau_min <= cfg.tau:
    out.append(f"loss.tau_min={cfg.tau_min}: must be in (0, loss.tau={cfg.tau}]: it "
               "clamps the learned temperature from below")
  if len(order) >= 2:
    try:
      resolve_pairs(cfg.pairs, cfg.anchor, order)
    except errors.ConfigError as e:
      out.append(str(e))
  if cfg.positives not in POSITIVES:
    out.append(f"loss.positives={cfg.positives!r}: allowed {POSITIVES}")
  from platonic_jax import losses_structure  # noqa: PLC0415
  return out + losses_structure.config_problems(cfg)


def init_loss_params(params: LossParams) -> dict:
  """Trainable parameters of the loss: {} for a fixed temperature.

  Learned temperature (``learn_tau``): ``log_scale`` = log(1/tau) as in CLIP (the
  parameter is the log of the logit scale); SigLIP also learns ``bias``
  (init ``params.siglip_bias``, −10 in the paper).
  """
  if not params.learn_tau:
    return {}
  p = {"log_scale": jnp.asarray(math.log(1.0 / params.tau), jnp.float32)}
  if params.name == "siglip":
    p["bias"] = jnp.asarray(params.siglip_bias, jnp.float32)
  return p


def scale_and_bias(params: LossParams, loss_params: Mapping[str, jax.Array]):
  """(logit scale = 1/tau, SigLIP bias) from ``params`` and the learned parameters.

  The learned log-scale is clamped at log(1/tau_min) (CLIP clamps the scale at 100,
  i.e. tau_min = 0.01); beyond the clamp its gradient is zero, so it stops growing.
  """
  if params.learn_tau:
    log_scale = jnp.minimum(loss_params["log_scale"], math.log(1.0 / params.tau_min))
    scale = jnp.exp(log_scale)
    bias = loss_params.get("bias", 0.0)
  else:
    scale = 1.0 / params.tau
    bias = params.siglip_bias
  return scale, bias


def objective(params: LossParams) -> Callable:
  """``loss(embeddings, loss_params, *, axis_name=None, groups=None) -> scalar`` for
  ``params``: the contrastive part (the STRUCTURE term is added by
  ``platonic_jax.objective``, which also sees the frozen features).

  ``embeddings`` maps each modality of ``params.pairs`` to its l2-normalised ``[n, E]``;
  ``groups``: [n] int, the image of each row (all captions as positives), or None.
  """
  pair_loss = PAIR_LOSSES[params.name]

  def loss(embeddings, loss_params, *, axis_name=None, groups=None):
    scale, bias = scale_and_bias(params, loss_params)
    kw = dict(axis_name=axis_name, groups=groups)
    if params.name == "siglip":
      kw["bias"] = bias
    return multimodal_loss(embeddings, pair_loss, params.pairs, scale=scale, **kw)

  return loss
