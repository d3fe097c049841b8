"""One prepared device benchmark: compact versions of every benchmark, on one GPU / TPU.

    python -m platonic_jax.benchmarks.device --out=bench_device          # one GPU, < 8 min
    python -m platonic_jax.benchmarks.device --quick --out=/tmp/quick    # tiny, any CPU

Sections (``--sections``; run in this order, each entry timed against ``--budget``):

- ``metrics``: mutual_knn (fp32 and bf16) and linear CKA at N = 64k and 1M (D = 768),
  each in a fresh process (``benchmarks.metrics --one``) so its peak device memory
  (``memory_stats()['peak_bytes_in_use']``) is its own; the Gram rate as a share of the
  matmul rate of the same precision; on TPU also ``lax.approx_max_k``'s measured recall.
- ``train``: the jitted contrastive step's pairs/s at global batch 4096 and 32768, and
  the loop with host feeding (``benchmarks.train.bench``).
- ``encoders``: ResNet-18, GPT-2, DINOv2-B and the CLIP ViT-L/14, random weights of the
  real shapes, against PyTorch eager on the same device in fp32 and bf16 (autocast)
  (``benchmarks.encoders``; features compared, so it is also a parity check).
- ``loader``: the grain loader (JPEG decode + 224 preprocessing, 1 worker and the
  default worker count) against the Flax ResNet-18 forward (``benchmarks.data``).
- ``decoder``: a 1.1 B Llama-architecture decoder (TinyLlama's shape), every hidden
  state's pool and the next-token losses, against PyTorch eager (``benchmarks.decoders``).

Writes ``device_benchmark.json`` (the machine, every row, every skip with its reason)
and ``device_benchmark.md`` (the same as tables, plus the issue's targets) to ``--out``.
Nothing is installed or downloaded: it runs in the Python environment it is started in,
which must already hold jax with its accelerator plugin (and torch, CUDA build, for
the PyTorch rows). What cannot run is skipped with its reason: no torch, no CUDA in
torch, no GPU (the full sizes on a CPU backend), out of memory, the time budget spent.

``--quick``: the same code paths at tiny sizes (2-layer models at 28 px, N = 256 and
1024, batches of 64 and 256), measured in this process, well under a minute on a CPU:
the test suite runs it so the benchmark cannot rot between GPU sessions.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time

from platonic_jax.benchmarks import common

SECTIONS = ("encoders", "decoder", "metrics", "train", "loader")
RUN_ORDER = ("metrics", "train", "encoders", "loader", "decoder")   # the slowest last
ENCODERS = ("resnet18", "gpt2", "dinov2-b", "vit-l14")
DTYPES = ("fp32", "bf16")
KNN_METRICS = ("cka", "mutual_knn@bf16", "mutual_knn")
# The issue's targets (issue 17), checked in the markdown summary.
ENCODER_RATIO, TRAIN_PAIRS, GRAM_SHARE = 1.5, 1e6, 0.6


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Every size of one run: the full ones for a GPU, or ``QUICK``'s."""
  tiny_models: bool = False
  batch: int = 64                  # images / sequences per encoder call
  seq: int = 77                    # GPT-2 tokens
  image: int = 224
  seconds: float = 1.0             # timed seconds per encoder variant
  decoder: str = "1b"
  decoder_batch: int = 16
  decoder_seq: int = 128
  decoder_rounds: int = 3
  decoder_vocab: int = 32000
  metric_sizes: tuple = (64_000, 1_000_000)
  train_batches: tuple = (4096, 32768)
  train_steps: int = 10
  loader_images: int = 512
  loader_batch: int = 64
  loader_size: tuple = (500, 375)
  loader_workers: int | None = None   # None: configs/flickr.py's data.num_workers
  loader_seconds: float = 3.0
  in_process: bool = False         # metrics in this process (quick) or each in a fresh one
  budget: float = 480.0


QUICK = Sizes(tiny_models=True, batch=8, seq=16, image=28, seconds=0.0, decoder="tiny",
              decoder_batch=2, decoder_seq=16, decoder_rounds=2, decoder_vocab=512,
              metric_sizes=(256, 1024), train_batches=(64, 256), train_steps=2,
              loader_images=32, loader_batch=8, loader_size=(64, 48), loader_workers=0,
              loader_seconds=0.1, in_process=True, budget=300.0)


class Report:
  """Rows and skips per section; ``skip`` records what did not run and why."""

  def __init__(self, budget: float):
    self.start = time.perf_counter()
    self.budget = budget
    self.sections = {}

  def section(self, name: str) -> dict:
    return self.sections.setdefault(name, {"rows": [], "skipped": []})

  def skip(self, name: str, what: str, why: str, failed: bool = False) -> None:
    self.section(name)["skipped"].append({"what": what, "why": why, "failed": failed})
    print(f"[{name}] skipped {what}: {why}", flush=True)

  def out_of_time(self, name: str, what: str) -> bool:
    """True (and the skip recorded) once the time budget is spent."""
    if time.perf_counter() - self.start < self.budget:
      return False
    self.skip(name, what, f"time budget of {self.budget:.0f} s spent (--budget)")
    return True

  def attempt(self, name: str, what: str, fn) -> bool:
    """Runs ``fn()``; an exception becomes a skip with its reason (out of memory, or
    ``failed`` for anything else, which the quick test does not accept)."""
    if self.out_of_time(name, what):
      return False
    try:
      fn()
      return True
    except Exception as e:  # noqa: BLE001 - each failure is reported, the rest still runs
      why, failed = classify(e)
      self.skip(name, what, why, failed)
      return False


def classify(e: BaseException) -> tuple[str, bool]:
  """(reason, failed): out of memory (XLA's RESOURCE_EXHAUSTED, torch's
  OutOfMemoryError) is an expected limit of a device, and a package this environment
  lacks (timm for the ViT row, say) one of the environment; anything else a failure."""
  text = str(e).strip()
  first = text.splitlines()[0][:300] if text else ""
  if isinstance(e, ImportError):
    return f"a package is missing in this environment ({type(e).__name__}: {first})", False
  if ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
      or type(e).__name__ == "OutOfMemoryError"):
    return f"out of memory ({type(e).__name__}: {first})", False
  return f"failed: {type(e).__name__}: {first}", True


def _torch_device(backend: str) -> tuple[str | None, str | None, dict | None]:
  """(torch device, why not, torch info): PyTorch eager on the device JAX uses."""
  try:
    import torch
  except ImportError as e:
    return None, f"no torch in this environment ({e})", None
  info = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
  if backend == "cpu":
    return "cpu", None, info
  if backend in ("gpu", "cuda", "rocm"):
    if not torch.cuda.is_available():
      return None, (f"torch {torch.__version__} sees no CUDA device (a CPU build?): its rows "
                    "would time the CPU against the GPU"), info
    info["device"] = torch.cuda.get_device_name(0)
    # fp32 means fp32 on both sides: cuDNN / cuBLAS default to TF32, the fp32 rows of
    # platonic_jax run true fp32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return "cuda", None, info
  return None, f"PyTorch eager has no {backend} device (no torch_xla rows)", info


def _row_dict(r: tuple) -> dict:
  """A row of ``encoders_gpt2.format_row``'s format as a dict."""
  return dict(zip(("model", "dtype", "impl", "rate", "unit", "ratio", "note"), r))


def run_encoders(rep: Report, sizes: Sizes, dtypes, torch_device, why_not) -> None:
  import argparse

  from platonic_jax.benchmarks import encoders as enc_bench
  if why_not:
    for m in ENCODERS:
      rep.skip("encoders", m, why_not)
    return
  args = argparse.Namespace(batch=sizes.batch, seq=sizes.seq, image=sizes.image,
                            seconds=sizes.seconds, gemm=False, torch_device=torch_device,
                            tiny=sizes.tiny_models)
  for m in ENCODERS:
    rows = []
    if rep.attempt("encoders", m, lambda m=m: enc_bench._bench_model(m, args, dtypes, rows, {})):
      rep.section("encoders")["rows"] += [_row_dict(r) for r in rows]


def run_decoder(rep: Report, sizes: Sizes, dtypes, torch_device, why_not) -> None:
  from platonic_jax.benchmarks import decoders
  what = f"llama-{sizes.decoder}"
  if why_not:
    rep.skip("decoder", what, why_not)
    return
  rows = []

  def go():
    rows.extend(decoders.run((sizes.decoder,), tuple(dtypes), sizes.decoder_batch,
                             sizes.decoder_seq, sizes.decoder_rounds,
                             vocab=sizes.decoder_vocab, torch_device=torch_device))

  if rep.attempt("decoder", what, go):
    rep.section("decoder")["rows"] += [_row_dict(r) for r in rows]


def run_metrics(rep: Report, sizes: Sizes, backend: str) -> None:
  from platonic_jax.benchmarks import metrics as met_bench
  names = list(KNN_METRICS)
  if backend == "tpu":
    names.append("mutual_knn@approx")
  else:
    rep.skip("metrics", "mutual_knn@approx", "lax.approx_max_k is exact off TPU (XLA lowers it "
             "to a sort there): its recall is 1 by construction, measured on TPU only")
  for n in sizes.metric_sizes:
    for m in names:
      what = f"{m} N={n}"
      if rep.out_of_time("metrics", what):
        continue
      if sizes.in_process:
        row = None

        def go(m=m, n=n):
          nonlocal row
          row = met_bench.run_one(m, n)
        if not rep.attempt("metrics", what, go):
          continue
      else:
        left = rep.budget - (time.perf_counter() - rep.start)
        row = met_bench._subprocess(["--one", m, "--n", str(n)], timeout=max(30.0, left))
        if "error" in row:
          err = row["error"]
          oom = "RESOURCE_EXHAUSTED" in err or "out of memory" in err.lower()
          rep.skip("metrics", what, f"out of memory ({err})" if oom else f"failed: {err}",
                   failed=not oom)
          continue
      row.setdefault("metric", m)
      row.setdefault("n", n)
      rep.section("metrics")["rows"].append(row)
      print(f"[metrics] {fmt_metric(row)}", flush=True)


def run_train(rep: Report, sizes: Sizes) -> None:
  from platonic_jax.benchmarks import train as train_bench
  for b in sizes.train_batches:
    out = {}
    if rep.attempt("train", f"plain B={b}",
                   lambda b=b: out.update(train_bench.bench(b, sizes.train_steps, "plain",
                                                            loop=True))):
      rep.section("train")["rows"].append(out)
      print(f"[train] B={b}: {out['step_pairs_per_s']:,.0f} pairs/s (step "
            f"{out['step_ms']:.2f} ms), loop {out['loop_pairs_per_s']:,.0f} pairs/s", flush=True)


def run_loader(rep: Report, sizes: Sizes) -> None:
  import ml_collections

  import platonic_jax.data as pdata
  from platonic_jax.benchmarks import data as data_bench
  workers = (data_bench._default_workers() if sizes.loader_workers is None
             else sizes.loader_workers)
  sec = rep.section("loader")
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "folder")
    os.makedirs(folder)
    state = {}

    def build():
      w, h = sizes.loader_size
      state["kib"] = data_bench._fake_photos(folder, sizes.loader_images, w, h)
      cfg = ml_collections.ConfigDict(dict(name="image_text_folder", manual_dir=folder,
                                           caption_policy="first", skip_bad=False))
      state["source"] = pdata.open_source(cfg, "train", os.path.join(tmp, "tfds"))

    if not rep.attempt("loader", "the JPEG dataset", build):
      return

    def one_worker():
      rate, _, per_cpu = data_bench._loader_rate(state["source"], batch=sizes.loader_batch,
                                                 workers=0)
      sec["rows"] += [{"stage": "loader, 1 worker (in-process)", "images_per_s": rate},
                      {"stage": "loader, per CPU-second of one worker", "images_per_s": per_cpu}]

    def many_workers():
      rate, startup, _ = data_bench._loader_rate(state["source"], batch=sizes.loader_batch,
                                                 workers=workers)
      sec["rows"].append({"stage": f"loader, {workers} worker processes (default)",
                          "images_per_s": rate, "startup_s": startup})

    def encoder():
      rate = data_bench._encoder_rate(sizes.loader_batch, sizes.loader_seconds, tmp,
                                      tiny=sizes.tiny_models)
      sec["rows"].append({"stage": f"ResNet-18 forward (Flax fp32, batch {sizes.loader_batch}"
                          f"{', tiny' if sizes.tiny_models else ''})", "images_per_s": rate,
                          "encoder": True})

    rep.attempt("loader", "loader, 1 worker", one_worker)
    if workers > 0:
      rep.attempt("loader", f"loader, {workers} workers", many_workers)
    else:
      rep.skip("loader", "loader, worker processes",
               "quick: worker processes not started (their start-up alone is seconds)")
    rep.attempt("loader", "ResNet-18 encoder", encoder)
  enc = next((r["images_per_s"] for r in sec["rows"] if r.get("encoder")), None)
  for r in sec["rows"]:
    if enc:
      r["x_encoder"] = r["images_per_s"] / enc
    print(f"[loader] {r['stage']}: {r['images_per_s']:.1f} img/s", flush=True)


# ------------------------------------------------------------------------------- output


def fmt_metric(r: dict) -> str:
  dev = r.get("peak_device_mb")
  return (f"{r['metric']} N={r['n']}: {r['seconds']:.3f} s, peak device "
          f"{'n/a' if dev is None else f'{dev:.0f} MB'}, RSS {r.get('peak_rss_mb', 0):.0f} MB")


def _num(v, spec=".1f", none=""):
  return none if v is None else format(v, spec)


def _torch_line(info: dict | None) -> str:
  if not info:
    return "not installed"
  return (f"{info['version']}, " + (f"on {info['device']}" if info.get("device") else
                                    f"CUDA {'available' if info['cuda'] else 'not available'}"))


def _title(secs: dict, name: str, text: str) -> str:
  return f"## {text}, {secs[name].get('seconds', 0):.0f} s"


def markdown(result: dict) -> str:
  """The JSON of one run as markdown: the machine, one table per section, the skips
  and the issue's targets."""
  m = result["machine"]
  out = [f"# platonic_jax device benchmark{' (--quick: tiny sizes)' if result['quick'] else ''}",
         "", f"- {common.header(m)}",
         f"- torch: {_torch_line(result['torch'])}",
         f"- started {result['started']}, {result['seconds']:.0f} s", ""]
  secs = result["sections"]
  for name in ("encoders", "decoder"):
    rows = secs.get(name, {}).get("rows", [])
    if rows:
      out += [_title(secs, name, name), "",
              "| model | dtype | impl | throughput | unit | x torch | note |",
              "| --- | --- | --- | ---: | --- | ---: | --- |"]
      out += [f"| {r['model']} | {r['dtype']} | {r['impl']} | {r['rate']:.1f} | {r['unit']} | "
              f"{_num(r['ratio'], '.2f')} | {r['note'] or ''} |" for r in rows]
      out.append("")
  rows = secs.get("metrics", {}).get("rows", [])
  if rows:
    out += [_title(secs, "metrics", "metrics (D = 768, k = 10)"), "",
            "| metric | N | tile | time (s) | Gram GFLOP/s | % of matmul peak | peak device (MB) "
            "| peak RSS (MB) | note |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
      gf = r.get("gram_gflop")
      rate = gf / r["seconds"] if gf else None
      eff = (f"{100 * r['efficiency']:.0f}% of {r.get('peak_dtype', 'fp32')} "
             f"({r['peak_gflops']:.0f})" if "efficiency" in r else "")
      note = []
      if r.get("compile_included"):
        note.append("one call, compile included")
      if "approx_recall_measured" in r:
        note.append(f"recall {r['approx_recall_measured']:.4f} at target "
                    f"{r['approx_recall_target']}")
      if "bf16_neighbour_overlap" in r:
        note.append(f"bf16 keeps {100 * r['bf16_neighbour_overlap']:.2f}% of fp32 neighbours")
      out.append(f"| {r['metric']} | {r['n']} | {r.get('tile') or ''} | {r['seconds']:.3f} | "
                 f"{_num(rate, '.0f')} | {eff} | {_num(r.get('peak_device_mb'), '.0f', 'n/a')} | "
                 f"{r.get('peak_rss_mb', 0):.0f} | {'; '.join(note)} |")
    out.append("")
  rows = secs.get("train", {}).get("rows", [])
  if rows:
    out += [_title(secs, "train", "train (linear adapters 512/768 -> 512, CLIP loss)"), "",
            "| batch | step pairs/s | step (ms) | step GFLOP/s | share of fp32 matmul rate | "
            "loop pairs/s |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r['batch_size']} | {r['step_pairs_per_s']:,.0f} | {r['step_ms']:.2f} | "
            f"{r['step_gflops']:.0f} | {r['share_of_matmul_peak']:.2f} | "
            f"{r['loop_pairs_per_s']:,.0f} |" for r in rows]
    out.append("")
  rows = secs.get("loader", {}).get("rows", [])
  if rows:
    out += [_title(secs, "loader", "loader (JPEG decode + 224 preprocessing) against the "
                   "encoder"), "",
            "| stage | images/s | x encoder |", "| --- | ---: | ---: |"]
    out += [f"| {r['stage']} | {r['images_per_s']:.1f} | {_num(r.get('x_encoder'), '.2f')} |"
            for r in rows]
    out.append("")
  skipped = result["skipped"]
  out += ["## skipped", ""] + ([f"- {s}" for s in skipped] or ["- nothing"]) + [""]
  out += ["## targets (issue 17)", ""] + [f"- {t}" for t in targets(result)]
  return "\n".join(out) + "\n"


def targets(result: dict) -> list[str]:
  """The issue's device targets against this run's rows (quick runs: tiny sizes, so the
  verdicts say nothing of a device)."""
  secs = result["sections"]
  out = []
  enc = [r for s in ("encoders", "decoder") for r in secs.get(s, {}).get("rows", [])
         if r["impl"] == "platonic_jax"]
  if enc:
    worst = min(enc, key=lambda r: r["ratio"])
    out.append(f"encoders >= {ENCODER_RATIO}x PyTorch eager at equal precision: worst "
               f"{worst['ratio']:.2f}x ({worst['model']} {worst['dtype']}) "
               f"{'PASS' if worst['ratio'] >= ENCODER_RATIO else 'FAIL'}")
  tr = secs.get("train", {}).get("rows", [])
  if tr:
    best = max(r["step_pairs_per_s"] for r in tr)
    out.append(f"training step >= 1M pairs/s: best {best:,.0f} "
               f"{'PASS' if best >= TRAIN_PAIRS else 'FAIL'}")
  knn = [r for r in secs.get("metrics", {}).get("rows", []) if r["metric"].startswith("mutual")]
  if knn:
    n = max(r["n"] for r in knn)
    peaks = [r["peak_device_mb"] for r in knn if r["n"] == n and r.get("peak_device_mb")]
    out.append(f"mutual_knn at N = {n:,} within device memory: measured, peak device memory "
               + (f"{max(peaks):,.0f} MB" if peaks else "not reported by this backend"))
  bf = [r for r in knn if r["metric"] == "mutual_knn@bf16" and "efficiency" in r]
  if bf:
    e = max(r["efficiency"] for r in bf)
    out.append(f"Gram work >= {GRAM_SHARE:.0%} of the bf16 matmul rate in bf16: best {e:.0%} "
               f"{'PASS' if e >= GRAM_SHARE else 'FAIL'}")
  if result["quick"]:
    out.append("(--quick: tiny sizes on this machine; the verdicts above are not the targets')")
  return out or ["nothing measured"]


# --------------------------------------------------------------------------------- main


def _parse(argv):
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="device_benchmark_out",
                 help="directory for device_benchmark.json and device_benchmark.md")
  p.add_argument("--quick", action="store_true",
                 help="tiny sizes, measured in this process (the CPU smoke run of the tests)")
  p.add_argument("--sections", type=common.choices(SECTIONS), default=SECTIONS,
                 help=f"comma list of {', '.join(SECTIONS)}")
  p.add_argument("--dtypes", type=common.choices(DTYPES), default=DTYPES,
                 help="encoder / decoder precisions")
  p.add_argument("--metric-sizes", "--metric_sizes", dest="metric_sizes", type=common.ints(16),
                 default=None, help="N of the metrics rows (default 64000,1000000)")
  p.add_argument("--train-batches", "--train_batches", dest="train_batches",
                 type=common.ints(1), default=None,
                 help="global batch sizes of the training step (default 4096,32768)")
  p.add_argument("--budget", type=float, default=None,
                 help="seconds after which the remaining entries are skipped (default 480; "
                 "quick 300)")
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = _parse(sys.argv[1:] if argv is None else argv)
  # JAX would otherwise take 75% of a GPU at start: PyTorch shares the device with it
  # here, and each metrics row starts its own JAX process on the same device.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  sizes = QUICK if args.quick else Sizes()
  sizes = dataclasses.replace(
      sizes, metric_sizes=args.metric_sizes or sizes.metric_sizes,
      train_batches=args.train_batches or sizes.train_batches,
      budget=sizes.budget if args.budget is None else args.budget)
  import jax
  ndev = jax.device_count()
  bad = [b for b in sizes.train_batches if b % ndev]
  if bad:
    common.option_error("--train-batches", f"{bad} not divisible by the {ndev} devices")
  machine = common.print_header(f"device benchmark{' --quick' if args.quick else ''}: "
                                f"sections {', '.join(args.sections)}; budget {sizes.budget:.0f} s")
  backend = machine["backend"]
  torch_device, why_not, torch_info = _torch_device(backend)
  rep = Report(sizes.budget)
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  no_gpu = backend == "cpu" and not args.quick
  for name in RUN_ORDER:
    if name not in args.sections:
      continue
    rep.section(name)
    if no_gpu:
      rep.skip(name, "every entry", "no GPU / TPU: jax's backend is cpu, and the full sizes "
               "are for an accelerator (use --quick for the CPU smoke run)")
      continue
    print(f"\n== {name} ==", flush=True)
    t0 = time.perf_counter()
    if name == "encoders":
      run_encoders(rep, sizes, args.dtypes, torch_device, why_not)
    elif name == "decoder":
      run_decoder(rep, sizes, args.dtypes, torch_device, why_not)
    elif name == "metrics":
      run_metrics(rep, sizes, backend)
    elif name == "train":
      run_train(rep, sizes)
    elif name == "loader":
      run_loader(rep, sizes)
    rep.section(name)["seconds"] = time.perf_counter() - t0
  for name in SECTIONS:   # sections not asked for: say so, so the JSON has every one
    if name not in args.sections:
      rep.skip(name, "every entry", "not in --sections")
  result = {"benchmark": "platonic_jax.benchmarks.device", "quick": args.quick,
            "started": started, "seconds": time.perf_counter() - rep.start,
            "machine": machine, "torch": torch_info, "sizes": dataclasses.asdict(sizes),
            "sections": {}, "skipped": []}
  for name in SECTIONS:
    sec = rep.sections[name]
    sec["status"] = ("measured" if sec["rows"] and not sec["skipped"] else
                     "partial" if sec["rows"] else "skipped")
    result["sections"][name] = sec
    result["skipped"] += [f"{name} / {s['what']}: {s['why']}" for s in sec["skipped"]]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "device_benchmark.json"), "w") as f:
    json.dump(result, f, indent=1, default=str)
  md = markdown(result)
  with open(os.path.join(args.out, "device_benchmark.md"), "w") as f:
    f.write(md)
  print("\n" + md, flush=True)
  return result


if __name__ == "__main__":
  main()
