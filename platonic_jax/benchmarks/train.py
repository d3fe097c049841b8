"""Throughput of contrastive adapter training on cached features (pairs per second).

    python -m platonic_jax.benchmarks.train                          # B = 1024, 8192
    python -m platonic_jax.benchmarks.train --batch_sizes=256 --steps=5   # quick

d_x = 512, d_y = 768, d_e = 512 (linear adapters, CLIP loss), on every available device.
Per global batch size B it reports
- ``step``: the jitted ``train_step`` alone (batches already on device), pairs/s;
- ``loop``: ``train_adapters``' feeding path + step (host gather of the rows, transfer,
  step), pairs/s, i.e. what training on a feature cache actually sustains;
- the step's FLOP rate next to this machine's fp32 matmul rate measured in the same run
  (a jitted [B, 512] x [512, 512]-sized matmul chain), so numbers from a noisy shared
  machine can be compared as ratios.
Target (issue 5): >= 100k pairs/s, so that training is never the bottleneck.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from platonic_jax import adapters, sharding, train

DX, DY, DE = 512, 768, 512
TARGET = 100_000


def _config(batch_size: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.modalities = ml_collections.ConfigDict(dict(image=dict(encoder=""), text=dict(encoder="")))
  c.adapter = ml_collections.ConfigDict(dict(kind="linear", dim=DE, bias=False,
                                             mlp_hidden=1024, dropout=0.0))
  c.loss = ml_collections.ConfigDict(dict(name="clip", tau=0.07, learn_tau=True,
                                          tau_min=0.01, pairs="all", anchor="image",
                                          siglip_bias=-10.0))
  c.train = ml_collections.ConfigDict(dict(num_steps=1000, batch_size=batch_size, lr=1e-3,
                                           warmup_steps=10, weight_decay=1e-4,
                                           grad_clip=1.0))
  return c


def _step_flops(b: int) -> float:
  """Matmul FLOPs of one step: per adapter x @ W and its weight gradient (no gradient
  for the frozen features), the one [B, E] x [E, B] logit matrix and its 2 gradients."""
  adapters_ = 2 * 2 * b * (DX + DY) * DE
  logits = 3 * 2 * b * b * DE
  return adapters_ + logits


def _time(fn, steps: int) -> float:
  fn()  # compile / warm up
  fn()
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps


def _matmul_rate(b: int) -> float:
  """fp32 FLOP/s of a jitted chain of [B, 512] x [512, 512] matmuls on this machine."""
  x = jnp.ones((b, DE), jnp.float32) / DE
  w = jnp.eye(DE, dtype=jnp.float32)
  f = jax.jit(lambda x, w: functools.reduce(lambda h, _: h @ w, range(8), x))
  dt = _time(lambda: f(x, w), 5)
  return 8 * 2 * b * DE * DE / dt


def bench(batch_size: int, steps: int) -> dict:
  config = _config(batch_size)
  mesh = sharding.data_mesh()
  n = 4 * batch_size
  rng = np.random.default_rng(0)
  feats = {"image": rng.standard_normal((n, DX), dtype=np.float32),
           "text": rng.standard_normal((n, DY), dtype=np.float32)}
  model = adapters.from_config(config)
  tx, _ = train.make_optimizer(config.train)
  state = jax.jit(functools.partial(train.init_state, model, config, {"image": DX, "text": DY},
                                    tx), out_shardings=sharding.replicated(mesh))()
  step_fn = train.make_step_fn(model, config.loss, tx)
  batches = train._Batches(feats, batch_size, config.seed, mesh)
  on_device = [batches.get(s) for s in range(4)]
  box = {"state": state, "i": 0}

  def step_only():
    box["state"], m = step_fn(box["state"], on_device[box["i"] % 4])
    box["i"] += 1
    return m["loss"]

  def loop():
    box["state"], m = step_fn(box["state"], batches.get(box["i"]))
    box["i"] += 1
    return m["loss"]

  with jax.set_mesh(mesh):
    dt_step = _time(step_only, steps)
    dt_loop = _time(loop, steps)
  batches.close()
  rate = _matmul_rate(batch_size)
  flops = _step_flops(batch_size)
  return {
      "batch_size": batch_size, "devices": jax.device_count(),
      "step_pairs_per_s": batch_size / dt_step, "loop_pairs_per_s": batch_size / dt_loop,
      "step_ms": 1e3 * dt_step, "step_gflops": flops / dt_step / 1e9,
      "matmul_gflops": rate / 1e9, "step_vs_matmul": flops / dt_step / rate,
      "vs_target": batch_size / dt_step / TARGET,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch_sizes", default="1024,8192")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--json", default="", help="also write the results to this file")
  args = p.parse_args(argv)
  print(f"devices: {jax.devices()}  d_x={DX} d_y={DY} d_e={DE}  target {TARGET:,} pairs/s")
  results = []
  for b in (int(s) for s in args.batch_sizes.split(",")):
    r = bench(b, args.steps)
    results.append(r)
    print(f"B={b:6d}  step {r['step_pairs_per_s']:10,.0f} pairs/s ({r['step_ms']:.1f} ms, "
          f"{r['vs_target']:.2f}x target)  loop {r['loop_pairs_per_s']:10,.0f} pairs/s  "
          f"step {r['step_gflops']:.0f} GFLOP/s = {r['step_vs_matmul']:.2f}x the "
          f"{r['matmul_gflops']:.0f} GFLOP/s fp32 matmul rate", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
