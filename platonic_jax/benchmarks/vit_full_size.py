"""Full-size ViTs (random weights) in fp32 and bf16 against timm's PyTorch forward.

    python -m platonic_jax.benchmarks.vit_full_size \\
        [--models=vit_huge_patch14_clip_224.laion2b,vit_giant_patch14_dinov2.lvd142m]
        [--model_parallel=1] [--depth=0]

For each timm id: timm builds the model at full size (LayerScale gammas set to 0.5, so
the blocks are not muted by timm's 1e-5 init), its weights go through the same
``timm_format.convert`` that loads checkpoints, and one image at the id's input size
runs through both; printed: parameters, relative error of the last block's class token
vs timm fp32, the first call's seconds (compile + run), the next call's seconds, and the
process's peak RSS. Shows that the big models of the study (ViT-H/14 632M, ViT-g/14
1.1B) run in both dtypes on a CPU host; ``--model_parallel=N`` shards them over N
devices (``encoders/partition.py``). ``--depth`` overrides the block count (smoke tests).
"""

from __future__ import annotations

import gc
import resource
import sys
import time

DEFAULT = "vit_huge_patch14_clip_224.laion2b,vit_giant_patch14_dinov2.lvd142m"


def run(model_id: str, model_parallel: int = 1, depth: int = 0) -> list[dict]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from platonic_jax.benchmarks import torchvision_standin
  from platonic_jax.encoders import core, partition, timm_format
  timm = torchvision_standin.import_timm()[0]
  kw = {"depth": depth} if depth else {}
  model = timm.create_model(model_id, pretrained=False, **kw).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("gamma"):
        p.fill_(0.5)
  cfg = timm_format.config_from_dict({"architecture": model_id.split(".")[0],
                                      "model_args": kw,
                                      "pretrained_cfg": dict(model.pretrained_cfg)})
  params = timm_format.convert({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
  n_params = sum(p.numel() for p in model.parameters())
  h, w = cfg.spec.image_size
  x = np.random.default_rng(0).normal(size=(1, h, w, 3)).astype(np.float32)
  out = []
  hook = model.blocks[-1].register_forward_hook(lambda m, i, o: out.append(o))
  with torch.no_grad():
    model.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  hook.remove()
  ref = out[0][:, 0].double().numpy()
  del model, out
  gc.collect()
  rows = []
  mesh = partition.model_mesh(jax.devices()[:model_parallel], model_parallel)
  for dtype in (jnp.float32, jnp.bfloat16):
    enc = core.Encoder(model_id, cfg, timm_format, params, dtype, mesh)
    fn = enc._fn("", (enc.num_layers - 1,))
    times, feats = [], None
    for _ in range(2):
      t0 = time.perf_counter()
      feats = np.asarray(fn(enc.params, x)[0])
      times.append(time.perf_counter() - t0)
    rows.append(dict(model=model_id, params_b=n_params / 1e9, size=(h, w),
                     dtype=jnp.dtype(dtype).name, model_parallel=model_parallel,
                     rel_err=float(np.linalg.norm(feats - ref) / np.linalg.norm(ref)),
                     first_s=times[0], next_s=times[1],
                     peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6))
    print("{model}: {params_b:.2f}B params, {size[0]}x{size[1]}, {dtype}, model_parallel "
          "{model_parallel}: rel.err vs timm fp32 {rel_err:.1e}, first call {first_s:.0f} s, "
          "next {next_s:.1f} s, peak RSS {peak_rss_gb:.1f} GB".format(**rows[-1]), flush=True)
    del enc
    gc.collect()
  return rows


def main(argv=None) -> list[dict]:
  from platonic_jax.benchmarks import common
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=DEFAULT, help="comma-separated timm ids")
  p.add_argument("--model_parallel", type=int, default=1)
  p.add_argument("--depth", type=int, default=0, help="override the block count (0: full)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  from platonic_jax.encoders import timm_format
  ids = [m.strip() for m in args.models.split(",") if m.strip()]
  bad = [m for m in ids if m.split(".")[0] not in timm_format.ARCHITECTURES]
  if bad or not ids:
    p.error(f"argument --models: not a supported timm ViT id: {', '.join(bad) or '(none)'}; "
            f"architectures: {', '.join(sorted(timm_format.ARCHITECTURES))}")
  if args.model_parallel < 1 or args.depth < 0:
    p.error("argument --model_parallel must be >= 1 and --depth >= 0")
  common.print_header(f"models: {', '.join(ids)}  model_parallel: {args.model_parallel}")
  rows = []
  for model_id in ids:
    rows += run(model_id, args.model_parallel, args.depth)
  return rows


if __name__ == "__main__":
  main()
