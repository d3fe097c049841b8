"""Cross-modal transfer (seed 003), for data with class labels (the synthetic world): a
Gaussian classifier with shared covariance (``maps.lda_fit``) fit on one eval.pair
side's *train* embeddings, scored on the *other* side's test embeddings ("transfer"),
beside the same classifier on its own side ("within", the ceiling) and the
majority-class rate ("chance")."""

from __future__ import annotations

import dataclasses

import numpy as np

from platonic_jax import maps
from platonic_jax.evaluation import views
from platonic_jax.evaluation.records import Transfer, TransferEntry


@dataclasses.dataclass(frozen=True)
class TransferParams:
  max_samples: int
  pair: tuple[str, str]


def transfer(params: TransferParams, embed, train, test) -> Transfer:
  """``embed(side, features) -> [N, d]``; ``train`` / ``test``: the splits, with labels."""
  a, b = params.pair
  n = views.num_rows(test.views[a].shape[0], params.max_samples)
  labels = np.asarray(test.labels)[:n]
  train_emb = {m: embed(m, train.views[m]) for m in (a, b)}
  test_emb = {m: embed(m, test.views[m][:n]) for m in (a, b)}
  entries = []
  for src, tgt in ((a, b), (b, a)):
    r = maps.cross_modal_transfer(train_emb[src], train.labels, test_emb[tgt], labels,
                                  src_test=test_emb[src])
    entries.append(TransferEntry(src, tgt, r["transfer_acc"], r["within_acc"], r["chance"]))
  return Transfer(tuple(entries))
