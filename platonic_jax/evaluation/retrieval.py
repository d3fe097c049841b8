"""Cross-modal retrieval between the eval.pair sides of a shared space.

- "1:1": each test sample's query side against the other side's N rows (N queries each
  way);
- "all_captions" (caption data: Flickr30k, image-text folders): every caption of every
  test image. query→captions: an image is correct at rank r when its best-ranked own
  caption is at r; captions→image: each caption has one correct image (the standard
  Flickr30k / COCO protocol).
Ranks count ties against the query (rank = 1 + the number of wrong items scoring at
least as high as the best correct one), so a collapsed embedding cannot look good by
sort order.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from platonic_jax import errors
from platonic_jax.evaluation import views
from platonic_jax.evaluation.records import (RankSummary, Retrieval, RetrievalDirection,
                                             RetrievalProtocol)


@dataclasses.dataclass(frozen=True)
class RetrievalParams:
  ks: tuple[int, ...]     # recall@K
  max_samples: int
  pair: tuple[str, str]   # query side -> gallery side (and back)


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray,
                    gallery_ids: np.ndarray, *, block: int = 1024) -> np.ndarray:
  """[Q] rank of each query's best correct gallery item (cosine similarity).

  queries: [Q, d], gallery: [G, d]; an item is correct for a query when their ids are
  equal. Rank = 1 + the number of *wrong* items scoring >= the best correct one, so a
  collapsed embedding cannot score well by luck of the sort order. Every query needs at
  least one correct item.
  """
  qe, ge = views.l2n(queries), views.l2n(gallery)
  query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
  if not np.isin(query_ids, gallery_ids).all():
    raise errors.InputError("some queries have no correct item in the gallery")
  ranks = np.empty(qe.shape[0], np.int64)
  for s in range(0, qe.shape[0], block):
    sim = qe[s:s + block] @ ge.T  # [B, D] x [D, G] -> [B, G]
    correct = gallery_ids[None, :] == query_ids[s:s + block, None]  # [B, G]
    best = np.where(correct, sim, -np.inf).max(1)
    ranks[s:s + block] = 1 + ((sim >= best[:, None]) & ~correct).sum(1)
  return ranks


def summarize(ranks: np.ndarray, ks: Sequence[int]) -> RankSummary:
  return RankSummary(recall={int(k): float((ranks <= int(k)).mean()) for k in ks},
                     median_rank=float(np.median(ranks)), mean_rank=float(ranks.mean()),
                     num_queries=int(ranks.size))


def protocol(name: str, pair: tuple[str, str], a: np.ndarray, b: np.ndarray, *,
             ks: Sequence[int] = (1, 5, 10), b_to_a: np.ndarray | None = None
             ) -> RetrievalProtocol:
  """a→b and b→a retrieval: a [N, d] (one row per sample), b [M, d].

  b_to_a: [M] the row of a each b row belongs to (default arange(N): 1:1, M = N).
  """
  n = a.shape[0]
  if b_to_a is None:
    if b.shape[0] != n:
      raise errors.InputError(f"1:1 retrieval needs as many {pair[1]} rows as {pair[0]} "
                              f"rows: {b.shape[0]} vs {n}; pass b_to_a for several per row")
    b_to_a = np.arange(n)
  b_to_a = np.asarray(b_to_a)
  if b_to_a.shape != (b.shape[0],):
    raise errors.InputError(f"b_to_a must have shape ({b.shape[0]},), got {b_to_a.shape}")
  if b_to_a.min() < 0 or b_to_a.max() >= n:
    raise errors.InputError(f"b_to_a indexes rows 0..{n - 1}, got {b_to_a.min()}.."
                            f"{b_to_a.max()}")
  ids = np.arange(n)
  return RetrievalProtocol(name, (
      RetrievalDirection(pair[0], pair[1], summarize(retrieval_ranks(a, b, ids, b_to_a), ks)),
      RetrievalDirection(pair[1], pair[0], summarize(retrieval_ranks(b, a, b_to_a, ids), ks))))


def retrieval(params: RetrievalParams, embed, test) -> Retrieval:
  """Both protocols for a shared space. ``embed(side, features) -> [N, d]``; ``test``:
  the test split (``features.Split``)."""
  a, b = params.pair
  n = views.num_rows(test.views[a].shape[0], params.max_samples)
  ea, eb = embed(a, test.views[a][:n]), embed(b, test.views[b][:n])
  out = [protocol("1:1", params.pair, ea, eb, ks=params.ks)]
  caps, owner = test.captions.get(b), test.caption_image
  if caps is not None and owner is not None:
    keep = np.asarray(owner) < n
    out.append(protocol("all_captions", params.pair, ea, embed(b, caps[keep]), ks=params.ks,
                        b_to_a=np.asarray(owner)[keep]))
  return Retrieval(tuple(out))
