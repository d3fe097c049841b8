"""Encoder throughput: platonic_jax (jit, sharded) vs transformers PyTorch, same inputs.

    python -m platonic_jax.benchmarks.encoders
        [--models=resnet18,gpt2,dinov2-s,dinov2-b,vit-s16,vit-b16,vit-l14]
        [--batch=16] [--seq=77] [--image=224] [--seconds=8] [--threads=N] [--dtypes=fp32,bf16]
        [--cpu-devices=N] [--no-gemm] [--torch-device=cpu|cuda] [--xla_flags="..."]

Full-size models are built from configs with random weights (no download); the PyTorch
model's weights are converted with the same ``convert`` that loads checkpoints (the ViT
rows: timm's own VisionTransformer of the study's ids, ``timm_format.convert``; timm is
imported with ``torchvision_standin`` when no working torchvision is installed), and the
features of both are compared (relative error printed), so the run is also a parity check
at full size. Throughput is images/s (tokens/s for GPT-2: batch x seq, all real tokens)
of the model forward only -- preprocessing / tokenization excluded on both sides.
Timings on a shared machine are noisy: compare the ratio column, measured in one run.

PyTorch variants: fp32 NCHW and channels-last (ResNet; the ratio uses the faster),
bf16 ``torch.autocast`` (channels-last for ResNet); timm's ViTs with their fused SDPA
attention and with ``fused_attn=False`` (explicit matmuls), the ratio against the faster. platonic_jax: ``dtype=float32`` and
``dtype=bfloat16`` (bf16 operands, f32 accumulation / outputs).

Roofline (skipped with --no-gemm): the best matmul rate of XLA and torch on the dense
layers' shapes, 8 matmuls in a loop into one reused output (as in a model), and each
model's GFLOP/s (XLA's cost analysis of the forward) as a share of it, for the best
PyTorch variant, for platonic_jax, and for a platonic_jax 1.5x faster than PyTorch: a
share near or above 100% is out of reach for any implementation on this machine.
"""

from __future__ import annotations

import os
import sys
import time
import types

from platonic_jax.benchmarks import common
from platonic_jax.benchmarks.encoders_gpt2 import format_row

# The ViT rows: timm architectures of the Platonic study (ViT-S/16 and ViT-B/16 AugReg,
# ViT-L/14 CLIP), at their 224 px.
_TIMM_MODELS = {"vit-s16": "vit_small_patch16_224.augreg_in21k",
                "vit-b16": "vit_base_patch16_224.augreg_in21k",
                "vit-l14": "vit_large_patch14_clip_224.laion2b"}
MODELS = ("resnet18", "gpt2", "dinov2-s", "dinov2-b") + tuple(_TIMM_MODELS)
DTYPES = ("fp32", "bf16")


def _parse(argv):
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", type=common.choices(MODELS), default=MODELS,
                 help=f"comma list of {', '.join(MODELS)}")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq", type=int, default=77, help="GPT-2 tokens per sequence")
  p.add_argument("--image", type=int, default=224, help="image side in pixels")
  p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per variant")
  p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cpu count)")
  p.add_argument("--dtypes", type=common.choices(DTYPES), default=DTYPES,
                 help=f"comma list of {', '.join(DTYPES)}")
  p.add_argument("--single_thread", action="store_true",
                 help="the process pinned to one core (1 torch thread, 1 XLA:CPU thread): "
                      "robust to a loaded machine, where multi-threaded torch (OpenMP "
                      "barriers) degrades far more than XLA")
  p.add_argument("--cpu-devices", "--cpu_devices", dest="cpu_devices", type=int, default=1,
                 help="XLA:CPU devices (e.g. one per core: the batch is split over them, each "
                      "runs single-stream; 0-10%% faster for the transformers on 2 cores)")
  p.add_argument("--no-gemm", "--no_gemm", dest="gemm", action="store_false",
                 help="skip the matmul peak and roofline rows (XLA vs torch on the dense layers' "
                      "matmul, and each model's share of it)")
  p.add_argument("--torch-device", "--torch_device", dest="torch_device", default="cpu",
                 choices=("cpu", "cuda"),
                 help="where PyTorch runs: on a GPU machine give cuda (JAX uses its default "
                      "backend); fp32 rows then run without TF32 on both sides")
  p.add_argument("--xla_flags", default=None,
                 help="extra XLA_FLAGS, set before jax starts (e.g. "
                      "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce,individual_convolution)")
  args = p.parse_args(argv)
  for flag in ("batch", "seq", "image"):
    if getattr(args, flag) < 1:
      p.error(f"argument --{flag}: must be >= 1, got {getattr(args, flag)}")
  return args


def _timm():
  from platonic_jax.benchmarks import torchvision_standin
  return torchvision_standin.import_timm()[0]


# tiny=True: the same architectures shrunk to a few thousand parameters, for the CPU
# smoke run of ``benchmarks.device --quick`` (28 px images: two patches of 14 a side).
TINY_IMAGE = 28
_TINY_TIMM = dict(depth=2, embed_dim=64, num_heads=4, img_size=TINY_IMAGE)


def _configs(name, tiny: bool = False):
  import transformers as T
  if name in _TIMM_MODELS:   # the timm hub config of the id (its architecture, pretrained_cfg)
    from platonic_jax.encoders import timm_format
    arch = _TIMM_MODELS[name].split(".")[0]
    cfg = _timm().models.get_pretrained_cfg(_TIMM_MODELS[name]).to_dict()
    return timm_format.config_from_dict({"architecture": arch, "pretrained_cfg": cfg,
                                         "model_args": _TINY_TIMM if tiny else {}})
  if name == "resnet18":   # microsoft/resnet-18's config.json
    sizes, depths = ([8, 16, 16, 32], [1, 1, 1, 1]) if tiny else ([64, 128, 256, 512], [2, 2, 2, 2])
    return T.ResNetConfig(embedding_size=sizes[0], hidden_sizes=sizes, depths=depths,
                          layer_type="basic", hidden_act="relu", downsample_in_first_stage=False)
  if name == "gpt2":       # openai-community/gpt2 (124M)
    return T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512) if tiny else T.GPT2Config()
  if name in ("dinov2-s", "dinov2-b"):   # facebook/dinov2-small / -base: trained at 518 px
    d, h = (384, 6) if name == "dinov2-s" else (768, 12)
    if tiny:
      return T.Dinov2Config(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                            mlp_ratio=4, image_size=TINY_IMAGE, patch_size=14)
    return T.Dinov2Config(hidden_size=d, num_attention_heads=h, num_hidden_layers=12,
                          mlp_ratio=4, image_size=518, patch_size=14)
  raise ValueError(f"unknown model {name!r}")


def _torch_model(name, config, tiny: bool = False):
  import torch
  import transformers as T
  if name not in _TIMM_MODELS:
    cls = {"resnet18": T.ResNetModel, "gpt2": T.GPT2Model}.get(name, T.Dinov2Model)
    return cls(config).eval()

  class TimmBlocks(torch.nn.Module):
    """timm's forward_features up to the last block (the study's feature: no final norm),
    called like the HF models, ``(pixel_values=...) -> .pooler_output`` = class token
    [B, D]; its state_dict is the timm model's own (timm key names)."""

    def __init__(self, model):
      super().__init__()
      self.model = model

    def state_dict(self, *args, **kwargs):
      return self.model.state_dict(*args, **kwargs)

    def forward(self, pixel_values, output_hidden_states=False):
      m = self.model
      x = m.norm_pre(m._pos_embed(m.patch_embed(pixel_values)))
      return types.SimpleNamespace(pooler_output=m.blocks(x)[:, 0])

  kw = _TINY_TIMM if tiny else {}
  return TimmBlocks(_timm().create_model(_TIMM_MODELS[name], pretrained=False, **kw)).eval()


def _round_robin(calls: dict, seconds: float, min_rounds: int = 3) -> dict:
  """Median seconds per call of each blocking callable, timed in interleaved rounds.

  Interleaving (a, b, c, a, b, c, ...) exposes every variant to the same background load,
  so the ratios stay meaningful on a shared machine; the median drops stalls.
  """
  times = {k: [] for k in calls}
  t0 = time.perf_counter()
  rounds = 0
  while rounds < min_rounds or time.perf_counter() - t0 < seconds * len(calls):
    for k, fn in calls.items():
      t = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t)
    rounds += 1
  return {k: float(sorted(v)[len(v) // 2]) for k, v in times.items()}


def _bench_model(name, args, dtypes, rows, roofline):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from platonic_jax.encoders import core, registry

  tiny = getattr(args, "tiny", False)   # benchmarks.device --quick
  config = _configs(name, tiny)
  tmodel = _torch_model(name, config, tiny)
  arch = registry.get(config.model_type)
  sd = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
  params = arch.convert(sd, config)
  dev = torch.device(args.torch_device)
  tmodel = tmodel.to(dev)
  rng = np.random.default_rng(0)
  if arch.MODALITY == "image":
    x = rng.normal(size=(args.batch, args.image, args.image, 3)).astype(np.float32)
    jax_inputs = (x,)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
    torch_inputs = lambda cl: dict(pixel_values=tx.contiguous(  # noqa: E731
        memory_format=torch.channels_last) if cl else tx)
    per_call, unit = args.batch, "img/s"
  else:
    ids = rng.integers(0, config.vocab_size, (args.batch, args.seq)).astype(np.int32)
    mask = np.ones_like(ids)
    jax_inputs = (ids, mask)
    torch_inputs = lambda cl: dict(input_ids=torch.from_numpy(ids.astype(np.int64)).to(dev),  # noqa: E731
                                   attention_mask=torch.from_numpy(mask.astype(np.int64)).to(dev))
    per_call, unit = args.batch * args.seq, "tok/s"

  def torch_ref(cl=False, autocast=False, fused_attn=True):
    model = tmodel.to(memory_format=torch.channels_last) if cl else tmodel
    inputs = torch_inputs(cl)

    def run():
      if name in _TIMM_MODELS:   # timm's attention: fused SDPA or its explicit matmuls
        for block in model.model.blocks:
          block.attn.fused_attn = fused_attn
      with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(**inputs, output_hidden_states=arch.MODALITY == "text")
      if dev.type == "cuda":
        torch.cuda.synchronize()   # CUDA calls return before the work is done
      return out
    return run

  def torch_feature(out):
    if name == "resnet18":
      return out.pooler_output[:, :, 0, 0].float().cpu().numpy()
    if name == "gpt2":
      return out.hidden_states[-1].float().mean(1).cpu().numpy()   # all tokens real: plain mean
    return out.pooler_output.float().cpu().numpy()

  ref = torch_feature(torch_ref()())
  # GFLOP per unit of throughput: per image, or per token (one sample / seq tokens).
  gflop = _model_gflop(arch, config, jax_inputs) / (per_call // args.batch) if args.gemm else None
  variants = {"fp32": [("eager", dict())], "bf16": [("autocast", dict(autocast=True))]}
  if name == "resnet18":
    variants["fp32"] = [("nchw", dict()), ("channels-last", dict(cl=True))]
    variants["bf16"] = [("autocast channels-last", dict(cl=True, autocast=True))]
  if name in _TIMM_MODELS:   # timm's fused SDPA is slower than its matmuls under CPU autocast
    variants["fp32"] += [("eager unfused attn", dict(fused_attn=False))]
    variants["bf16"] += [("autocast unfused attn", dict(autocast=True, fused_attn=False))]
  for dt in dtypes:
    calls = {f"torch {label}": torch_ref(**kw) for label, kw in variants[dt]}
    # The image spec gives the Encoder (its shape checks, its CPU-variant probe) the
    # benchmark's input size rather than the config's (DINOv2's 518).
    spec = _FixedSize(args.image) if arch.MODALITY == "image" else None
    enc = core.Encoder(name, config, arch, params, jnp.float32 if dt == "fp32" else jnp.bfloat16,
                       image_spec=spec)
    fn = enc._fn("", (enc.num_layers - 1,))
    dev_inputs = [jax.device_put(np.asarray(a), core.sharding.batch_sharding(enc.mesh))
                  for a in jax_inputs]
    calls["platonic_jax"] = lambda: jax.block_until_ready(fn(enc.params, *dev_inputs))
    t0 = time.perf_counter()
    feats = np.asarray(calls["platonic_jax"]()[0])
    compile_s = time.perf_counter() - t0
    err = float(np.linalg.norm(feats - ref) / np.linalg.norm(ref))
    for k, c in calls.items():
      if k != "platonic_jax":
        c()   # warm-up (oneDNN primitive creation)
    med = _round_robin(calls, args.seconds)
    rates = {k: per_call / v for k, v in med.items()}
    best = max((k for k in rates if k != "platonic_jax"), key=rates.get)
    if args.gemm:
      roofline[(name, dt)] = (gflop, rates[best], rates["platonic_jax"], unit)
    for k, r in rates.items():
      if k != "platonic_jax":
        rows.append((name, dt, k, r, unit, None, None))
    rows.append((name, dt, "platonic_jax", rates["platonic_jax"], unit,
                 rates["platonic_jax"] / rates[best],
                 f"vs {best}; rel.err vs torch fp32 {err:.1e}; compile {compile_s:.0f}s"
                 + _cpu_note(enc.cpu_choice)))
    print(format_row(rows[-1]), flush=True)


class _FixedSize:
  """An image spec that only states the input size (the benchmark feeds pixels)."""

  def __init__(self, side: int):
    self.side = side

  def output_size(self) -> tuple[int, int]:
    return (self.side, self.side)


def _cpu_note(choice) -> str:
  """Which CPU-only knobs ran (encoders/cpu_tuning.py), for the row's note."""
  if choice is None:
    return ""
  return f"; CPU variant {choice.label()} ({choice.source})"


# The matmul shapes of the roofline peak: the dense layers of DINOv2-B ([16 x 257, 768] x
# [768, 3072], its MLP input) and GPT-2 ([16 x 77, 768] x [768, 3072]) at batch 16.
_PEAK_SHAPES = ((16 * 257, 768, 3072), (16 * 77, 768, 3072))


def _gemm_peak(dtypes, shapes=_PEAK_SHAPES, reps: int = 8, torch_device: str = "cpu") -> dict:
  """{dtype: (XLA GFLOP/s, torch GFLOP/s)}: the best rate of one matmul of ``shapes``.

  Each library runs ``reps`` matmuls into one reused output (XLA: a fori_loop whose carry
  is the output, with one element of the left operand changed per step so nothing is
  loop-invariant; torch: ``matmul(out=)``), as a model's layers do. Timing single calls
  instead measures the page faults of a fresh 20-50 MB output per call: an earlier
  version of this table did, and read XLA's bf16 matmul as 0.73x torch's when in a loop
  the two are on par. bf16 = bf16 operands, f32 result (what the encoders run).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  rng = np.random.default_rng(0)

  def best_time(fn):
    fn()
    times = []
    for _ in range(5):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    return min(times)

  out = {}
  for dt in dtypes:
    jd, td = (jnp.float32, torch.float32) if dt == "fp32" else (jnp.bfloat16, torch.bfloat16)
    prec = jax.lax.Precision.HIGHEST if dt == "fp32" else jax.lax.Precision.DEFAULT
    rates = []
    for m, k, n in shapes:
      a = rng.standard_normal((m, k)).astype(np.float32)
      b = rng.standard_normal((k, n)).astype(np.float32)

      @jax.jit
      def loop(a, b):
        def step(_, carry):
          a, c = carry
          a = a.at[0, 0].set((c[0, 0] * 0).astype(a.dtype))   # a depends on the last c
          return a, jnp.dot(a, b, precision=prec, preferred_element_type=jnp.float32)
        return jax.lax.fori_loop(0, reps, step, (a, jnp.zeros((m, n), jnp.float32)))[1]

      ja, jb = jnp.asarray(a, jd), jnp.asarray(b, jd)
      ta = torch.from_numpy(a).to(device=torch_device, dtype=td)
      tb = torch.from_numpy(b).to(device=torch_device, dtype=td)
      tc = torch.empty((m, n), dtype=td, device=torch_device)

      def torch_loop():
        for _ in range(reps):
          torch.matmul(ta, tb, out=tc)
        if torch_device == "cuda":
          torch.cuda.synchronize()

      flop = 2 * m * k * n * reps
      rates.append((flop / best_time(lambda: loop(ja, jb).block_until_ready()) / 1e9,
                    flop / best_time(torch_loop) / 1e9))
    out[dt] = (max(r[0] for r in rates), max(r[1] for r in rates))
  return out


def _model_gflop(arch, config, inputs) -> float:
  """GFLOP of one forward of the first sample of ``inputs`` (XLA's cost analysis of the
  plain module: direct convolutions, batched attention, no micro-batch loop; the cost
  analysis would count a loop body once, as the CPU variants' loops would be)."""
  import jax
  import jax.numpy as jnp
  one = tuple(x[:1] for x in inputs)
  module = arch.build(config, jnp.float32)
  params = jax.eval_shape(lambda: module.init(jax.random.key(0), *one))["params"]
  fn = jax.jit(lambda p, *x: module.apply({"params": p}, *x, pool=""))
  cost = fn.lower(params, *one).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 1e9


def _print_roofline(roofline: dict, peaks: dict) -> None:
  """Each model's achieved GFLOP/s as a share of the best matmul rate measured in this run,
  and the share a platonic_jax 1.5x faster than the best PyTorch variant would need. 100%
  would be the whole forward pass (norms, softmax, activations, small attention matmuls
  included) running as fast as the bare matmuls: a share near or above it is out of
  reach on this machine."""
  print("\nRoofline: model GFLOP/s as a share of the best matmul rate of this run "
        "(peak = max of XLA's and torch's, above):")
  print("model     dtype  GFLOP/item  peak GFLOP/s  torch best  platonic_jax  1.5x torch would need")
  for (name, dt), (gflop, torch_rate, jax_rate, unit) in roofline.items():
    if dt not in peaks:
      continue
    peak = max(peaks[dt])
    per = "tok" if unit == "tok/s" else "img"
    share = lambda rate: rate * gflop / peak   # noqa: E731
    print(f"{name:9s} {dt:5s}  {gflop:7.3f}/{per}  {peak:11.0f}  {share(torch_rate):9.0%}  "
          f"{share(jax_rate):11.0%}  {share(1.5 * torch_rate):11.0%}")


def main(argv=None):
  args = _parse(sys.argv[1:] if argv is None else argv)   # before the slow imports
  flags = args.xla_flags or ""
  if args.single_thread:
    common.pin_one_core()
    args.threads = 1
  if args.cpu_devices > 1:
    flags += f" --xla_force_host_platform_device_count={args.cpu_devices}"
  if flags.strip():
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
  import torch
  threads = args.threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  if args.torch_device == "cuda":
    if not torch.cuda.is_available():
      common.option_error("--torch-device", f"cuda, but this torch ({torch.__version__}) sees "
                          "no CUDA device: install a CUDA build of torch on the GPU machine, "
                          "or drop the flag")
    # fp32 means fp32: cuDNN convolutions default to TF32, the encoders run HIGHEST.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
  common.print_header(f"torch {torch.__version__} ({args.torch_device}, {threads} threads)  "
                      f"batch: {args.batch}  image: {args.image}px  seq: {args.seq}  "
                      f"load average: {os.getloadavg()[0]:.1f}")
  rows, roofline = [], {}
  dtypes = list(args.dtypes)
  for name in args.models:
    _bench_model(name, args, dtypes, rows, roofline)
  print("\nmodel     dtype impl                         throughput         ratio")
  for r in rows:
    print(format_row(r))
  if args.gemm:
    peaks = _gemm_peak(dtypes, torch_device=args.torch_device)
    print(f"\nMatmul peak: best of {', '.join('x'.join(map(str, s)) for s in _PEAK_SHAPES)} "
          "(M x K x N), 8 in a loop into one reused output, best of 5:")
    for dt, (xla, tch) in peaks.items():
      print(f"  {dt}: XLA {xla:.0f} GFLOP/s, torch {tch:.0f} GFLOP/s -> XLA/torch {xla / tch:.2f}x")
    _print_roofline(roofline, peaks)
  print(f"load average at the end: {os.getloadavg()[0]:.1f} (on {len(os.sched_getaffinity(0))} cores)")
  return rows


if __name__ == "__main__":
  main()
