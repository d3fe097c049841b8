"""Peak host memory of loading a sharded decoder: one process x 8 CPU devices, and
2 processes x 4 devices (``jax.distributed``), against the checkpoint's size.

    python -m platonic_jax.benchmarks.decoder_memory [--gb=2] [--dir=/tmp/pj_mem_ckpt]
        [--modes=single,multi] [--keep]

Writes a random-weight Llama-architecture checkpoint of about ``--gb`` GB (float32, in
``model.safetensors.index.json`` shards of ~0.5 GB, written tensor by tensor so the
writer never holds the model), then loads it in fresh child processes with
``encoders.load(dir, model_parallel=8)`` and encodes two texts. Each child reports its
peak resident set (``ru_maxrss``, which counts the CPU devices' buffers too, as they
live in host memory) and its baseline after importing jax / transformers and creating
the devices ("runtime"). Targets (issue 14): one process below runtime + 1.2 x model
(no second full host copy: the devices hold 1 x model, reads are slice by slice), and
each of the two processes below runtime + 0.6 x model (each reads only its 4 devices'
half of every parameter).

Rows: ``(mode, process, model GB, runtime GB, peak GB, (peak - runtime) / model, target)``.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np

TARGETS = {"single": 1.2, "multi": 0.6}

CHILD = textwrap.dedent("""
    import json, os, resource, sys
    n_dev, pid, nproc, ckpt = sys.argv[1:5]
    port = os.environ["PJ_COORDINATOR_PORT"]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_dev}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import jax
    jax.config.update("jax_platforms", "cpu")
    if int(nproc) > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=int(nproc),
                                 process_id=int(pid))
    import jax.numpy as jnp
    from platonic_jax import encoders
    # The runtime: everything but the weights -- the same code path (imports, tokenizer,
    # compiled programs) run once on a tiny checkpoint of the same architecture.
    tiny = encoders.load(os.path.join(ckpt, "tiny"), model_parallel=jax.device_count())
    tiny.encode(["a dog runs across the grass", "a man"], batch_size=2)
    del tiny
    runtime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    enc = encoders.load(ckpt, model_parallel=jax.device_count())
    feats = enc.encode(["a dog runs across the grass", "a man"], batch_size=2)
    assert feats.shape == (2, enc.dim) and bool(jnp.isfinite(feats).all())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"runtime": runtime, "peak": peak}), flush=True)
    if int(nproc) > 1:
      jax.distributed.shutdown()
""")


def llama_config(gb: float) -> dict:
  """A Llama config of about ``gb`` GB in float32 (D 2048, 16 / 4 heads, MLP 5632, vocab
  32000; the layer count sets the size). ``gb=0``: a tiny one of the same architecture."""
  if gb == 0:
    d, i, vocab, heads, kv_heads, layers = 64, 128, 300, 4, 2, 1
  else:
    d, i, vocab, heads, kv_heads = 2048, 5632, 32000, 16, 4
    per_layer = d * (2 * d + 2 * d * kv_heads // heads) + 3 * d * i + 2 * d
    layers = max(1, round((gb * 1e9 / 4 - 2 * vocab * d) / per_layer))
  return dict(hidden_size=d, intermediate_size=i, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
              max_position_embeddings=2048, tie_word_embeddings=False,
              model_type="llama", architectures=["LlamaForCausalLM"], rms_norm_eps=1e-5,
              rope_theta=10000.0, hidden_act="silu", bos_token_id=1, eos_token_id=2)


def write_checkpoint(directory: str, gb: float, shard_bytes: float = 5e8,
                     tiny: bool = True) -> int:
  """A random Llama checkpoint + a BPE tokenizer in ``directory`` (and a tiny one of the
  same architecture in ``directory/tiny``, for the runtime baseline); returns its bytes."""
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  if tiny:
    write_checkpoint(os.path.join(directory, "tiny"), 0.0, tiny=False)
  cfg = llama_config(gb)
  d, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
  kv = cfg["num_key_value_heads"] * d // cfg["num_attention_heads"]
  shapes = {"model.embed_tokens.weight": (v, d), "lm_head.weight": (v, d),
            "model.norm.weight": (d,)}
  for layer in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{layer}"
    shapes.update({f"{p}.self_attn.q_proj.weight": (d, d), f"{p}.self_attn.k_proj.weight": (kv, d),
                   f"{p}.self_attn.v_proj.weight": (kv, d), f"{p}.self_attn.o_proj.weight": (d, d),
                   f"{p}.mlp.gate_proj.weight": (i, d), f"{p}.mlp.up_proj.weight": (i, d),
                   f"{p}.mlp.down_proj.weight": (d, i), f"{p}.input_layernorm.weight": (d,),
                   f"{p}.post_attention_layernorm.weight": (d,)})
  rng = np.random.default_rng(0)
  weight_map, shard, size, total, files = {}, {}, 0, 0, []

  def flush():
    nonlocal shard, size
    name = f"model-{len(files) + 1:05d}.safetensors"
    save_file(shard, os.path.join(directory, name))
    files.append(name)
    weight_map.update({k: name for k in shard})
    shard, size = {}, 0

  for name, shape in shapes.items():
    x = (np.ones(shape, np.float32) if name.endswith("norm.weight") else
         rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[-1] ** -0.5))
    shard[name] = x
    size += x.nbytes
    total += x.nbytes
    if size >= shard_bytes:
      flush()
  if shard:
    flush()
  with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(cfg, f)
  _tokenizer(directory)
  return total


def _tokenizer(directory: str) -> None:
  from tokenizers import ByteLevelBPETokenizer
  from transformers import PreTrainedTokenizerFast
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(["a dog runs across the grass", "a man rides a bicycle"] * 10,
                          vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                          show_progress=False)
  PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                          unk_token="<unk>").save_pretrained(directory)


def _children(n_dev: int, nproc: int, ckpt: str, timeout: float) -> list[dict]:
  from platonic_jax import local_cluster
  outs = local_cluster.run(CHILD, [[n_dev, i, nproc, ckpt] for i in range(nproc)], timeout,
                           code=True)
  results = []
  for out in outs:
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if not lines:
      raise RuntimeError(f"memory child printed no result:\n{out[-4000:]}")
    results.append(json.loads(lines[-1][len("RESULT "):]))
  return results


def run(gb: float = 2.0, directory: str = "/tmp/pj_mem_ckpt", modes=("single", "multi"),
        keep: bool = False, timeout: float = 1200, verbose: bool = True) -> list[tuple]:
  bad = [m for m in modes if m not in TARGETS]
  if bad or not modes:
    raise ValueError(f"modes must be a non-empty subset of {tuple(TARGETS)}, got {tuple(modes)}")
  if not gb > 0:
    raise ValueError(f"--gb must be positive, got {gb}")
  model = write_checkpoint(directory, gb)
  rows = []
  try:
    for mode in modes:
      res = _children(8, 1, directory, timeout) if mode == "single" else _children(
          4, 2, directory, timeout)
      for i, r in enumerate(res):
        share = (r["peak"] - r["runtime"]) / model
        rows.append((mode, i, model / 1e9, r["runtime"] / 1e9, r["peak"] / 1e9, share,
                     TARGETS[mode]))
        if verbose:
          print(format_row(rows[-1]), flush=True)
  finally:
    if not keep:
      import shutil
      shutil.rmtree(directory, ignore_errors=True)
  return rows


def format_row(r: tuple) -> str:
  mode, proc, model, runtime, peak, share, target = r
  verdict = "ok" if share < target else "OVER"
  return (f"{mode:6s} process {proc}  model {model:5.2f} GB  runtime {runtime:5.2f} GB  "
          f"peak {peak:5.2f} GB  (peak - runtime) / model {share:4.2f}  target < {target:.1f}  "
          f"{verdict}")


def main(argv=None):
  from platonic_jax.benchmarks import common
  p = common.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--gb", type=float, default=2.0)
  p.add_argument("--dir", default="/tmp/pj_mem_ckpt")
  p.add_argument("--modes", type=common.choices(TARGETS), default=tuple(TARGETS),
                 help=f"comma list of {', '.join(TARGETS)}")
  p.add_argument("--keep", action="store_true", help="keep the checkpoint directory")
  a = p.parse_args(sys.argv[1:] if argv is None else argv)
  if not a.gb > 0:
    p.error(f"argument --gb: must be positive, got {a.gb}")
  # The header's jax runs in this (parent) process only; the children start their own.
  common.print_header(f"checkpoint {a.gb} GB in {a.dir}; modes {', '.join(a.modes)}")
  return run(a.gb, a.dir, a.modes, a.keep)


if __name__ == "__main__":
  main()
