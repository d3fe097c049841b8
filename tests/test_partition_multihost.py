"""Sharded parameters across processes: 2 local processes x 4 CPU devices
(``jax.distributed`` with a loopback coordinator and gloo collectives, as
test_train_multihost.py), a tiny Llama loaded with model_parallel=8 (the model spans
both processes) and model_parallel=4 (data parallel across them); every process gets
the features and bits per byte of one process holding the whole model."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np

import hf_fixtures as fx
from platonic_jax import encoders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["a dog runs across the grass", "a man", "two children are playing with a red ball",
         "the pigeons sit on the roof", "people walk near the lake"]

CHILD = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import numpy as np
    port, pid, ckpt, out = sys.argv[1:]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    from platonic_jax import encoders
    from test_partition_multihost import TEXTS
    res = {}
    for mp in (8, 4):
      enc = encoders.load(ckpt, model_parallel=mp)
      shard = enc.params["layers_0"]["mlp"]["gate_proj"]["kernel"].addressable_shards
      assert len(shard) == 4 and shard[0].data.shape[1] == 48 // mp, shard[0].data.shape
      feats, bpb = enc.encode(TEXTS, batch_size=4, layers="all", bits_per_byte=True)
      res[f"feats{mp}"], res[f"bpb{mp}"] = feats, bpb
    np.savez(out, **res)
    jax.distributed.shutdown()
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_share_one_model(tmp_path):
  ckpt, _ = fx.tiny_decoder(str(tmp_path / "llama"), "llama")
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), ckpt,
                             str(tmp_path / f"out{i}.npz")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=300)[0])
    finally:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-5000:]
  want, want_bpb = encoders.load(ckpt, devices=jax.devices()[:1]).encode(
      TEXTS, batch_size=4, layers="all", bits_per_byte=True)
  for i in range(2):
    got = np.load(tmp_path / f"out{i}.npz")
    for mp in (8, 4):
      np.testing.assert_allclose(got[f"feats{mp}"], want, rtol=1e-5, atol=2e-6)
      np.testing.assert_allclose(got[f"bpb{mp}"], want_bpb, rtol=1e-5)
