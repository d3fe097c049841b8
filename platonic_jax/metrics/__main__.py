"""Command line: alignment of two saved feature arrays, the Platonic protocol.

    python -m platonic_jax.metrics A.npy B.npy --metric=mutual_knn --k=10 [--q=0.95] [--json]
    python -m platonic_jax.metrics A.npy B.npy --metric=cka --calibrate=200   # + p, calibrated
    python -m platonic_jax.metrics X.pt Y.pt --metric=mutual_knn --k=10       # the release's files

A.npy / B.npy: [N, D] or layer-wise [L, N, D] float arrays, row i of both = sample i.
X.pt / Y.pt: the Platonic release's feature files (``extract_features.py``: a dict with
"feats" [N, L, D] or a list of per-layer [N, D] tensors; read with torch,
``weights_only=True``). Features are outlier-clamped (``prepare``, quantile ``--q``;
``--q=1`` turns it off; a per-layer list layer by layer, as the release), l2-normalised
and scored over every layer pair; the best value and its pair are printed. The release's
``measure_alignment.py`` scores (vision, language): pass the vision file first to get its
cycle k-NN direction and its order among tied layer pairs; ``--exact`` is its
``--precise`` clamp (its default is the per-sample mean quantile, as here).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from platonic_jax import errors, metrics

_FLAGS = ("k", "tile", "precision", "kernel", "sigma", "cca_dim", "approx_recall")  # the metric options


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m platonic_jax.metrics", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("a", help="features of model A: .npy ([N, D] or [L, N, D]) or a release .pt")
  p.add_argument("b", help="features of model B: .npy ([N, D] or [L, N, D]) or a release .pt")
  p.add_argument("--metric", default="mutual_knn", choices=sorted(metrics.METRICS))
  p.add_argument("--k", type=int, default=10, help="neighbours (k-NN metrics, cknna)")
  p.add_argument("--q", type=float, default=0.95,
                 help="outlier clamp quantile (prepare); 1 disables it")
  p.add_argument("--exact", action="store_true",
                 help="clamp at the exact global quantile instead of the per-sample mean")
  p.add_argument("--no-normalize", dest="normalize", action="store_false",
                 help="skip the l2 normalisation of rows")
  p.add_argument("--kernel", default="linear", choices=("linear", "rbf"), help="cka kernel")
  p.add_argument("--sigma", type=float, default=1.0, help="RBF bandwidth (cka)")
  p.add_argument("--cca-dim", dest="cca_dim", type=int, default=10, help="svcca dimension")
  p.add_argument("--tile", type=int, default=None,
                 help="rows per block (speed / memory only; default: sized from the "
                 "device's memory, 1024 on CPU)")
  p.add_argument("--approx-recall", dest="approx_recall", type=float, default=None,
                 help="k-NN metrics: opt-in approximate block top-k (lax.approx_max_k) with "
                 "this recall target; approximate on TPU only, exact elsewhere")
  p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                 help="k-NN similarity precision (bf16: opt-in, faster on matrix units)")
  p.add_argument("--calibrate", type=int, default=0, metavar="K",
                 help="also calibrate the best-layer-pair value against K permutations "
                 "(Gröger et al. 2026, Algorithm 2; 0 = off)")
  p.add_argument("--alpha", type=float, default=0.05, help="calibration level")
  p.add_argument("--seed", type=int, default=0, help="seed of the permutations")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  return p


def _load(path: str):
  """[L, N, D] / [N, D] array of a .npy file, or the layers of a release .pt file."""
  if path.endswith(".pt"):
    from platonic_jax.prh import release_files  # noqa: PLC0415 - torch only for .pt
    return release_files.load(path).layers
  try:
    return np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise ValueError(f"no such feature file: {path}") from None
  except Exception as e:
    raise ValueError(f"could not read {path} as a .npy array: {e}") from None


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  takes = metrics.registry.get(args.metric).options
  kw = {name: getattr(args, name) for name in _FLAGS if name in takes}
  try:
    feats = {}
    for path in (args.a, args.b):
      try:  # every message names the file it is about
        x = _load(path)
        feats[path] = ([metrics.prepare(layer, q=args.q, exact=args.exact) for layer in x]
                       if isinstance(x, list) else metrics.prepare(x, q=args.q, exact=args.exact))
      except errors.InputError:  # already names the file
        raise
      except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    a, b = feats[args.a], feats[args.b]
    na, nb = (x[0].shape[-2] if isinstance(x, list) else x.shape[-2] for x in (a, b))
    if na != nb:
      raise ValueError(f"{args.a} has {na} samples but {args.b} has {nb}; row i of both must "
                       "be sample i (features of the same pairs)")
    cal = None
    if args.calibrate:
      cal = metrics.score(a, b, args.metric, normalize=args.normalize, calibrate=True,
                          K=args.calibrate, alpha=args.alpha, seed=args.seed, **kw)
      value, (i, j) = cal.observed, cal.pair
    else:
      value, (i, j) = metrics.score(a, b, args.metric, normalize=args.normalize, **kw)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  extra = {} if cal is None else {"calibrated": cal.score, "p_value": cal.p_value,
                                  "tau": cal.tau, "K": cal.K}
  if args.json:
    print(json.dumps({"metric": args.metric, "value": value, "layers": [i, j],
                      "n": int(na), "q": args.q, **kw, **extra}))
  else:
    print(f"{args.metric} = {value:.6f} (layers a[{i}], b[{j}])" + (
        "" if cal is None else f"; calibrated {cal.score:.6f}, p = {cal.p_value:.4g}, "
        f"tau = {cal.tau:.6f} (K = {cal.K}, max over layer pairs inside the null)"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
