"""The training objective: the contrastive loss plus the recipes' extra terms.

    loss = contrastive(adapted embeddings; groups)          platonic_jax.losses
         + λ · mean_m R_S(frozen_m, adapted_m)              platonic_jax.losses_structure
         + cycle heads' hop and cycle-consistency terms     platonic_jax.cycle

``make_loss_fn`` returns one device's share of it, to be called inside the shard_map
step (``platonic_jax.train``): every term all-gathers what it needs over ``axis_name``,
so the ``pmean`` of the value and of its gradients over the devices is the global-batch
objective, whatever the device count.

A batch is ``{modality: [n, D_m]}`` frozen features, plus ``GROUPS: [n] int32`` (the
image of each row) when every caption is a positive (``loss.positives="all_captions"``).
"""

from __future__ import annotations

from typing import Callable

from platonic_jax import cycle, losses, losses_structure

GROUPS = "__groups__"  # batch key of the rows' group ids (all captions as positives)


def make_loss_fn(model, loss_params: losses.LossParams, heads=None,
                 cycle_params: cycle.CycleParams | None = None, *,
                 axis_name: str | None = None) -> Callable:
  """``loss_fn(params, batch, rng) -> scalar``: this device's share of the objective.

  params: {"adapters": ..., ["loss": ...], ["heads": ...]}; rng: this device's dropout
  key; ``heads``: the ``cycle.CycleHeads`` module (with ``cycle_params``) or None.
  """
  contrastive = losses.objective(loss_params)
  pair_loss = losses.PAIR_LOSSES[loss_params.name]

  def loss_fn(params, batch, rng):
    feats = {m: batch[m] for m in model.names if m in batch}
    groups = batch.get(GROUPS)
    emb = model.apply({"params": params["adapters"]}, feats, train=True,
                      rngs={"dropout": rng})
    lp = params.get("loss", {})
    total = contrastive(emb, lp, axis_name=axis_name, groups=groups)
    if loss_params.structure is not None:
      total = total + losses_structure.regulariser(feats, emb, loss_params.structure,
                                                   axis_name)
    if heads is not None:
      scale, bias = losses.scale_and_bias(loss_params, lp)
      kw = dict(axis_name=axis_name, groups=groups)
      if loss_params.name == "siglip":
        kw["bias"] = bias
      contrast = lambda q, k: pair_loss(q, k, scale, **kw)
      total = total + cycle.loss(heads, cycle_params, params["heads"], emb, contrast)
    return total

  return loss_fn
