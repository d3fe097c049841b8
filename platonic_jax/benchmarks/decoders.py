"""Decoder LM throughput: platonic_jax (jit) vs transformers PyTorch eager, same inputs, one run.

    python -m platonic_jax.benchmarks.decoders [--sizes=125m,1b] [--dtypes=fp32,bf16]
        [--batch=8] [--seq=64] [--rounds=5] [--threads=N] [--single_thread]

Llama-architecture models with random weights built from ``LlamaConfig`` (no download):
``125m`` (D 768, 12 layers, 12 heads / 4 kv heads, MLP 2048, vocab 32000, untied head:
0.12 B parameters) and ``1b`` (D 2048, 22 layers, 32 / 8 heads, MLP 5632, vocab 32000:
TinyLlama-1.1B's shape, 1.1 B). The PyTorch weights go through ``decoder.convert`` (the
loader's converter); the features of the last layer (mean pool) and the bits per byte
of both are compared before timing, so a run is also a full-size parity check.

Timed: one forward pass producing every hidden state's mean pool and the next-token
losses (what ``encode(..., layers="all", bits_per_byte=True)`` runs), PyTorch:
``LlamaForCausalLM(output_hidden_states=True)`` (eager attention, bf16 via
``torch.autocast``). Tokens/s = batch x seq / median seconds per call, the variants
timed in interleaved rounds so both see the same background load. Rows:
``(model, dtype, impl, tokens/s, "tok/s", ratio, note)`` (``encoders_gpt2.format_row``).
"""

from __future__ import annotations

import os
import time
from typing import Callable

from platonic_jax.benchmarks import common
from platonic_jax.benchmarks.encoders_gpt2 import (_jnp_dtype, _median_rate, format_row,
                                                   make_variants, parse_timing_args,
                                                   random_tokens)

SIZES = {
    "125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, intermediate_size=2048),
    "1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=8, intermediate_size=5632),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128),   # smoke tests only
}
DTYPES = ("fp32", "bf16")
_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


def _config(size: str, vocab: int):
  import transformers
  cfg = transformers.LlamaConfig(vocab_size=vocab, max_position_embeddings=2048,
                                 **SIZES[size])
  cfg._attn_implementation = "eager"
  return cfg


def _torch_call(model, ids, mask, autocast: bool) -> Callable[[], tuple]:
  """One forward of ``model`` on the device of ``ids`` -> (last pool [B, D], nats [B]),
  both on the host (on CUDA the copy also waits for the kernels: the timing is whole)."""
  import torch
  device = ids.device.type

  def call():
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
      pooled = [h.float().mean(1) for h in out.hidden_states]   # every real token
      logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
      nats = -logp.gather(-1, ids[:, 1:, None])[..., 0].sum(1)
      return pooled[-1].cpu(), nats.cpu()
  return call


def _jax_call(config, params, ids, mask, dtype) -> Callable[[], tuple]:
  import jax

  from platonic_jax.encoders import core, decoder
  module = decoder.build(config, dtype)
  params = jax.device_put(core._cast_kernels(params, dtype))   # as encoders.load does
  ids, mask = jax.device_put(ids), jax.device_put(mask)

  def forward(p, i, m):
    feats, nats = module.apply({"params": p}, i, m, pool="avg", scores=True)
    return feats, nats   # every layer's pool leaves the program, as encode(layers="all")

  fn = jax.jit(forward)

  def call():
    feats, nats = jax.block_until_ready(fn(params, ids, mask))
    return feats[-1], nats
  return call


def run(sizes=("125m", "1b"), dtypes=DTYPES, batch: int = 8, seq: int = 64, rounds: int = 5,
        threads: int | None = None, vocab: int = 32000, verbose: bool = True,
        torch_device: str = "cpu") -> list[tuple]:
  """Benchmarks each size x dtype; returns rows (module docstring). ``torch_device``:
  where PyTorch runs ("cuda" on a GPU machine; JAX runs on its default backend)."""
  import jax
  import numpy as np
  import torch
  import transformers

  from platonic_jax.encoders import decoder

  bad = [s for s in sizes if s not in SIZES]
  if bad or not sizes:
    raise ValueError(f"sizes must be a non-empty subset of {tuple(SIZES)}, got {tuple(sizes)}")
  bad = [d for d in dtypes if d not in DTYPES]
  if bad or not dtypes:
    raise ValueError(f"dtypes must be a non-empty subset of {DTYPES}, got {tuple(dtypes)}")
  if batch < 1 or seq < 2 or rounds < 1:
    raise ValueError(f"need batch >= 1, seq >= 2, rounds >= 1; got {batch}, {seq}, {rounds}")
  torch.set_num_threads(threads or os.cpu_count())
  rows = []
  for size in sizes:
    cfg = _config(size, vocab)
    torch.manual_seed(0)
    tmodel = transformers.LlamaForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in tmodel.parameters())
    # .numpy() shares torch's storage and convert returns lazy transposed views: the
    # only copies are the JAX device arrays (peak: torch's model + one per JAX dtype).
    params = decoder.convert({k: v.detach().numpy() for k, v in tmodel.state_dict().items()}, cfg)
    ids, mask, tids, tmask = random_tokens(cfg.vocab_size, batch, seq)
    if torch_device != "cpu":
      # convert's numpy views keep torch's CPU storage alive after the move, so JAX's
      # device_put below still reads the same weights (host copy + one on each device).
      tmodel, tids, tmask = tmodel.to(torch_device), tids.to(torch_device), tmask.to(torch_device)
    variants = make_variants(
        dtypes, lambda dt: _torch_call(tmodel, tids, tmask, dt == "bf16"),
        lambda dt: _jax_call(cfg, params, ids, mask, _jnp_dtype(dt)))
    ref_feats, ref_nats = _torch_call(tmodel, tids, tmask, False)()
    ref_feats, ref_nats = ref_feats.numpy(), ref_nats.numpy()
    notes = {}
    for key, call in variants.items():   # warm-up (compiles JAX) and the parity check
      t0 = time.perf_counter()
      feats, nats = call()
      first = time.perf_counter() - t0
      feats, nats = np.asarray(feats, np.float32), np.asarray(nats, np.float32)
      err = float(np.linalg.norm(feats - ref_feats) / np.linalg.norm(ref_feats))
      nerr = float(np.max(np.abs(nats - ref_nats) / np.abs(ref_nats)))
      notes[key] = f"rel.err vs torch fp32 {err:.1e} (nats {nerr:.1e}); first call {first:.1f}s"
      if key[1] == "platonic_jax" and max(err, nerr) > _TOLERANCE[key[0]]:
        raise RuntimeError(f"llama-{size} {key[0]}: platonic_jax differs from PyTorch fp32 by "
                           f"{max(err, nerr):.2e} (tolerance {_TOLERANCE[key[0]]:.0e})")
    times = {k: [] for k in variants}
    for _ in range(rounds):
      for key, call in variants.items():
        t0 = time.perf_counter()
        call()
        times[key].append(time.perf_counter() - t0)
    per_call = batch * seq
    name = f"llama-{size}"
    for dt in dtypes:
      base = _median_rate(times[(dt, "torch")], per_call)
      label = "torch eager fp32" if dt == "fp32" else "torch eager bf16 autocast"
      rows.append((name, dt, label, base, "tok/s", None,
                   f"{n_params / 1e9:.2f}B params; {notes[(dt, 'torch')]}"))
      rate = _median_rate(times[(dt, "platonic_jax")], per_call)
      rows.append((name, dt, "platonic_jax", rate, "tok/s", rate / base,
                   f"vs {label}; {notes[(dt, 'platonic_jax')]}"))
      if verbose:
        print(format_row(rows[-2]), flush=True)
        print(format_row(rows[-1]), flush=True)
    del tmodel, params, variants
  return rows


def main(argv=None) -> list[tuple]:
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=common.choices(SIZES), default=("125m", "1b"),
                 help=f"comma list of {', '.join(SIZES)}")
  p.add_argument("--dtypes", type=common.choices(DTYPES), default=DTYPES,
                 help=f"comma list of {', '.join(DTYPES)}")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cpu count)")
  a = parse_timing_args(p, argv)
  try:
    return run(a.sizes, a.dtypes, a.batch, a.seq, a.rounds, a.threads or None)
  except ValueError as e:   # a value run() refuses (seq < 2): one line, not a traceback
    p.error(str(e))


if __name__ == "__main__":
  main()
