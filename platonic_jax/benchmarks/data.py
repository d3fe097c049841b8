"""Loader throughput (decode + 224 preprocessing) beside the ResNet-18 encoder's rate.

    python -m platonic_jax.benchmarks.data [--num_images=512] [--batch=64] [--workers=2]
        [--size=500x375] [--seconds=8]

Builds an ``image_text_folder`` TFDS dataset of Flickr30k-like JPEGs (500 x 375 like
Flickr30k's photos, smooth content + heavy grain, quality 90: ~95 KiB each; real Flickr30k
files average ~130 KB, so their decode costs a little more) in a temp dir, then
times the grain loader over it with resnet-18's preprocessing
(``ConvNextImageProcessor``: resize the short side to 256, center-crop 224, normalise;
``platonic_jax.encoders.preprocess``):

- per worker: ``worker_count=0`` with one decode thread = one core's rate;
- ``--workers`` worker processes (default: ``data.num_workers`` of configs/flickr.py),
  steady state (timed from the first batch, so process start-up is excluded; it is
  printed separately);

and the Flax ResNet-18 forward pass (microsoft/resnet-18's config, random weights, saved
as a HF checkpoint and loaded by ``encoders.load``) on [batch, 224, 224, 3] on this
machine's default JAX device. The per-worker rate is also given per CPU-second (the
decode + preprocessing cost itself, independent of other load on a shared machine).
Target: loader with the default worker count >= 2x the encoder's images/s. Timings on a
shared machine are noisy: the ratio column compares rates measured in the same run.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time

import numpy as np


def _parse(argv):
  from platonic_jax.benchmarks import common
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num_images", type=int, default=512)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--workers", type=int, default=None,
                 help="worker processes (default: configs/flickr.py data.num_workers)")
  p.add_argument("--size", type=common.ints(16, sep="x"), default=(500, 375),
                 help="WxH of the fake photos, e.g. 500x375")
  p.add_argument("--seconds", type=float, default=8.0, help="timed seconds for the encoder")
  args = p.parse_args(argv)
  if len(args.size) != 2:
    p.error(f"argument --size: give WxH, e.g. 500x375, got {'x'.join(map(str, args.size))}")
  if args.num_images < 1 or args.batch < 1 or (args.workers or 0) < 0:
    p.error("arguments --num_images / --batch must be >= 1 and --workers >= 0")
  return args


def _default_workers() -> int:
  import importlib.util
  path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "flickr.py")
  if not os.path.exists(path):
    return 2
  spec = importlib.util.spec_from_file_location("flickr_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return int(mod.get_config().data.num_workers)


def _fake_photos(folder: str, n: int, w: int, h: int) -> float:
  """n JPEGs like photos (smooth structure + sensor grain); returns mean KiB per file."""
  from PIL import Image
  rng = np.random.default_rng(0)
  total = 0
  lines = []
  for i in range(n):
    low = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
    a = np.asarray(low.resize((w, h), Image.BICUBIC), np.int16)
    a = np.clip(a + rng.normal(0, 16, a.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, f"{i:06d}.jpg")
    Image.fromarray(a).save(path, "JPEG", quality=90)
    total += os.path.getsize(path)
    lines.append(f'{{"image": "{i:06d}.jpg", "caption": "photo {i}", "split": "train"}}')
  with open(os.path.join(folder, "captions.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return total / n / 1024


def resnet18_preprocess():
  """PIL RGB -> [224, 224, 3] float32, microsoft/resnet-18's processor settings."""
  from platonic_jax.encoders import preprocess
  spec = preprocess.ImageSpec.from_dict({
      "image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 224},
      "crop_pct": 0.875, "resample": 3})
  return functools.partial(preprocess.preprocess_one, spec=spec)


def _loader_rate(source, *, batch, workers, threads=1):
  """(steady images/s, seconds until every worker has delivered its first batch).

  The clock starts once each worker has produced a batch, so process start-up (spawn +
  imports, paid once per run) is reported apart from the rate.
  """
  from platonic_jax.data.loader import make_loader
  loader = make_loader(source, batch_size=batch, preprocess=resnet18_preprocess(), seed=0,
                       shuffle=False, num_epochs=1, worker_count=workers, shard_index=0,
                       shard_count=1, threads_per_worker=threads)
  if len(loader) < 2 * max(workers, 1):
    raise ValueError(f"--num_images gives {len(loader)} batches: too few to time "
                     f"{workers} workers; raise --num_images")
  t0 = time.perf_counter()
  it = iter(loader)
  for _ in range(max(workers, 1)):
    first = next(it)
  t1, c1 = time.perf_counter(), time.process_time()
  n = 0
  for b in it:
    n += int(b["mask"].sum())
  t2, c2 = time.perf_counter(), time.process_time()
  it.close()
  assert first["image"].shape[1:] == (224, 224, 3)
  # In-process (workers=0) the CPU time is the decode + preprocess cost itself: images
  # per CPU-second is the per-core rate without the other tenants of a shared machine.
  return n / (t2 - t1), t1 - t0, n / max(c2 - c1, 1e-9)


def _time(fn, seconds: float, min_iters: int = 3) -> float:
  """Calls per second of ``fn`` (which blocks until done), after one warm-up call."""
  fn()
  n, t0 = 0, time.perf_counter()
  while n < min_iters or time.perf_counter() - t0 < seconds:
    fn()
    n += 1
  return n / (time.perf_counter() - t0)


def _encoder_rate(batch: int, seconds: float, tmp: str, tiny: bool = False) -> float:
  """Flax ResNet-18 forward images/s: microsoft/resnet-18's config with random weights,
  saved as a HF checkpoint and loaded by ``encoders.load`` (no download). ``tiny``: the
  same architecture a few channels wide (``benchmarks.device --quick``)."""
  import jax
  import transformers as T

  from platonic_jax import encoders
  from platonic_jax.benchmarks.encoders import _configs
  path = os.path.join(tmp, "resnet18")
  T.ResNetModel(_configs("resnet18", tiny)).save_pretrained(path)
  T.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(path)
  enc = encoders.load(path, dtype="float32")
  # The model on already-preprocessed [B, 224, 224, 3] input (the loader's output), so
  # the rate is the network's alone: encode() would time its own preprocessing too.
  fwd = jax.jit(lambda p, x: enc.module.apply({"params": p}, x, pool="")[-1])
  x = jax.device_put(np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(
      np.float32))
  return batch * _time(lambda: jax.block_until_ready(fwd(enc.params, x)), seconds)


def main(argv=None):
  args = _parse(sys.argv[1:] if argv is None else argv)
  import jax
  import ml_collections

  import platonic_jax.data as pdata
  from platonic_jax.benchmarks import common
  workers = _default_workers() if args.workers is None else args.workers
  w, h = args.size
  common.print_header(f"load average: {os.getloadavg()[0]:.1f}  images: {args.num_images} "
                      f"{w}x{h}  batch: {args.batch}  workers: {workers}")
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "folder")
    os.makedirs(folder)
    kib = _fake_photos(folder, args.num_images, w, h)
    cfg = ml_collections.ConfigDict(dict(name="image_text_folder", manual_dir=folder,
                                         caption_policy="first", skip_bad=False))
    source = pdata.open_source(cfg, "train", os.path.join(tmp, "tfds"))
    per_worker, _, per_cpu_s = _loader_rate(source, batch=args.batch, workers=0)
    print(f"loader, 1 worker (in-process, 1 thread): {per_worker:.1f} img/s "
          f"({per_cpu_s:.1f} img per CPU-second)", flush=True)
    multi, startup, _ = _loader_rate(source, batch=args.batch, workers=workers)
    print(f"loader, {workers} worker processes: {multi:.1f} img/s "
          f"(start-up {startup:.1f} s)", flush=True)
    enc = _encoder_rate(args.batch, args.seconds, tmp)
  print(f"encoder ResNet-18 (Flax, fp32, batch {args.batch}): {enc:.1f} img/s", flush=True)
  rows = [
      ("decode + 224 preprocess, per worker", per_worker, per_worker / enc),
      ("decode + 224 preprocess, per CPU-second of one worker", per_cpu_s, per_cpu_s / enc),
      (f"decode + 224 preprocess, {workers} workers (default)", multi, multi / enc),
      (f"ResNet-18 forward (Flax fp32, batch {args.batch}, {jax.device_count()} "
       f"{jax.devices()[0].platform} device(s))", enc, 1.0),
  ]
  print(f"\nJPEG {w}x{h}, mean {kib:.0f} KiB")
  print("| stage | images/s | x encoder |\n| --- | ---: | ---: |")
  for name, rate, ratio in rows:
    print(f"| {name} | {rate:.1f} | {ratio:.2f} |")
  verdict = "meets" if multi >= 2 * enc else "MISSES"
  print(f"\nloader / encoder = {multi / enc:.2f} with {workers} workers: {verdict} the >= 2x "
        f"target (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
  return rows


if __name__ == "__main__":
  main()
