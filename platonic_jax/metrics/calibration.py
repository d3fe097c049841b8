"""Calibrated alignment: permutation nulls, p-values and layer-aware calibration.

Gröger, Wen & Brbić (2026), "Revisiting the Platonic Representation Hypothesis: an
Aristotelian view" (arXiv 2602.14486), Algorithms 1 and 2, with exactly the semantics of
their package (PyPI ``calibrated-similarity`` 0.1.1, MIT, ``mlbio-epfl/Aristotelian``):

    metrics.calibrate(a, b, "cka", K=200)                 # -> Calibration
    metrics.calibrate_layers(fa, fb, "mutual_knn", agg="max", k=10)

* the null permutes the rows of b (b[π], π a uniformly random permutation); for layers
  the *same* π permutes every layer of b, and the aggregate (max or mean over the
  [La, Lb] layer-pair matrix) is what is calibrated, so the best-of-many-pairs search is
  inside the null;
* τ = the order statistic at ⌈(1 − α)(K + 1)⌉ of the observed value pooled with the K
  null values; p = (1 + #{null ≥ observed}) / (K + 1); score = clamp((observed − τ) /
  (smax − τ), 0, 1) (``smax=None``: max(observed − τ, 0)). As in the package, the values
  enter these formulas as float32.

Nulls cost what the metric's structure allows (``metrics.nulls``; the per-metric table in
docs/metrics.md): the k-NN metrics relabel cached neighbour lists, the feature-space
metrics reuse AᵀA and BᵀB and need one cross product a null, batched and sharded over the
devices. The permutations come from ``seed`` (numpy's PCG64) or are given as ``perms``;
either way the result does not depend on the number of devices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from platonic_jax import errors
from platonic_jax.metrics import _checks, knn, nulls, registry

AGGREGATES = ("max", "mean")


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
  """One calibrated similarity.

  score: calibrated, in [0, 1] (0: not above the null's (1 − α) quantile).
  p_value: (1 + #{null ≥ observed}) / (K + 1), in [1/(K + 1), 1].
  tau: the null threshold; observed: the raw value (for layers: the aggregate).
  null: [K] null values (of the aggregate for layers).
  pair: layers with ``agg="max"``: the (i, j) of the best layer pair; values: layers:
  the observed [La, Lb] layer-pair matrix.
  """
  metric: str
  score: float
  p_value: float
  tau: float
  observed: float
  null: np.ndarray
  alpha: float
  smax: float | None
  pair: tuple[int, int] | None = None
  values: np.ndarray | None = None
  agg: str | None = None

  @property
  def K(self) -> int:  # noqa: N802 - the paper's name
    return int(self.null.shape[0])

  @property
  def significant(self) -> bool:
    """Whether the observed value exceeds τ (p ≤ α up to the order-statistic rounding)."""
    return self.score > 0


def permutations(K: int, n: int, seed: int = 0) -> np.ndarray:  # noqa: N803
  """K independent uniform permutations of range(n): int32 [K, n], from numpy's
  ``default_rng(seed)`` (the same on every machine and device count)."""
  rng = np.random.default_rng(seed)
  return rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int32), (K, n)), axis=1)


def check_perms(perms, n: int) -> np.ndarray:
  """``perms`` as int32 [K, n], each row a permutation of range(n), or an InputError."""
  p = np.asarray(perms)
  if p.ndim != 2 or p.shape[1] != n or not np.issubdtype(p.dtype, np.integer):
    raise errors.InputError(
        f"perms must be an integer [K, N] array with N = {n} (row k permutes the rows of b), "
        f"got {p.dtype} {p.shape}")
  if p.size and (p.min() < 0 or p.max() >= n):
    raise errors.InputError(f"perms has entries outside [0, {n}); each row must be a "
                            f"permutation of range({n})")
  seen = np.zeros(p.shape, bool)
  np.put_along_axis(seen, p.astype(np.int64), True, axis=1)
  bad = np.flatnonzero(~seen.all(1))
  if bad.size:
    raise errors.InputError(f"perms row {int(bad[0])} repeats an index: each row must be a "
                            f"permutation of range({n}) ({bad.size} rows are not)")
  return p.astype(np.int32)


def _check_params(K, alpha, smax) -> None:  # noqa: N803
  if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
    raise errors.InputError(f"K must be a positive integer number of permutations, got {K!r}")
  if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
    raise errors.InputError(f"alpha must be a significance level in (0, 1), got {alpha!r}")
  if smax is not None and not (isinstance(smax, (int, float)) and smax > 0):
    raise errors.InputError(f"smax must be positive (the metric's maximum) or None, got "
                            f"{smax!r}")


def threshold(observed: float, null: np.ndarray, alpha: float, smax: float | None):
  """(score, p, τ) of Algorithm 1 from the observed value and the K null values, with
  the package's float32 arithmetic."""
  obs = np.float32(observed)
  nul = np.asarray(null, np.float32)
  k = nul.shape[0]
  pooled = np.sort(np.concatenate([[obs], nul]))
  idx = min(max(int(math.ceil((1.0 - alpha) * (k + 1))) - 1, 0), k)
  tau = pooled[idx]
  p = np.float32((1.0 + np.sum(nul >= obs, dtype=np.float32)) / np.float32(k + 1))
  if smax is None:
    score = np.maximum(obs - tau, np.float32(0))
  else:
    denom = np.maximum(np.float32(smax) - tau, np.float32(1e-12))
    score = np.clip((obs - tau) / denom, np.float32(0), np.float32(1))
  return float(score), float(p), float(tau)


def _resolve(metric: str, kw: dict) -> registry.Metric:
  record = registry.get(metric)
  unknown = set(kw) - set(record.options)
  if unknown:
    raise errors.InputError(f"{metric} got unexpected arguments {sorted(unknown)}; it takes "
                            f"{list(record.options)}")
  if kw.get("angular"):
    raise errors.InputError(f"{metric}(angular=True) is a distance (smaller = more similar); "
                            "the permutation test is one-sided for similarities: calibrate "
                            "angular=False (cos θ) instead")
  return record


def _perms(perms, K, n, seed) -> np.ndarray:  # noqa: N803
  if perms is None:
    return permutations(K, n, seed)
  p = check_perms(perms, n)
  if p.shape[0] != K:
    raise errors.InputError(f"perms has {p.shape[0]} rows but K={K}: pass K={p.shape[0]} "
                            "(each row of perms is one null)")
  return p


def _neighbour_lists(x: np.ndarray, kw: dict) -> np.ndarray:
  opts = {o: kw[o] for o in ("tile", "precision", "mesh", "approx_recall") if o in kw}
  x = _checks.as_features(x, "features")
  k = _checks.check_k(kw.get("k", 10), x.shape[0])
  return knn._knn_checked(x, k, tile=opts.get("tile"),
                          precision=opts.get("precision", "fp32"), mesh=opts.get("mesh"),
                          approx_recall=opts.get("approx_recall"))[1]


def null_model(record: registry.Metric, a, b, kw: dict):
  """The cheapest null model of ``record`` for (a, b): ``values(perms) -> [K]``."""
  if record.is_neighbour:
    return nulls.NeighbourNull(record.neighbour_score, _neighbour_lists(a, kw),
                               _neighbour_lists(b, kw), mesh=kw.get("mesh"),
                               direct=record.neighbour_null)
  if record.null is not None:
    return record.null(a, b, **kw)
  a, b = _checks.pair(a, b)
  return nulls.BruteNull(record.fn, a, b, kw)


def calibrate(a, b, metric: str, *, K: int = 200, alpha: float = 0.05,  # noqa: N803
              smax: float | None = 1.0, seed: int = 0, perms=None, options=None,
              **kw) -> Calibration:
  """Algorithm 1: the metric of (a, b) calibrated against K row permutations of b.

  a: [N, Da], b: [N, Db]; metric: a name of ``metrics.METRICS``; ``**kw`` go to it (k,
  kernel, cca_dim, tile, mesh, ...). perms: [K, N] integers, row k the permutation of
  b's rows of null k (b[perms[k]]); default: ``permutations(K, N, seed)``.
  Equals ``calibrated_similarity.calibrate(a, b, metric, K=K, alpha=alpha, smax=smax,
  perm_fn=<the same rows>)`` (tested to 1e-6 in score, τ and p).
  """
  _check_params(K, alpha, smax)
  kw = {**(options or {}), **kw}
  record = _resolve(metric, kw)
  a, b = _checks.pair(a, b)
  perms = _perms(perms, K, a.shape[0], seed)
  model = null_model(record, a, b, kw)
  observed = float(record.fn(a, b, **kw))
  null = model.values(perms)
  score, p, tau = threshold(observed, null, alpha, smax)
  return Calibration(metric, score, p, tau, observed, null, float(alpha), smax)


def _layer_list(x, name: str) -> list[np.ndarray]:
  if isinstance(x, np.ndarray) or hasattr(x, "shape"):
    arr = np.asarray(x)
    if arr.ndim == 2:
      arr = arr[None]
    if arr.ndim != 3:
      raise errors.InputError(f"{name} must be [L, N, D] or a list of [N, D] layers, got "
                              f"shape {arr.shape}")
    layers = list(arr)
  else:
    layers = list(x)
  if not layers:
    raise errors.InputError(f"{name} has no layers")
  return [_checks.as_features(layer, f"{name}[{i}]") for i, layer in enumerate(layers)]


def _aggregate(agg) -> Callable[[np.ndarray], float]:
  if agg == "max":
    return lambda s: float(np.max(s))
  if agg == "mean":
    return lambda s: float(np.mean(s, dtype=np.float64))
  if callable(agg):
    return lambda s: float(agg(s))
  raise errors.InputError(f"agg must be 'max', 'mean' or a callable of the [La, Lb] "
                          f"matrix, got {agg!r}")


def calibrate_layers(a_layers, b_layers, metric: str, *, agg="max", K: int = 200,  # noqa: N803
                     alpha: float = 0.05, smax: float | None = 1.0, seed: int = 0,
                     perms=None, options=None, **kw) -> Calibration:
  """Algorithm 2: the aggregate over every layer pair, calibrated with the *same*
  permutation of the rows of every layer of b.

  a_layers: [La, N, Da] or a list of [N, D_i]; b_layers likewise (same N). S[i, j] =
  metric(a_layers[i], b_layers[j]); the aggregate (``agg``: "max", "mean" or a callable of
  the float32 [La, Lb] matrix) of S and of each null's S_k is calibrated as in
  ``calibrate``. Returns the record with ``values`` = S and, for "max", ``pair`` = the
  best (i, j). Equals ``calibrated_similarity.calibrate_layers`` given the same perms.
  ``options``: as in ``calibrate``.
  """
  _check_params(K, alpha, smax)
  kw = {**(options or {}), **kw}
  record = _resolve(metric, kw)
  fold = _aggregate(agg)
  la, lb = _layer_list(a_layers, "a_layers"), _layer_list(b_layers, "b_layers")
  n = la[0].shape[0]
  sizes = {x.shape[0] for x in la + lb}
  if len(sizes) != 1:
    raise errors.InputError(f"every layer must have the same number of samples; got "
                            f"{sorted(sizes)} rows")
  perms = _perms(perms, K, n, seed)
  values = np.empty((len(la), len(lb)), np.float32)  # as the package: float32 entries
  null_s = np.empty((K, len(la), len(lb)), np.float32)
  if record.is_neighbour:
    ia = [_neighbour_lists(x, kw) for x in la]
    ib = [_neighbour_lists(x, kw) for x in lb]
    for i, j in np.ndindex(*values.shape):
      values[i, j] = float(record.neighbour_score(ia[i], ib[j]))
      null_s[:, i, j] = nulls.NeighbourNull(record.neighbour_score, ia[i], ib[j],
                                            mesh=kw.get("mesh"),
                                            direct=record.neighbour_null).values(perms)
  else:
    for i, j in np.ndindex(*values.shape):  # one pair's model at a time: bounded memory
      values[i, j] = float(record.fn(la[i], lb[j], **kw))
      null_s[:, i, j] = null_model(record, la[i], lb[j], kw).values(perms)
  observed = fold(values)
  null = np.array([fold(s) for s in null_s], np.float64)
  score, p, tau = threshold(observed, null, alpha, smax)
  pair = None
  if agg == "max":
    i, j = np.unravel_index(int(np.argmax(values)), values.shape)
    pair = (int(i), int(j))
  return Calibration(metric, score, p, tau, observed, null, float(alpha), smax, pair=pair,
                     values=values, agg=agg if isinstance(agg, str) else "callable")

