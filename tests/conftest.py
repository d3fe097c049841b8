"""Test-wide setup: 8 fake CPU devices, no network, no CPU-variant probes.

Both must be set before jax / huggingface_hub are imported anywhere, which is why they
live at the top of conftest (pytest imports it first).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite loads hundreds of tiny models: probing each one's CPU variants
# (encoders/cpu_tuning.py) would add minutes and write the user's cache. The defaults
# run everywhere here; tests/test_cpu_tuning.py tests the probe itself.
os.environ["PLATONIC_JAX_CPU_TUNING"] = "defaults"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", "cpu")


@pytest.fixture(scope="session")
def num_devices() -> int:
  n = jax.device_count()
  assert n == 8, f"expected 8 fake CPU devices, got {n}: XLA_FLAGS was set too late"
  return n
