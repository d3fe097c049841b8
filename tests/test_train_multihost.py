"""Multi-host for real: 2 local processes, jax.distributed.initialize with a loopback
coordinator and gloo CPU collectives, each feeding its own shard of every global batch,
end with the parameters of one process training on the whole batch."""

import os
import textwrap

import numpy as np

from helpers import ROOT
from platonic_jax import local_cluster
from test_train import paired_features, small_config, train_adapters

CHILD = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import numpy as np
    from platonic_jax import runtime
    from test_train import paired_features, small_config, train_adapters

    pid, workdir, out = sys.argv[1:]
    port = os.environ["PJ_COORDINATOR_PORT"]
    config = small_config()
    config.distributed.update(dict(multihost=True, coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=2, process_id=int(pid)))
    runtime.initialize_distributed(config.distributed)  # what run.py does at the entry
    res = train_adapters(config, paired_features(), workdir)
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    flat = {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in
            jax.tree_util.tree_flatten_with_path(res.params)[0]}
    np.savez(out, losses=np.array([h["loss"] for h in res.history]), **flat)
    jax.distributed.shutdown()
""")


def test_two_processes_match_one(tmp_path):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  local_cluster.run(str(script), [[str(i), str(tmp_path / "work"), str(tmp_path / f"out{i}.npz")]
                                  for i in range(2)], extra_path=[os.path.join(ROOT, "tests")])

  single = train_adapters(small_config(), paired_features(), str(tmp_path / "single"))
  import jax
  want = {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in
          jax.tree_util.tree_flatten_with_path(single.params)[0]}
  for i in range(2):
    got = np.load(tmp_path / f"out{i}.npz")
    np.testing.assert_allclose(got["losses"], [h["loss"] for h in single.history], rtol=1e-5)
    assert set(got.files) - {"losses"} == set(want)
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
