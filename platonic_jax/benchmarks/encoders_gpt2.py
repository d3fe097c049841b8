"""GPT-2 (124M) throughput: platonic_jax (jit) vs transformers PyTorch, same inputs, one run.

    python -m platonic_jax.benchmarks.encoders_gpt2 [--batch=16] [--seq=64] [--rounds=7]
        [--threads=N] [--dtypes=fp32,bf16] [--n_layer=12] [--single_thread]

``run(...)`` returns table rows ``(model, dtype, impl, tokens/s, "tok/s", ratio, note)``
(the row format of ``benchmarks/encoders.py``, which can call it). The model is built
from ``GPT2Config()`` (openai-community/gpt2's shape) with random weights -- no download;
the PyTorch weights go through the same ``gpt2.convert`` that loads checkpoints, and the
mean-pooled last-layer features of both are compared, so a run is also a full-size parity
check (relative error printed).

Tokens/s = batch x seq (every token real) / seconds per forward; tokenization excluded.
Timing: one warm-up call each, then ``rounds`` rounds that time every variant once in
turn; each rate is from the median call. Interleaving keeps the ratios fair on a shared
machine whose load changes during the run (the absolute numbers are not); each note says
how many cores the variant really used (CPU time / wall time).

Variants: PyTorch fp32 eager, PyTorch bf16 ``torch.autocast``; platonic_jax ``float32``
and ``bfloat16`` (bf16 operands, float32 accumulation, layer norm, softmax and outputs).
fp32 is compared with PyTorch fp32, bf16 with PyTorch bf16 autocast.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

from platonic_jax.benchmarks import common

DTYPES = ("fp32", "bf16")

# Relative error of the pooled features vs PyTorch fp32 above which run() raises.
_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


def _median_rate(times: list[float], per_call: int) -> float:
  return per_call / statistics.median(times)


def random_tokens(vocab: int, batch: int, seq: int):
  """``batch`` random sequences of ``seq`` real tokens: numpy int32 ids and mask, and
  the same as torch int64 tensors."""
  import numpy as np
  import torch
  ids = np.random.default_rng(0).integers(0, vocab, (batch, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  return ids, mask, torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))


def _jnp_dtype(dt: str):
  import jax.numpy as jnp
  return jnp.float32 if dt == "fp32" else jnp.bfloat16


def make_variants(dtypes, torch_call, jax_call) -> dict:
  """``{(dtype, "torch" | "platonic_jax"): call}`` in the timing order of the rounds."""
  variants: dict[tuple[str, str], Callable[[], object]] = {}
  for dt in dtypes:
    variants[(dt, "torch")] = torch_call(dt)
    variants[(dt, "platonic_jax")] = jax_call(dt)
  return variants


def _torch_call(model, ids, mask, autocast: bool) -> Callable[[], object]:
  import torch

  def call():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      return model(input_ids=ids, attention_mask=mask).last_hidden_state
  return call


def _jax_call(config, params, ids, mask, dtype) -> Callable[[], object]:
  import jax

  from platonic_jax.encoders import core, gpt2
  module = gpt2.build(config, dtype)
  params = jax.device_put(core._cast_kernels(params, dtype))  # as encoders.load does
  ids, mask = jax.device_put(ids), jax.device_put(mask)
  # Only the last layer's mean pool leaves the program; XLA drops the other pools.
  fn = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, pool="mean")[-1])
  return lambda: jax.block_until_ready(fn(params, ids, mask))


def run(batch: int = 16, seq: int = 64, rounds: int = 7, threads: int | None = None,
        dtypes: tuple[str, ...] = ("fp32", "bf16"), n_layer: int = 12,
        verbose: bool = True) -> list[tuple]:
  """Benchmarks GPT-2 forward throughput; returns rows (see module docstring).

  Args:
    batch, seq: the input is ``batch`` random sequences of ``seq`` tokens, all real.
    rounds: timed calls per variant (median taken); >= 3 recommended.
    threads: torch intra-op threads (default: ``os.cpu_count()``). JAX's CPU thread pool
      is fixed when jax starts and uses every core.
    dtypes: subset of ("fp32", "bf16").
    n_layer: 12 = GPT-2 124M; fewer for a quick smoke run.
  """
  import numpy as np
  import torch
  import transformers

  from platonic_jax.encoders import gpt2

  bad = [d for d in dtypes if d not in ("fp32", "bf16")]
  if bad or not dtypes:
    raise ValueError(f"dtypes must be a non-empty subset of ('fp32', 'bf16'), got {dtypes}")
  if batch < 1 or seq < 1 or rounds < 1:
    raise ValueError(f"batch, seq and rounds must be >= 1, got {batch}, {seq}, {rounds}")
  config = transformers.GPT2Config(n_layer=n_layer)
  if seq > config.n_positions:
    raise ValueError(f"seq={seq} exceeds GPT-2's {config.n_positions} positions")
  torch.set_num_threads(threads or os.cpu_count())
  torch.manual_seed(0)
  tmodel = transformers.GPT2Model(config).eval()
  params = gpt2.convert({k: v.detach().numpy() for k, v in tmodel.state_dict().items()}, config)
  ids, mask, tids, tmask = random_tokens(config.vocab_size, batch, seq)
  variants = make_variants(dtypes, lambda dt: _torch_call(tmodel, tids, tmask, dt == "bf16"),
                           lambda dt: _jax_call(config, params, ids, mask, _jnp_dtype(dt)))

  ref = variants[(dtypes[0], "torch")]() if dtypes[0] == "fp32" else None
  if ref is None:
    with torch.inference_mode():
      ref = tmodel(input_ids=tids, attention_mask=tmask).last_hidden_state
  ref = ref.float().mean(1).numpy()  # all tokens real: the masked mean is a plain mean

  notes = {}
  for key, call in variants.items():  # warm-up (compiles JAX), and the parity check
    t0 = time.perf_counter()
    out = call()
    first = time.perf_counter() - t0
    feats = (np.asarray(out) if key[1] == "platonic_jax" else out.float().mean(1).numpy())
    err = float(np.linalg.norm(feats - ref) / np.linalg.norm(ref))
    notes[key] = f"rel.err vs torch fp32 {err:.1e}; first call {first:.1f}s"
    if key[1] == "platonic_jax" and err > _TOLERANCE[key[0]]:
      # A fast wrong model is no result: fail loudly rather than print a ratio.
      raise RuntimeError(f"GPT-2 {key[0]} features differ from PyTorch fp32 by {err:.2e} "
                         f"(tolerance {_TOLERANCE[key[0]]:.0e}): a numerics regression")
  times: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
  cpu: dict[tuple[str, str], float] = {k: 0.0 for k in variants}
  for _ in range(rounds):
    for key, call in variants.items():
      t0, c0 = time.perf_counter(), time.process_time()
      call()
      times[key].append(time.perf_counter() - t0)
      cpu[key] += time.process_time() - c0
  for key in variants:  # CPU seconds per wall second: the cores a variant really used
    notes[key] += f"; cores used {cpu[key] / sum(times[key]):.1f}"

  per_call = batch * seq
  rows = []
  for dt in dtypes:
    base = _median_rate(times[(dt, "torch")], per_call)
    label = "torch fp32" if dt == "fp32" else "torch bf16 autocast"
    rows.append(("gpt2", dt, label, base, "tok/s", None, notes[(dt, "torch")]))
    rate = _median_rate(times[(dt, "platonic_jax")], per_call)
    rows.append(("gpt2", dt, "platonic_jax", rate, "tok/s", rate / base,
                 f"vs {label}; {notes[(dt, 'platonic_jax')]}"))
  if verbose:
    for r in rows:
      print(format_row(r), flush=True)
  return rows


def format_row(r: tuple) -> str:
  name, dt, impl, rate, unit, ratio, note = r
  ratio_s = f"{ratio:5.2f}x" if ratio is not None else "      "
  return f"{name:9s} {dt:5s} {impl:28s} {rate:10.1f} {unit:6s} {ratio_s} {note or ''}"


def add_single_thread_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--single_thread", action="store_true",
                      help="the process pinned to one core (1 torch thread, 1 XLA:CPU "
                           "thread): a fair comparison on a loaded machine, where "
                           "multi-threaded torch (OpenMP barriers) degrades far more than "
                           "XLA")


def apply_single_thread(args: argparse.Namespace) -> None:
  """For ``--single_thread``: the process on one core (before jax starts), torch 1 thread."""
  if args.single_thread:
    common.pin_one_core()
    args.threads = 1


def parse_timing_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """Adds ``--single_thread``, parses, applies it (before jax starts) and prints the
  devices, threads and versions a benchmark ran with. ``parser`` has ``--threads``,
  ``--batch`` and ``--seq``."""
  add_single_thread_flag(parser)
  a = parser.parse_args(sys.argv[1:] if argv is None else argv)
  for flag in ("batch", "seq", "rounds"):
    if getattr(a, flag, 1) < 1:
      parser.error(f"argument --{flag}: must be >= 1, got {getattr(a, flag)}")
  apply_single_thread(a)
  import torch
  common.print_header(f"torch {torch.__version__}  torch threads: {a.threads or os.cpu_count()}"
                      f"  batch: {a.batch}  seq: {a.seq}")
  return a


def main(argv=None) -> list[tuple]:
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cpu count)")
  p.add_argument("--dtypes", type=common.choices(DTYPES), default=DTYPES,
                 help=f"comma list of {', '.join(DTYPES)}")
  p.add_argument("--n_layer", type=int, default=12)
  a = parse_timing_args(p, argv)
  try:
    return run(a.batch, a.seq, a.rounds, a.threads or None, a.dtypes, a.n_layer)
  except ValueError as e:   # a value run() refuses (e.g. seq beyond GPT-2's positions)
    p.error(str(e))


if __name__ == "__main__":
  main()
