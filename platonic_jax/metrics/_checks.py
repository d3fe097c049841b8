"""Input checks shared by every metric: each bad input gets a ValueError that names the
problem and the fix, before any device work starts (never a deep traceback, never NaN)."""

from __future__ import annotations

import numpy as np


def as_features(x, name: str) -> np.ndarray:
  """``x`` -> float32 numpy ``[N, D]``; raises ValueError on wrong rank, dtype or NaN/Inf."""
  try:
    arr = np.asarray(x)
  except Exception as e:  # e.g. ragged lists
    raise ValueError(f"{name}: could not convert to an array ({e}); pass a [N, D] array") from e
  if arr.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D [N, D] feature matrix, got shape {arr.shape}; for "
        "layer-wise [L, N, D] features use metrics.score, which takes the max over layer "
        "pairs")
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
          or arr.dtype == np.bool_ or arr.dtype.name == "bfloat16"):
    raise ValueError(f"{name} has dtype {arr.dtype}; pass real-valued features")
  arr = arr.astype(np.float32, copy=False)
  check_finite(arr, name)
  return arr


def check_finite(arr: np.ndarray, name: str) -> None:
  finite = np.isfinite(arr)
  if not finite.all():
    bad = np.argwhere(~finite)
    raise ValueError(
        f"{name} contains {len(bad)} NaN/Inf value(s) (first at index {tuple(int(i) for i in bad[0])}); "
        "drop or repair those samples before measuring alignment")


def pair(a, b) -> tuple[np.ndarray, np.ndarray]:
  """Checks ``a: [N, Da]`` and ``b: [N, Db]`` describe the same N samples."""
  a = as_features(a, "a")
  b = as_features(b, "b")
  if a.shape[0] != b.shape[0]:
    raise ValueError(
        f"a and b must have the same number of samples (rows): got a {a.shape} and b "
        f"{b.shape}; row i of a and b must describe the same sample")
  return a, b


SPREAD_RTOL = 1e-5  # below this fraction of their RMS norm, rows are one point up to fp32


def check_spread(x: np.ndarray, name: str, metric: str) -> None:
  """Raises ValueError when the rows of ``x`` [N, D] are (nearly) one point.

  Scale-aware: the RMS distance of the rows to their mean is compared with their RMS
  norm, so features far from the origin that barely vary (a collapsed encoder, one row
  repeated) are caught at any scale, and small features that do vary are not. Below
  ``SPREAD_RTOL`` every kernel of ``x`` is constant up to float32 rounding, and a metric
  would measure that rounding (RBF CKA gave 0.448 for one row repeated 300 times).
  """
  mean = x.mean(0, dtype=np.float64)
  sq = sum(float(np.sum(np.square(x[i:i + 8192], dtype=np.float64)))
           for i in range(0, len(x), 8192)) / len(x)
  spread = max(sq - float(mean @ mean), 0.0)
  if not spread > (SPREAD_RTOL ** 2) * sq:
    rel = np.sqrt(spread / sq) if sq > 0 else 0.0
    raise ValueError(
        f"{metric} is undefined: the rows of {name} are (nearly) all the same point (their "
        f"spread is {rel:.2g} of their norm, below {SPREAD_RTOL:g}), so every kernel of "
        f"{name} is constant; check the encoder or layer that made them (a collapsed "
        "representation), or drop the duplicated samples")


def kernel_pair(a, b, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """``pair`` plus ``check_spread`` of both sides: the checks of every kernel metric."""
  a, b = pair(a, b)
  check_spread(a, "a", metric)
  check_spread(b, "b", metric)
  return a, b


def check_k(k, n: int, *, minimum: int = 1, name: str = "k") -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise ValueError(f"{name} must be an integer number of neighbours, got {k!r}")
  k = int(k)
  if k < minimum:
    raise ValueError(f"{name}={k} is too small: it must be at least {minimum}")
  if k >= n:
    raise ValueError(
        f"{name}={k} needs more samples: each sample has only N - 1 = {n - 1} other samples "
        f"to be neighbours with; use {name} < N")
  return k


def check_min_n(n: int, minimum: int, metric: str) -> None:
  if n < minimum:
    raise ValueError(
        f"{metric} needs at least {minimum} samples, got N = {n} (the unbiased HSIC "
        "estimator divides by n(n - 3) and (n - 1)(n - 2))")


def check_tile(tile) -> int:
  if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
    raise ValueError(f"tile must be a positive integer number of rows, got {tile!r}")
  return int(tile)


def positive_denominator(kk: float, ll: float, metric: str) -> float:
  """sqrt(kk * ll) for the normaliser of a CKA-like score, or a ValueError saying why not.

  The reference adds 1e-6 to the denominator and so returns 0 (or a value silently off)
  for degenerate inputs; here such inputs are an error with its cause.
  """
  if not (kk > 0 and ll > 0):
    raise ValueError(
        f"{metric} is undefined: the self-similarity of "
        f"{'a' if not kk > 0 else 'b'} is {kk if not kk > 0 else ll:.3g} (must be > 0). "
        "The features are (nearly) constant over samples, or N is too small for the "
        "unbiased estimator; use more samples or a biased metric (cka)")
  return float(np.sqrt(kk) * np.sqrt(ll))
