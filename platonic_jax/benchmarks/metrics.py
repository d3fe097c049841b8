"""Benchmark of the tiled alignment metrics against the reference approach.

    python -m platonic_jax.benchmarks.metrics                      # N = 1k, 4k, 16k, 64k
    python -m platonic_jax.benchmarks.metrics --sizes=1000,4000    # quick

For each N (D = 768, random float32 features) and metric: wall time, peak RSS of a fresh
process, the Gram-matmul throughput as a fraction of this machine's fp32 matmul peak (a
jitted ``jnp`` matmul measured in the same process just before), and the speed-up over
the reference approach of the Platonic release — full N x N Gram, then a full
descending argsort per row (k-NN metrics), or dense ``trace(K H L H)`` HSICs (CKA) — run
in PyTorch CPU where it fits in memory. Every measurement runs in its own subprocess so
peak RSS is its own. Timings on a shared machine are noisy: compare ratios measured in
the same run. The opt-in bf16 path reports how many fp32 neighbours it keeps.

Then (``benchmarks.calibration``, skipped with ``--no-calibration``): K = 1000 nulls of
mutual_knn and K = 200 of linear CKA at N = 16k against one uncalibrated call, the
paper's package on the same arrays and permutations, and the measures of issue 16 at
16k and 64k against their reference libraries' algorithms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

D = 768
K = 10
KNN = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn")
ALL = KNN + ("mutual_knn@bf16", "cka", "cka@rbf", "unbiased_cka", "cknna", "svcca")
# The measures of issue 16 (their own table, at CALIBRATION_SIZES' 16k and 64k).
MEASURES = ("procrustes", "shape_metric", "rsa", "pwcca", "mean_cca", "rv",
            "linear_regression", "knn_jaccard", "rank_similarity", "second_order_cosine")
# At the largest sizes only the metrics with distinct costs (the other k-NN metrics
# reuse mutual_knn's neighbour pass; their extra cost is O(N k^2)).
LARGE = ("mutual_knn", "cka", "unbiased_cka", "cknna", "svcca")
APPROX_RECALL = 0.95  # the recall target of the "mutual_knn@approx" rows
DENSE_KNN_MAX = 16384  # the reference Gram + argsort needs ~28 N^2 bytes
DENSE_CKA_MAX = 4096  # dense trace(K H L H) is O(N^3): ~20 min at 16k here


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_device_mb() -> float | None:
  """Peak bytes in use on the first device in MiB since the process started
  (``memory_stats()['peak_bytes_in_use']``), or None where the backend reports none
  (XLA:CPU: its buffers are host memory, counted in the peak RSS)."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - a backend without memory stats
    return None
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2 ** 20


def _features(n: int, seed: int):
  import numpy as np
  rng = np.random.default_rng(seed)
  rng_z = np.random.default_rng(1234)  # the same latent for every seed: a and b correlate
  w = rng.standard_normal((32, D), dtype=np.float32)
  # 64-byte aligned, as XLA:CPU buffers are: jax then uses the array in place (zero-copy)
  # instead of copying it to the device (np.empty only guarantees 16 bytes).
  buf = np.empty(n * D * 4 + 64, np.uint8)
  off = (-buf.ctypes.data) % 64
  x = buf[off:off + n * D * 4].view(np.float32).reshape(n, D)
  for i in range(0, n, 8192):  # in row chunks: no full-size temporaries inflate peak RSS
    m = min(8192, n - i)
    z = rng_z.standard_normal((m, 32), dtype=np.float32)
    y = z @ w + rng.standard_normal((m, D), dtype=np.float32) * 2
    x[i:i + m] = y / np.linalg.norm(y, axis=1, keepdims=True)  # as score(): cosine k-NN
  return x


def _matmul_peak_gflops(bf16: bool = False) -> float:
  """Best-of-5 throughput of a jitted [r, 768] x [768, r] matmul on every device of the
  data mesh at once (with several XLA:CPU devices each runs its own, so the peak is
  that of the whole machine, as the metrics use it). fp32 (HIGHEST: true fp32 on GPU /
  TPU too, as the fp32 k-NN sweep), or ``bf16`` operands with f32 results (the bf16
  sweep). r = 2048 on CPU; 8192 on accelerators, whose k-NN blocks are that large
  (``tiling.device_tile``) and which a 2048 matmul would leave mostly idle."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import PartitionSpec as P
  from platonic_jax import sharding
  mesh = sharding.data_mesh()
  ndev = mesh.devices.size
  r = 2048 if sharding.on_cpu(mesh) else 8192
  dtype, prec = ((jnp.bfloat16, jax.lax.Precision.DEFAULT) if bf16
                 else (jnp.float32, jax.lax.Precision.HIGHEST))
  x = jax.device_put(jnp.ones((ndev * r, D), dtype),
                     jax.NamedSharding(mesh, P(sharding.DATA)))
  f = jax.jit(jax.shard_map(
      lambda a: jnp.dot(a, a.T, precision=prec, preferred_element_type=jnp.float32)[None],
      mesh=mesh, in_specs=P(sharding.DATA), out_specs=P(sharding.DATA)))
  f(x).block_until_ready()
  best = float("inf")
  for _ in range(5):
    t0 = time.perf_counter()
    f(x).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return ndev * 2 * r * r * D / best / 1e9


def _timed(fn):
  """Best time of up to five calls (the first includes compilation), as the fp32 peak
  is the best of five: calls over 20 s are not repeated, and repeats stop after a call
  of 5 s or more (a short call is the one a passing background job distorts most)."""
  t0 = time.perf_counter()
  out = fn()
  best = time.perf_counter() - t0
  if best > 20:
    return out, best, True
  for _ in range(4):
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    best = min(best, secs)
    if secs >= 5:
      break
  return out, best, False


def run_one(metric: str, n: int, tile: int | None = None) -> dict:
  """One measurement of our implementation, in this (fresh) process. ``tile=None``:
  the library's default (sized from the device's memory)."""
  import numpy as np
  from platonic_jax import metrics
  a, b = _features(n, 0), _features(n, 1)
  name, _, variant = metric.partition("@")
  peak = _matmul_peak_gflops(bf16=variant == "bf16")
  kw = {}
  if name in KNN or name in ("cknna", "knn_jaccard", "rank_similarity", "second_order_cosine"):
    kw = {"k": K, "tile": tile}
  if variant == "bf16":
    kw["precision"] = "bf16"
  if variant == "rbf":
    kw = {"kernel": "rbf", "sigma": 1.0, "tile": tile}
  if variant == "approx":   # lax.approx_max_k's block top-k (approximate on TPU only)
    kw["approx_recall"] = APPROX_RECALL
  value, secs, with_compile = _timed(lambda: metrics.METRICS[name](a, b, **kw))
  import jax
  row = {"metric": metric, "n": n, "devices": jax.device_count(), "value": value,
         "seconds": secs, "compile_included": with_compile, "peak_gflops": peak,
         "peak_dtype": "bf16" if variant == "bf16" else "fp32",
         "tile": None}
  if name in KNN or name == "cknna" or variant == "rbf":   # the tile the sweep really used
    row["tile"] = metrics.tiling.effective_tile(n, metrics.tiling.resolve_tile(
        tile, n, D, K, itemsize=2 if variant == "bf16" else 4))
  # Gram work actually done (multiply-adds x 2): the k-NN pass visits the upper triangle
  # of both N x N Gram matrices; RBF the same; linear kernels three D x D Grams.
  if name in KNN or name == "cknna" or variant == "rbf":
    row["gram_gflop"] = 2 * (n * n / 2) * 2 * D / 1e9
  elif name in ("cka", "unbiased_cka", "svcca", "procrustes", "shape_metric", "rsa",
                "pwcca", "mean_cca", "rv", "linear_regression"):
    row["gram_gflop"] = 3 * 2 * n * D * D / 1e9
  if "gram_gflop" in row:
    row["efficiency"] = row["gram_gflop"] / secs / peak
  if variant == "bf16":  # how far the bf16 neighbour sets are from fp32 ones (on a)
    _, i16 = metrics.nearest_neighbors(a, K, tile=tile, precision="bf16")
    _, i32 = metrics.nearest_neighbors(a, K, tile=tile)
    row["bf16_neighbour_overlap"] = float(metrics.knn.mutual_from_idx(i32, i16))
    row["bf16_exact_lists"] = float((np.asarray(i16) == np.asarray(i32)).all(1).mean())
  if variant == "approx":   # the recall: the share of the exact neighbours it found (on a)
    _, iap = metrics.nearest_neighbors(a, K, tile=tile, approx_recall=APPROX_RECALL)
    _, iex = metrics.nearest_neighbors(a, K, tile=tile)
    row["approx_recall_target"] = APPROX_RECALL
    row["approx_recall_measured"] = float(metrics.knn.mutual_from_idx(iex, iap))
  row["peak_rss_mb"] = _peak_rss_mb()
  row["peak_device_mb"] = peak_device_mb()
  return row


def run_reference(metric: str, n: int) -> dict:
  """The reference approach in PyTorch CPU (dense N x N), in this (fresh) process."""
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  a, b = (torch.from_numpy(_features(n, s)) for s in (0, 1))

  def knn(x):  # full Gram, self masked, full descending argsort per row
    return (x @ x.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :K]

  def mutual():
    ka, kb = knn(a), knn(b)
    rows = torch.arange(n)[:, None]
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, ka] = 1.0
    mb[rows, kb] = 1.0
    return ((ma * mb).sum(1) / K).mean().item()

  def cka():
    k, l = a @ a.T, b @ b.T
    h = torch.eye(n) - 1.0 / n
    hsic = lambda x, y: torch.trace(x @ h @ y @ h)
    return (hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))).item()

  fn = mutual if metric == "mutual_knn" else cka
  t0 = time.perf_counter()
  value = fn()
  return {"metric": metric, "n": n, "value": value, "seconds": time.perf_counter() - t0,
          "peak_rss_mb": _peak_rss_mb()}


def _subprocess(args: list[str], timeout: float, cpu_devices: int = 1) -> dict:
  """A worker's result row, or ``{"error": ...}`` when it failed or timed out."""
  cmd = [sys.executable, "-m", "platonic_jax.benchmarks.metrics", *args]
  env = dict(os.environ)
  if cpu_devices > 1:
    # One XLA:CPU device per core: the data mesh then runs one block stream per core, so
    # one core's top-k update (single-threaded) overlaps the other's matmul. No effect on
    # accelerators.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + f" --xla_force_host_platform_device_count={cpu_devices}").strip()
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return {"error": f"timeout after {timeout:.0f} s"}
  if out.returncode != 0:
    return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt_table(rows: list[dict]) -> str:
  head = ("| metric | N | time (s) | peak RSS (MB) | Gram GFLOP/s | % of fp32 peak | "
          "reference (s) | speed-up | note |")
  lines = [head, "|" + " --- |" * 9]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['metric']} | {r['n']} | error: {r['error']} | | | | | | |")
      continue
    gf = r.get("gram_gflop")
    rate = f"{gf / r['seconds']:.1f}" if gf else ""
    eff = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else ""
    ref = r.get("reference_seconds")
    refs = (f"{ref:.2f}" + (" (extrap. N^3)" if r.get("reference_extrapolated") else "")
            if ref else "")
    speed = f"{ref / r['seconds']:.0f}x" if ref else ""
    note = []
    if r.get("compile_included"):
      note.append("incl. compile")
    if "bf16_neighbour_overlap" in r:
      note.append(f"bf16 keeps {100 * r['bf16_neighbour_overlap']:.2f}% of the fp32 "
                  f"neighbours; {100 * r['bf16_exact_lists']:.1f}% of rows identical lists")
    if "reference_peak_rss_mb" in r:
      note.append(f"reference RSS {r['reference_peak_rss_mb']:.0f} MB")
    lines.append(f"| {r['metric']} | {r['n']} | {r['seconds']:.3f} | {r['peak_rss_mb']:.0f} | "
                 f"{rate} | {eff} | {refs} | {speed} | {'; '.join(note)} |")
  return "\n".join(lines)


def _targets(rows: list[dict]) -> list[str]:
  get = lambda m, n: next((r for r in rows if r["metric"] == m and r["n"] == n
                           and "error" not in r), None)
  out = []
  r = get("mutual_knn", 16000)
  if r and r.get("reference_seconds"):
    s = r["reference_seconds"] / r["seconds"]
    out.append(f"mutual_knn 16k >= 10x reference: {s:.1f}x {'PASS' if s >= 10 else 'FAIL'}")
  r = get("mutual_knn", 64000)
  if r:
    out.append(f"mutual_knn 64k peak RSS < 1 GB: {r['peak_rss_mb']:.0f} MB "
               f"{'PASS' if r['peak_rss_mb'] < 1024 else 'FAIL'}")
  big = [r for r in rows if "error" not in r and r["metric"] == "mutual_knn" and r["n"] >= 4000]
  if big:
    e = max(r["efficiency"] for r in big)
    out.append(f"k-NN Gram work >= 80% of fp32 matmul peak: best {100 * e:.0f}% "
               f"{'PASS' if e >= 0.8 else 'FAIL'}")
  r = get("cka", 16000)
  if r and r.get("reference_seconds"):
    s = r["reference_seconds"] / r["seconds"]
    out.append(f"linear cka 16k >= 1000x dense: {s:.0f}x"
               f"{' (dense extrapolated)' if r.get('reference_extrapolated') else ''} "
               f"{'PASS' if s >= 1000 else 'FAIL'}")
  return out


def main(argv=None) -> int:
  from platonic_jax.benchmarks import common  # noqa: PLC0415
  p = common.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", type=common.ints(2), default=(1000, 4000, 16000, 64000),
                 help="comma-separated N")
  p.add_argument("--metrics", type=common.choices(ALL), default=None,
                 help=f"comma-separated subset of {','.join(ALL)} (default: all below 64k, "
                 f"{','.join(LARGE)} at >= 64k)")
  p.add_argument("--tile", type=int, default=None,
                 help="rows per block (default: the library's, sized from the device's "
                 "memory: 1024 on CPU)")
  p.add_argument("--cpu-devices", type=int, default=1,
                 help="XLA:CPU devices in the data mesh (e.g. one per core; each holds a "
                 "copy of the features)")
  p.add_argument("--no-reference", action="store_true", help="skip the dense reference runs")
  p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
  p.add_argument("--json", default=None, help="also write the rows to this file")
  p.add_argument("--no-calibration", action="store_true",
                 help="skip the calibration and new-measure tables")
  p.add_argument("--calibration-sizes", type=common.ints(2), default=(16000, 64000),
                 help="N of the calibration nulls (16k) and the new measures (16k, 64k)")
  p.add_argument("--package-nulls", type=int, default=3,
                 help="nulls the paper's package is timed over (reported per null)")
  p.add_argument("--cal", default=None, help=argparse.SUPPRESS)  # worker: calibration
  p.add_argument("--package", default=None, help=argparse.SUPPRESS)  # worker: the package
  p.add_argument("--measure-ref", default=None, help=argparse.SUPPRESS)  # worker
  p.add_argument("--K", type=int, default=None, help=argparse.SUPPRESS)
  p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker: our metric
  p.add_argument("--ref", default=None, help=argparse.SUPPRESS)  # worker: reference
  p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.tile is not None and args.tile < 1:
    p.error(f"argument --tile: must be >= 1, got {args.tile}")
  if args.one:
    print(json.dumps(run_one(args.one, args.n, args.tile)))
    return 0
  if args.ref:
    print(json.dumps(run_reference(args.ref, args.n)))
    return 0
  from platonic_jax.benchmarks import calibration as cal  # noqa: PLC0415
  if args.cal:
    print(json.dumps(cal.run_calibration(args.cal, args.n, args.K)))
    return 0
  if args.package:
    print(json.dumps(cal.run_package(args.package, args.n, args.K)))
    return 0
  if args.measure_ref:
    print(json.dumps(cal.run_measure_reference(args.measure_ref, args.n)))
    return 0

  common.print_header()
  rows = []
  tile = [] if args.tile is None else ["--tile", str(args.tile)]
  for n in args.sizes:
    for m in (args.metrics or (ALL if n < 64000 else LARGE)):
      r = _subprocess(["--one", m, "--n", str(n), *tile], args.timeout, args.cpu_devices)
      r.setdefault("metric", m)
      r.setdefault("n", n)
      ref_name = m if m in ("mutual_knn", "cka") else None  # what run_reference measures
      if ref_name and not args.no_reference and "error" not in r:
        limit = DENSE_KNN_MAX if ref_name == "mutual_knn" else DENSE_CKA_MAX
        if n <= limit:
          ref = _subprocess(["--ref", ref_name, "--n", str(n)], args.timeout)
          if "error" not in ref:
            r["reference_seconds"] = ref["seconds"]
            r["reference_peak_rss_mb"] = ref["peak_rss_mb"]
        elif ref_name == "cka":
          # Dense CKA is O(N^3) flops: extrapolate from the largest size measured.
          base = next((x for x in reversed(rows) if x["metric"] == "cka"
                       and x.get("reference_seconds") and not x.get("reference_extrapolated")),
                      None)
          if base:
            r["reference_seconds"] = base["reference_seconds"] * (n / base["n"]) ** 3
            r["reference_extrapolated"] = True
      rows.append(r)
      print(json.dumps(r), file=sys.stderr, flush=True)
  print(f"D = {D}, k = {K}, tile = {args.tile or 'default'}, {args.cpu_devices} XLA:CPU "
        "device(s)\n")
  print(_fmt_table(rows))
  print()
  for line in _targets(rows):
    print(line)
  if not args.no_calibration:
    rows += _calibration_section(args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


def _calibration_section(args) -> list[dict]:
  """The calibration table (nulls vs one call, vs the paper's package) and the new
  measures' table; every measurement a fresh subprocess, as above."""
  from platonic_jax.benchmarks import calibration as cal  # noqa: PLC0415
  sizes = args.calibration_sizes
  tile = () if args.tile is None else ("--tile", args.tile)
  run = lambda *a: _subprocess([str(x) for x in a], args.timeout, args.cpu_devices)
  cal_rows, package = [], {}
  for metric, k in (("mutual_knn", cal.K_KNN), ("cka", cal.K_CKA)):
    n = sizes[0]
    r = run("--cal", metric, "--n", n, "--K", k, *tile)
    r.update({"metric": r.get("metric", metric), "n": n, "K": k, "kind": "calibration"})
    cal_rows.append(r)
    if not args.no_reference:
      package[(metric, n)] = run("--package", metric, "--n", n, "--K", args.package_nulls)
    print(json.dumps(r), file=sys.stderr, flush=True)
  measures = []
  for n in sizes:
    for m in MEASURES:
      r = run("--one", m, "--n", n, *tile)
      r.update({"metric": r.get("metric", m), "n": n, "kind": "measure"})
      if not args.no_reference and "error" not in r and n <= cal.REFERENCE_MAX[m]:
        ref = run("--measure-ref", m, "--n", n)
        if "error" not in ref:
          r["reference_seconds"] = ref["seconds"]
          r["reference_peak_rss_mb"] = ref["peak_rss_mb"]
      measures.append(r)
      print(json.dumps(r), file=sys.stderr, flush=True)
  print(f"\nCalibration (Gröger et al. 2026), D = {D}, k = {K}:\n")
  print(cal.fmt_calibration(cal_rows, package))
  print()
  for line in cal.calibration_targets(cal_rows):
    print(line)
  print(f"\nThe measures of netrep / ReSi / rsatoolbox, D = {D}:\n")
  print(cal.fmt_measures(measures))
  return cal_rows + measures


if __name__ == "__main__":
  sys.exit(main())
