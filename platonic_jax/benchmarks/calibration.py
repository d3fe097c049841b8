"""The calibration and new-measure part of ``python -m platonic_jax.benchmarks.metrics``.

Workers (each run in a fresh subprocess by ``benchmarks.metrics``):
- ``run_calibration(metric, n, K)``: one uncalibrated call, then the K nulls of
  ``metrics.calibrate`` (the null model's ``values``), same arrays; the ratio, and for the
  feature-space metrics the nulls' cross-product throughput against the fp32 matmul peak
  measured in the same process (each null is one 2·N·Da·Db product);
- ``run_package(metric, n, K)``: the paper's package (``calibrated_similarity.calibrate``,
  torch) on the same arrays and permutations, its sim the release's way of computing the
  metric (dense Gram + argsort for mutual k-NN; feature-space CKA in torch), timed over
  ``K`` nulls and reported per null;
- ``run_measure_reference(metric, n)``: the measure's reference library algorithm on the
  same arrays (tests/references.py: netrep and ReSi transcribed to float64 NumPy, scipy's
  pdist + pearsonr for RSA), where it fits in memory.
"""

from __future__ import annotations

import os
import sys
import time

K_KNN, K_CKA = 1000, 200
NEW = ("procrustes", "shape_metric", "rsa", "pwcca", "mean_cca", "rv", "linear_regression",
       "knn_jaccard", "rank_similarity", "second_order_cosine")
NEW_FEATURE_SPACE = ("procrustes", "shape_metric", "rsa", "pwcca", "mean_cca", "rv",
                     "linear_regression")
# Largest N each reference runs at: the N x N ones (rv's kernels, pdist, ReSi's distance
# matrices) by memory; the float64 QR / subspace angles of the CCA family take minutes
# at 16k (over 10 at 64k on 2 cores).
REFERENCE_MAX = {"procrustes": 64000, "shape_metric": 64000, "rv": 16000, "pwcca": 16000,
                 "mean_cca": 16000, "linear_regression": 64000, "rsa": 16000,
                 "knn_jaccard": 16000, "rank_similarity": 16000, "second_order_cosine": 8000}


def _setup(n):
  from platonic_jax.benchmarks import metrics as bench
  return bench, bench._features(n, 0), bench._features(n, 1)


def run_calibration(metric: str, n: int, K: int) -> dict:  # noqa: N803
  from platonic_jax import metrics
  from platonic_jax.metrics import calibration, registry
  bench, a, b = _setup(n)
  peak = bench._matmul_peak_gflops()
  kw = {"k": bench.K} if registry.get(metric).takes_k else {}
  _, call, _ = bench._timed(lambda: metrics.METRICS[metric](a, b, **kw))
  perms = metrics.permutations(K, n, seed=0)
  model = calibration.null_model(registry.get(metric), a, b, kw)
  model.values(perms[:min(K, 64)])  # compile the null program's shapes
  t0 = time.perf_counter()
  model.values(perms)
  null_s = time.perf_counter() - t0
  row = {"metric": metric, "n": n, "K": K, "call_seconds": call, "null_seconds": null_s,
         "peak_gflops": peak, "peak_rss_mb": bench._peak_rss_mb()}
  if not registry.get(metric).is_neighbour:
    row["null_gflop"] = K * 2 * n * a.shape[1] * b.shape[1] / 1e9
    row["efficiency"] = row["null_gflop"] / null_s / peak
  return row


def run_package(metric: str, n: int, K: int) -> dict:  # noqa: N803
  import calibrated_similarity as cs
  import torch
  from platonic_jax import metrics
  torch.set_num_threads(os.cpu_count() or 1)
  bench, a, b = _setup(n)
  x, y = torch.from_numpy(a), torch.from_numpy(b)
  k = bench.K

  def mutual(p, q):  # the release: full Gram, fill_diagonal_(-1e8), topk, two N x N masks
    def knn(z):
      return (z @ z.T).fill_diagonal_(-1e8).topk(k, dim=1).indices
    rows = torch.arange(n)[:, None]
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, knn(p)] = 1.0
    mb[rows, knn(q)] = 1.0
    return ((ma * mb).sum(1) / k).mean()

  def cka(p, q):  # linear CKA in feature space, in torch
    p, q = p - p.mean(0), q - q.mean(0)
    return (p.T @ q).square().sum() / ((p.T @ p).norm() * (q.T @ q).norm())

  sim = mutual if metric == "mutual_knn" else cka
  rows = iter(metrics.permutations(K, n, seed=0))
  t0 = time.perf_counter()
  cs.calibrate(x, y, sim, K=K, perm_fn=lambda n_, d: torch.as_tensor(next(rows)).long())
  secs = time.perf_counter() - t0
  return {"metric": metric, "n": n, "K": K, "seconds": secs,
          "per_null_seconds": secs / (K + 1), "peak_rss_mb": bench._peak_rss_mb()}


def run_measure_reference(metric: str, n: int) -> dict:
  """The reference library's algorithm for ``metric`` (tests/references.py)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.path.insert(0, os.path.join(root, "tests"))
  import references as R  # noqa: PLC0415 - the transcribed libraries, in the checkout
  bench, a, b = _setup(n)
  k = bench.K
  fn = {"procrustes": lambda: R.netrep_linear_metric(a, b, 1.0),
        "shape_metric": lambda: R.netrep_linear_metric(a, b, 1.0),
        "rsa": lambda: R.ref_rsa(a, b, "correlation", "pearson"),
        "pwcca": lambda: R.ref_pwcca(a, b),
        "mean_cca": lambda: R.ref_canonical_correlations(a, b).mean(),
        "rv": lambda: R.ref_rv(a, b),
        "linear_regression": lambda: R.resi_linear_reg(a, b),
        "knn_jaccard": lambda: R.resi_jaccard(a, b, k),
        "rank_similarity": lambda: R.resi_rank_similarity(a, b, k),
        "second_order_cosine": lambda: R.resi_second_order_cosine(a, b, k)}[metric]
  t0 = time.perf_counter()
  value = fn()
  return {"metric": metric, "n": n, "seconds": time.perf_counter() - t0, "value": value,
          "peak_rss_mb": bench._peak_rss_mb()}


def fmt_calibration(rows: list[dict], package: dict) -> str:
  lines = ["| metric | N | K | one call (s) | K nulls (s) | nulls / call | null GFLOP/s | "
           "% of fp32 peak | package per null (s) | package K nulls (s, extrap.) | speed-up |",
           "|" + " --- |" * 11]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['metric']} | {r['n']} | {r.get('K', '')} | error: {r['error']} |"
                   + " |" * 7)
      continue
    rate = (f"{r['null_gflop'] / r['null_seconds']:.1f}" if "null_gflop" in r else "")
    eff = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else ""
    pk = package.get((r["metric"], r["n"]))
    per = f"{pk['per_null_seconds']:.3f}" if pk and "error" not in pk else ""
    tot = pk["per_null_seconds"] * r["K"] if pk and "error" not in pk else None
    tots = "" if tot is None else f"{tot:.0f}"
    speed = "" if tot is None else f"{tot / r['null_seconds']:.0f}x"
    lines.append(f"| {r['metric']} | {r['n']} | {r['K']} | {r['call_seconds']:.3f} | "
                 f"{r['null_seconds']:.3f} | {r['null_seconds'] / r['call_seconds']:.2f} | "
                 f"{rate} | {eff} | {per} | {tots} | {speed} |")
  return "\n".join(lines)


def calibration_targets(rows: list[dict]) -> list[str]:
  out = []
  for r in rows:
    if "error" in r or r["n"] != 16000:
      continue
    if r["metric"] == "mutual_knn" and r["K"] == K_KNN:
      ratio = r["null_seconds"] / r["call_seconds"]
      out.append(f"mutual_knn K={K_KNN} nulls at 16k <= 2x one call: {ratio:.2f}x "
                 f"{'PASS' if ratio <= 2 else 'FAIL'}")
    if r["metric"] == "cka" and r["K"] == K_CKA:
      e = r["efficiency"]
      out.append(f"linear cka K={K_CKA} nulls at 16k >= 80% of fp32 peak: {100 * e:.0f}% "
                 f"{'PASS' if e >= 0.8 else 'FAIL'}")
  return out


def fmt_measures(rows: list[dict]) -> str:
  lines = ["| measure | N | time (s) | peak RSS (MB) | reference (s) | reference RSS (MB) | "
           "speed-up |", "|" + " --- |" * 7]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['metric']} | {r['n']} | error: {r['error']} | | | | |")
      continue
    ref = r.get("reference_seconds")
    refs = "" if ref is None else f"{ref:.2f}"
    rss = "" if ref is None else f"{r['reference_peak_rss_mb']:.0f}"
    speed = "" if ref is None else f"{ref / r['seconds']:.1f}x"
    lines.append(f"| {r['metric']} | {r['n']} | {r['seconds']:.3f} | {r['peak_rss_mb']:.0f} | "
                 f"{refs} | {rss} | {speed} |")
  return "\n".join(lines)
