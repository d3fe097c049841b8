"""Scoring the Platonic sweep from feature files: ours against the release's own loop.

    python -m platonic_jax.benchmarks.prh                          # 2 x 2 models, 8 metrics
    python -m platonic_jax.benchmarks.prh --language=25x1024,33x4096 --vision=13x768,25x1024 --release-pairs=0
    python -m platonic_jax.benchmarks.prh --quick                  # seconds: tiny shapes

Writes synthetic feature files in the release's format (``extract_features.py``: a dict
with "feats" [N, L, D], bf16 for the language models as its bf16 models write, float32
for the ViTs; N = 1024) for K language x M vision models of the given LxD shapes, then
times, in the same process, on the same files:

- ours: what the sweep does per pair from cached features, for every metric: read the
  file (``prh.release_files``), ``metrics.prepare`` + l2 rows, the per-layer structures
  (``prh.layer_stats``) and every layer pair at once (``prh.pair_scores``). Measured cold
  (compilation included) and again warm (every program compiled);
- the release: ``measure_alignment.compute_alignment``'s loop as transcribed in
  ``tests/release_reference.py`` (torch on CPU: per language file, per vision file, load +
  ``prepare_features``, then ``compute_score``: ``F.normalize`` and
  ``AlignmentMetrics.measure`` for every layer pair). Two choices favour the release:
  its files are loaded once per model pair for all metrics (the release runs
  ``measure_alignment.py`` once per metric and loads them again each time), and its
  CKNNA is called with ``topk=k`` (its ``compute_score`` passes none and raises). Every
  layer pair of a model pair costs the same there, so by default it is timed on
  ``--release-pairs`` random layer pairs per model pair and metric and scaled to all
  La x Lb (``--release-pairs=0``: the whole loop);
- ours, calibrated: the K permutation nulls of every layer pair of the largest pair.

On the layer pairs the release ran, ours must give its numbers: the table's "max |diff|"
column is the largest |ours - release| there (``lcs_knn``: the release's / k; unbiased
CKA, CKNNA and SVCCA differ on purpose, docs/prh.md, and are compared in
tests/test_prh_scores.py instead). Prints one row per metric and the totals; the target
is ours (cold) >= 10x the release. Needs PyTorch and scikit-learn (the release's code)
and a checkout (the transcription lives in tests/).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka",
           "cknna", "svcca")
# Metrics whose numbers equal the release's (value compared in the table); lcs_knn / k.
EXACT = ("mutual_knn", "cycle_knn", "edit_distance_knn", "cka", "lcs_knn")
QUICK = dict(n=96, language="3x48,4x64", vision="2x32,3x40", release_pairs=0, calibration_K=4)
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                         "release_reference.py")


def shapes(text: str) -> tuple[tuple[int, int], ...]:
  """An argparse ``type``: '25x1024,33x4096' -> ((25, 1024), (33, 4096))."""
  out = []
  for s in text.split(","):
    parts = s.strip().split("x")
    if len(parts) != 2 or not all(v.isdigit() and int(v) > 0 for v in parts):
      raise argparse.ArgumentTypeError(
          f"{text!r}: give a comma-separated list of LxD (layers x width, positive "
          "integers), e.g. 25x1024,33x4096")
    out.append((int(parts[0]), int(parts[1])))
  return tuple(out)


def _release_module():
  """tests/release_reference.py (the release's scoring code) and torch, or a one-line
  SystemExit saying what is missing."""
  for mod, fix in (("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu"),
                   ("sklearn", "pip install scikit-learn")):
    if importlib.util.find_spec(mod) is None:
      sys.exit(f"error: the release's scoring loop needs {mod}, which is not installed "
               f"(the benchmark's reference; our scoring does not need it). Fix: {fix}")
  if not os.path.exists(REFERENCE):
    sys.exit(f"error: {os.path.normpath(REFERENCE)} (the release's scoring code) is missing; "
             "run the benchmark from a checkout of the repository")
  spec = importlib.util.spec_from_file_location("release_reference", REFERENCE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_files(directory: str, n: int, language, vision, seed: int = 0) -> tuple[list, list]:
  """Synthetic release files: every model sees a shared 32-d latent through its own
  random map per layer, plus noise (aligned pairs, scores well above chance).
  Returns (language paths, vision paths)."""
  import torch
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 32)).astype(np.float32)
  out = ([], [])
  for kind, shapes, dtype in (("language", language, torch.bfloat16),
                              ("vision", vision, torch.float32)):
    for i, (num, d) in enumerate(shapes):
      feats = np.empty((n, num, d), np.float32)
      for l in range(num):
        feats[:, l] = z @ rng.standard_normal((32, d)).astype(np.float32) + \
            (0.5 + l / num) * rng.standard_normal((n, d)).astype(np.float32)
      path = os.path.join(directory, f"{kind}{i}_{num}x{d}.pt")
      d_ = {"feats": torch.from_numpy(feats).to(dtype), "num_params": 0}
      if kind == "language":
        d_.update(loss=torch.tensor(2.0), bpb=torch.tensor(1.0))
      torch.save(d_, path)
      out[kind == "vision"].append(path)
  return out


def _params(metrics, k: int):
  from platonic_jax.prh import plan
  return [plan.ScoreParams(m, plan.metric_options(m, k, 10), 0.95, True, None) for m in metrics]


def ours(language, vision, metrics, k: int) -> tuple[dict, dict]:
  """({metric: seconds, "prepare": seconds}, {(language i, vision j, metric): [Lv, Ll]})
  of scoring every pair in the sweep's order (language outer); each model is read and
  prepared once ("prepare": reading, clamping, l2 rows and the layer structures)."""
  from platonic_jax.prh import pair_scores, release_files, scoring
  params = _params(metrics, k)
  times, values = dict.fromkeys(metrics, 0.0), {}
  t0 = time.perf_counter()
  vis = [scoring.prepare_model(p, release_files.load(p), params) for p in vision]
  times["prepare"] = time.perf_counter() - t0
  for li, lp in enumerate(language):
    t0 = time.perf_counter()
    lang = scoring.prepare_model(lp, release_files.load(lp), params)
    times["prepare"] += time.perf_counter() - t0
    for vi, v in enumerate(vis):
      scorer = pair_scores.PairScorer(v.stats, lang.stats)
      for m in metrics:
        t0 = time.perf_counter()
        values[li, vi, m] = scorer.values(m)
        values[li, vi, m].max()
        times[m] += time.perf_counter() - t0
  return times, values


def ours_calibration(language, vision, metrics, k: int, K: int) -> dict:  # noqa: N803
  """{metric: seconds} of the K nulls of every layer pair of (the last vision model,
  the last language model): the largest pair with the default shapes; compiled first."""
  from platonic_jax.metrics import calibration
  from platonic_jax.prh import pair_scores, release_files, scoring
  params = _params(metrics, k)
  v = scoring.prepare_model(vision[-1], release_files.load(vision[-1]), params)
  lang = scoring.prepare_model(language[-1], release_files.load(language[-1]), params)
  scorer = pair_scores.PairScorer(v.stats, lang.stats)
  perms = calibration.permutations(K, lang.layers[0].shape[0], 0)
  out = {}
  for m in metrics:
    scorer.null(m, perms)  # compile (the same shapes)
    scorer._cache.clear()  # cka / unbiased_cka share the permuted dots: each pays them
    t0 = time.perf_counter()
    scorer.null(m, perms)
    out[m] = time.perf_counter() - t0
  return out


def release(rel, language, vision, metrics, k: int, sample: int, seed: int = 0):
  """({metric: seconds, "load": seconds}, {(language i, vision j, metric): {(vision layer,
  language layer): value}}) of the release's compute_alignment loop (module docstring);
  "load": its per-(x, y) file loads and prepare_features. rel: tests/release_reference."""
  import torch
  import torch.nn.functional as F
  rng = np.random.default_rng(seed)
  times, values = dict.fromkeys(metrics, 0.0), {}
  times["load"] = 0.0

  def layers(path):
    x = rel.load_prepared(path, True)
    return [x[:, i, :] for i in range(x.shape[1])] if isinstance(x, torch.Tensor) else x

  for li, lp in enumerate(language):
    t0 = time.perf_counter()
    lang = layers(lp)
    times["load"] += time.perf_counter() - t0
    for vi, vp in enumerate(vision):
      t0 = time.perf_counter()
      vis = layers(vp)
      times["load"] += time.perf_counter() - t0
      pairs = [(i, j) for i in range(len(vis)) for j in range(len(lang))]
      chosen = pairs if not sample else [pairs[p] for p in rng.choice(len(pairs), min(
          sample, len(pairs)), replace=False)]
      for m in metrics:
        kw = {"topk": k} if "knn" in m or m == "cknna" else {}
        got = values[li, vi, m] = {}
        t0 = time.perf_counter()
        for i, j in chosen:  # compute_score's body for one layer pair
          x, y = F.normalize(vis[i], p=2, dim=-1), F.normalize(lang[j], p=2, dim=-1)
          got[i, j] = float(rel.AlignmentMetrics.measure(m, x, y, **kw))
        times[m] += (time.perf_counter() - t0) * len(pairs) / len(chosen)
  return times, values


def max_diff(ours_values: dict, release_values: dict, metric: str, k: int) -> float:
  """max |ours - release| over the layer pairs the release ran (lcs_knn: release / k);
  nan for the metrics that differ on purpose."""
  if metric not in EXACT:
    return float("nan")
  scale = 1.0 / k if metric == "lcs_knn" else 1.0
  return max(abs(float(ours_values[key][ij]) - v * scale)
             for key, got in release_values.items() if key[2] == metric
             for ij, v in got.items())


def _fmt_diff(metric: str, d: float, n: int, k: int) -> str:
  """|diff| and, for the k-NN metrics, in their units: a mutual / lcs / edit-distance
  k-NN value moves by 1 / (N k) per neighbour, cycle k-NN by 1 / N per sample (one
  neighbour swapped at a near-tie of two similarities is float rounding, not a bug)."""
  unit = {"mutual_knn": n * k, "lcs_knn": n * k, "edit_distance_knn": n * k,
          "cycle_knn": n}.get(metric)
  count = d * unit if unit else 0.0
  if round(count) < 1 or abs(count - round(count)) > 1e-3:
    return f"{d:.1e}"
  what = "sample(s) of N" if metric == "cycle_knn" else "neighbour(s) of N k"
  return f"{d:.1e} = {round(count)} {what}"


def table(a, metrics, cold, warm, ref, cal, diff) -> str:
  """The markdown table and the verdict line."""
  how = "all layer pairs" if not a.release_pairs else \
      f"{a.release_pairs} layer pairs per model pair, scaled to all"
  lines = [f"N = {a.n}, language {a.language}, vision {a.vision}, k = {a.k}; release: {how}",
           "",
           "| metric | ours cold (s) | ours warm (s) | release (s) | speed-up (cold) | "
           "speed-up (warm) | max \\|diff\\| | ours: K nulls of the largest pair (s) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for m in metrics:
    d = "documented difference" if np.isnan(diff[m]) else _fmt_diff(m, diff[m], a.n, a.k)
    if m == "unbiased_cka" and "cka" in metrics:  # its Gram dots are cka's: one cost
      both = lambda t: t["cka"] + t["unbiased_cka"]  # noqa: E731
      up = (f"with cka: {both(ref) / both(cold):.0f}x", f"with cka: {both(ref) / both(warm):.0f}x")
    else:
      up = (f"{ref[m] / cold[m]:.0f}x", f"{ref[m] / warm[m]:.0f}x")
    lines.append(f"| {m} | {cold[m]:.2f} | {warm[m]:.2f} | {ref[m]:.1f} | {up[0]} | {up[1]} | "
                 f"{d} | {cal.get(m, float('nan')):.2f} |")
  lines.append(f"| read + prepare | {cold['prepare']:.2f} | {warm['prepare']:.2f} | "
               f"{ref['load']:.1f} |  |  |  |  |")
  tot_cold, tot_warm, tot_ref = sum(cold.values()), sum(warm.values()), sum(ref.values())
  lines.append(f"| **total** | {tot_cold:.1f} | {tot_warm:.1f} | {tot_ref:.0f} | "
               f"{tot_ref / tot_cold:.0f}x | {tot_ref / tot_warm:.0f}x |  | "
               f"{sum(cal.values()):.1f} (K = {a.calibration_K}) |")
  verdict = "PASS" if tot_ref / tot_cold >= 10 else "FAIL"
  lines += ["", f"scoring >= 10x the release's loop (cold, compilation included): "
            f"{tot_ref / tot_cold:.1f}x {verdict}" + (
                " (--quick: tiny shapes, compilation-bound; the target is for the release's "
                "shapes)" if getattr(a, "quick", False) else "")]
  return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
  from platonic_jax.benchmarks import common  # noqa: PLC0415
  p = common.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=1024, help="rows of every file (the release: 1024)")
  p.add_argument("--language", type=shapes, default="25x1024,33x4096",
                 help="LxD of each language model")
  p.add_argument("--vision", type=shapes, default="13x768,25x1024",
                 help="LxD of each vision model")
  p.add_argument("--metrics", type=common.choices(METRICS), default=",".join(METRICS),
                 help=f"comma-separated subset of {','.join(METRICS)}")
  p.add_argument("--k", type=int, default=10, help="neighbours of the k-NN metrics and CKNNA")
  p.add_argument("--release-pairs", dest="release_pairs", type=int, default=6,
                 help="layer pairs timed per model pair and metric for the release (0 = all)")
  p.add_argument("--calibration-K", dest="calibration_K", type=int, default=20,
                 help="nulls timed for our calibration of the largest pair (0 = skip)")
  p.add_argument("--quick", action="store_true",
                 help="seconds-long defaults (flags given still apply): " + ", ".join(
                     f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items()))
  argv = sys.argv[1:] if argv is None else list(argv)
  if p.parse_known_args(argv)[0].quick:  # --quick changes the defaults; flags still win
    p.set_defaults(**QUICK)
  a = p.parse_args(argv)
  # The labels of the table: the shapes as given.
  a.language_shapes, a.vision_shapes = a.language, a.vision
  a.language = ",".join(f"{l}x{d}" for l, d in a.language_shapes)
  a.vision = ",".join(f"{l}x{d}" for l, d in a.vision_shapes)
  a.metric_list = a.metrics
  if a.k < 1:
    p.error(f"argument --k: {a.k}: give a positive integer below --n ({a.n})")
  if a.n <= a.k + 1:
    p.error(f"argument --n: {a.n}: give an integer above --k + 1 ({a.k + 1}); the release "
            "uses 1024")
  for flag, v in (("--release-pairs", a.release_pairs), ("--calibration-K", a.calibration_K)):
    if v < 0:
      p.error(f"argument {flag}: {v}: give 0 or a positive integer")
  return a


def main(argv=None) -> dict:
  a = parse(argv)
  rel = _release_module()
  metrics = a.metric_list
  import torch
  from platonic_jax.benchmarks import common  # noqa: PLC0415
  common.print_header(f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
                      f"load average {os.getloadavg()}")
  with tempfile.TemporaryDirectory() as d:
    language, vision = write_files(d, a.n, a.language_shapes, a.vision_shapes)
    cold, values = ours(language, vision, metrics, a.k)
    warm, _ = ours(language, vision, metrics, a.k)
    ref, ref_values = release(rel, language, vision, metrics, a.k, a.release_pairs)
    cal = ours_calibration(language, vision, metrics, a.k, a.calibration_K) \
        if a.calibration_K else {}
  diff = {m: max_diff(values, ref_values, m, a.k) for m in metrics}
  print("\n" + table(a, metrics, cold, warm, ref, cal, diff))
  return {"cold": cold, "warm": warm, "release": ref, "calibration": cal, "max_diff": diff}


if __name__ == "__main__":
  main()
