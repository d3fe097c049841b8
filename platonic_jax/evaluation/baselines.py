"""Closed-form baselines as fitted shared spaces: a registry of fits with one interface.

    space = BASELINES[kind](params, train)      # fit on the train split's eval.pair
    space.embed(modality, x [M, D]) -> [M, d]   # either eval.pair modality
    space.info(test, n) -> a record of the fit  # records.ProcrustesInfo, ...

Every space is then evaluated by exactly the code that evaluates the trained adapters.
The shared dimension d is ``params.dim`` (``eval.baseline_dim``, or ``adapter.dim`` when
that is 0) capped by N − 1, both widths and both features' numerical ranks (seed 003's
views have rank 2 in 512 dimensions; a direction beyond the rank would be rounding
noise).
- "procrustes" (seed 001): each modality reduced to d dims by its own PCA, then the
  orthogonal Procrustes map with mean shift from the first modality's PCA space onto the
  second's (``maps.procrustes``). Second side = its PCA coordinates.
- "cca": the top-d canonical variates of each side, each scaled by its canonical
  correlation (ridge 1e-3).
- "perfect_alignment" (seed 003): the left-null-space solution of the stacked, centred
  data (``maps.perfect_alignment``), d = the true latent dimension when the data has
  latents z, else d capped by D_x + D_y − 1; its info reports the alignment and (with z)
  reconstruction errors.
- "asif" (Norelli et al., NeurIPS 2023; ``platonic_jax.asif``): no fit at all — each
  sample's top-k similarities to the training anchors, raised to the power p, over the
  anchors both modalities share (one dimension per anchor; ``eval.asif_k``,
  ``eval.asif_p``). Its ``joint`` re-expresses a set of test rows in the basis of their
  span (every inner product kept) for the kernel metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from platonic_jax import maps
from platonic_jax.evaluation.records import (AsifInfo, CCAInfo, PerfectAlignmentInfo,
                                             ProcrustesInfo)

# Singular values below this fraction of the largest carry float32 rounding only.
RANK_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class BaselineParams:
  kind: str
  dim: int                  # requested shared dimension (before the caps)
  pair: tuple[str, str]


def numerical_rank(x: np.ndarray) -> int:
  """Rank of the centred ``x: [N, D]`` (singular values above RANK_RTOL of the largest),
  from the eigenvalues of its [D, D] covariance (an SVD of [N, D] would cost far more)."""
  xc = x - x.mean(0)
  lam = np.linalg.eigvalsh(xc.T @ xc)  # [D, N] x [N, D] -> [D, D]
  return int(np.sum(lam > lam.max() * RANK_RTOL ** 2)) if lam.max() > 0 else 0


def shared_dim(requested: int, xa: np.ndarray, xb: np.ndarray) -> int:
  caps = [requested, xa.shape[0] - 1, xa.shape[1], xb.shape[1],
          numerical_rank(xa), numerical_rank(xb)]
  return max(1, min(caps))


class FittedSpace:
  """A shared space of ``pair``: ``embed(modality, x)`` and ``info(test, n)``."""

  def __init__(self, name: str, pair, embed: dict, info: Callable):
    self.name, self.modalities = name, tuple(pair)
    self._embed, self._info = embed, info

  def embed(self, modality: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(self._embed[modality](x), np.float32)

  def info(self, test, n: int):
    """The fit's record; ``n``: the test rows evaluated."""
    return self._info(test, n)


def _train(params, train):
  a, b = params.pair
  return (np.asarray(train.views[a], np.float64), np.asarray(train.views[b], np.float64))


def fit_procrustes(params: BaselineParams, train) -> FittedSpace:
  xa, xb = _train(params, train)
  d = shared_dim(params.dim, xa, xb)
  pa, pb = maps.pca(xa, d), maps.pca(xb, d)
  m = maps.procrustes(pa.apply(xa), pb.apply(xb))
  a, b = params.pair
  return FittedSpace(params.kind, params.pair, {a: lambda x: m.apply(pa.apply(x)), b: pb.apply},
                     lambda test, n: ProcrustesInfo(d, m.residual))


def fit_cca(params: BaselineParams, train) -> FittedSpace:
  xa, xb = _train(params, train)
  d = shared_dim(params.dim, xa, xb)
  m = maps.cca(xa, xb, d, reg=1e-3)
  # Variates weighted by their canonical correlation: unweighted, the d-th (nearly
  # uncorrelated) variate would count as much as the first in every cosine.
  rho = m.correlations
  a, b = params.pair
  return FittedSpace(params.kind, params.pair,
                     {a: lambda x: m.apply_x(x) * rho, b: lambda y: m.apply_y(y) * rho},
                     lambda test, n: CCAInfo(d, tuple(float(r) for r in rho)))


def fit_perfect_alignment(params: BaselineParams, train) -> FittedSpace:
  xa, xb = _train(params, train)
  a, b = params.pair
  z = train.z
  if z is not None and z.shape[1] < xa.shape[1] + xb.shape[1]:
    d = int(z.shape[1])  # seed 003: the latent dimension is known
  else:
    d = max(1, min(params.dim, xa.shape[1] + xb.shape[1] - 1, xa.shape[0] - 1))
  m = maps.perfect_alignment(xa, xb, d, center=True)

  def recon(xs, zs):
    if zs is None or zs.shape[1] != d:
      return None
    zs = np.asarray(zs, np.float64)
    return {a: m.reconstruction_error(xs[0], zs, side="x"),
            b: m.reconstruction_error(xs[1], zs, side="y")}

  def info(test, n):
    ta, tb = (np.asarray(test.views[s][:n], np.float64) for s in params.pair)
    tz = None if test.z is None else test.z[:n]
    return PerfectAlignmentInfo(
        dim=d, train_alignment_error=m.alignment_error(xa, xb),
        test_alignment_error=m.alignment_error(ta, tb),
        singular_values=tuple(float(v) for v in m.singular_values),
        norm_W1=float(np.linalg.norm(m.W1)), norm_W2=float(np.linalg.norm(m.W2)),
        train_reconstruction_error=recon((xa, xb), z),
        test_reconstruction_error=recon((ta, tb), tz))

  return FittedSpace(params.kind, params.pair, {a: m.apply_x, b: m.apply_y}, info)


def fit_asif(params, train):
  """The ASIF space (``asif.AsifSpace``) of ``asif.AsifParams`` over the training pairs
  (every caption's pair with all captions)."""
  from platonic_jax import asif  # noqa: PLC0415 - jax: not for validation
  owner = train.caption_image
  anchors = {}
  for side in params.pair:
    if params.anchors == "all_captions" and owner is not None:
      anchors[side] = (train.captions[side] if side in train.captions
                       else train.views[side][np.asarray(owner)])
    else:
      anchors[side] = train.views[side]
  space = asif.AsifSpace(params.kind, params.pair, anchors, params.k, params.p)
  space.info = lambda test, n: AsifInfo(dim=space.num_anchors, anchors=space.num_anchors,
                                        k=space.k, p=space.p)
  return space


CLOSED_FORM = ("procrustes", "cca", "perfect_alignment")  # fitted maps of a shared dim d
JOINT_SPACES = ("asif",)  # spaces with ``joint``: too many dimensions for [d, d] statistics

BASELINES: dict[str, Callable[[BaselineParams, object], FittedSpace]] = {
    "procrustes": fit_procrustes,
    "cca": fit_cca,
    "perfect_alignment": fit_perfect_alignment,
    "asif": fit_asif,
}
