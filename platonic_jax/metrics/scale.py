"""Alignment against the number of samples: a metric on nested subsets of the rows.

Koepke et al. (2026, arXiv 2604.18572, "Back into Plato's Cave") show mutual k-NN
alignment falling as N grows: at fixed k a neighbourhood is a smaller fraction of the
data, and chance agreement k/(N − 1) (the expected mutual k-NN of two unrelated
neighbour lists) falls with it. ``scale_curve`` measures a metric on the first n rows
of one seeded permutation for each n (nested subsets: every point contains the previous
one), and reports that chance level beside it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from platonic_jax import errors
from platonic_jax.metrics import _checks, registry


def scale_curve(a, b, metric: str = "mutual_knn", sizes: Sequence[int] = (), *,
                k: int = 10, seed: int = 0, **kw) -> list[tuple[int, float, float]]:
  """[(n, metric on the first n rows of the order, k / (n − 1))] for each n of ``sizes``.

  a: [N, Da], b: [N, Db]; sizes: subset sizes, each in (k + 1, N]; the order is
  ``default_rng(seed).permutation(N)`` (the same for a and b: row i stays paired).
  ``metric`` is any neighbour metric of ``metrics.METRICS`` (``**kw``: tile, precision,
  mesh).
  """
  record = registry.get(metric)
  if not record.is_neighbour:
    raise errors.InputError(f"scale_curve measures neighbour metrics (k-NN lists); "
                            f"{metric!r} is not one of {list(registry.NEIGHBOUR_METRICS)}")
  a, b = _checks.pair(a, b)
  n_all = a.shape[0]
  sizes = [int(s) for s in sizes]
  bad = [s for s in sizes if not k + 1 < s <= n_all]
  if bad or not sizes:
    raise errors.InputError(f"scale_curve sizes must be in (k + 1, N] = ({k + 1}, {n_all}], "
                            f"got {sizes}")
  order = np.random.default_rng(seed).permutation(n_all)
  return [(n, float(record.fn(a[order[:n]], b[order[:n]], k=k, **kw)), k / (n - 1))
          for n in sorted(sizes)]
