"""``encoders.dtype = "auto"``: bf16 on GPUs / TPUs, fp32 on CPUs, keyed as resolved."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from helpers import load_config
from platonic_jax import errors, plan, validate
from platonic_jax.encoders import auto_dtype


@dataclasses.dataclass
class FakeDevice:
  platform: str


@pytest.mark.parametrize("platform,want", [("cpu", "float32"), ("gpu", "bfloat16"),
                                           ("tpu", "bfloat16")])
def test_auto_resolves_by_the_devices_platform(platform, want):
  assert auto_dtype.resolve("auto", [FakeDevice(platform)] * 2) == want
  # forced names and aliases never look at the devices
  assert auto_dtype.resolve("float32", [FakeDevice(platform)]) == "float32"
  assert auto_dtype.resolve("bf16", [FakeDevice(platform)]) == "bfloat16"


def test_auto_refuses_mixed_platforms_and_defaults_to_local_devices():
  with pytest.raises(ValueError, match="several platforms"):
    auto_dtype.resolve("auto", [FakeDevice("cpu"), FakeDevice("gpu")])
  assert auto_dtype.resolve("auto") == auto_dtype.for_platform(jax.local_devices()[0].platform)


def test_cpu_has_amx_reads_the_flags(tmp_path):
  amx = tmp_path / "amx"
  amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
  plain = tmp_path / "plain"
  plain.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
  assert auto_dtype.cpu_has_amx(str(amx)) and not auto_dtype.cpu_has_amx(str(plain))
  assert not auto_dtype.cpu_has_amx(str(tmp_path / "missing"))


def _flickr(dtype):
  c = load_config("flickr")
  c.data.manual_dir = "/data/flickr30k"
  c.encoders.dtype = dtype
  return c


def test_feature_keys_hold_the_resolved_dtype(monkeypatch):
  """On CPU "auto" keys as float32 (existing caches stay valid); where the devices are
  GPUs it keys as bfloat16, so a CPU fp32 entry is never served there."""
  assert "auto" == load_config("flickr").encoders.dtype   # the default
  auto, fp32, bf16 = (plan.build(_flickr(d)).keys for d in ("auto", "float32", "bfloat16"))
  features = [n for n in auto if n.startswith("features")]
  assert features
  assert {n: auto[n] for n in features} == {n: fp32[n] for n in features}
  assert all(bf16[n] != fp32[n] for n in features)
  monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [FakeDevice("gpu")])
  gpu = plan.build(_flickr("auto")).keys
  assert {n: gpu[n] for n in features} == {n: bf16[n] for n in features}


def test_config_validator_names_the_allowed_dtypes():
  c = _flickr("fp16")
  with pytest.raises(errors.ConfigError,
                     match=r"encoders.dtype='fp16': allowed \('auto', 'float32', 'bfloat16'\)"):
    validate.check(c)


def _load_dtype_log(caplog):
  """What ``load(dtype="auto")`` logs about the dtype (the load stops right after it)."""
  from platonic_jax.encoders import core
  caplog.clear()
  with caplog.at_level("INFO"), pytest.raises(ValueError, match="stop after the dtype"):
    core.load("unused", dtype="auto")
  return caplog.text


def test_auto_on_an_amx_cpu_follows_its_bf16_measurement(monkeypatch, caplog, tmp_path):
  """AMX + probing + bf16 dots measured >= BF16_MIN_SPEEDUP x fp32: "auto" is bf16,
  and load says why; slower bf16, probing off (the suite's default) or no AMX: fp32."""
  from platonic_jax.encoders import core, cpu_tuning
  monkeypatch.setattr(core, "resolve", lambda name: (_ for _ in ()).throw(
      ValueError("stop after the dtype")))
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda: True)
  monkeypatch.setattr(cpu_tuning, "bf16_speedup", lambda: 4.8)
  cpu = [FakeDevice("cpu")]
  # conftest: PLATONIC_JAX_CPU_TUNING=defaults -> CPUs stay float32
  assert auto_dtype.resolve("auto", cpu) == "float32"
  assert "is float32 on this AMX CPU" in _load_dtype_log(caplog)
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "probe")
  monkeypatch.setenv(cpu_tuning.ENV_CACHE_DIR, str(tmp_path))
  assert auto_dtype.resolve("auto", cpu) == "bfloat16"
  assert "is bfloat16 on this AMX CPU (bf16 dots measured faster" in _load_dtype_log(caplog)
  assert auto_dtype.resolve("float32", cpu) == "float32"   # forced names stay
  monkeypatch.setattr(cpu_tuning, "bf16_speedup", lambda: auto_dtype.BF16_MIN_SPEEDUP - 0.1)
  assert auto_dtype.resolve("auto", cpu) == "float32"
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda: False)
  monkeypatch.setattr(cpu_tuning, "bf16_speedup", lambda: 9.0)
  assert auto_dtype.resolve("auto", cpu) == "float32"
  assert "AMX" not in _load_dtype_log(caplog)


def test_the_bf16_measurement_is_real_and_cached_per_machine(monkeypatch, tmp_path):
  from platonic_jax.encoders import cpu_tuning
  monkeypatch.setenv(cpu_tuning.ENV_CACHE_DIR, str(tmp_path))
  fp32, bf16 = cpu_tuning.measure_bf16_speedup(runs=2)
  assert 0 < fp32 < 10 and 0 < bf16 < 10
  first = cpu_tuning.bf16_speedup()
  assert first > 0
  monkeypatch.setattr(cpu_tuning, "measure_bf16_speedup",
                      lambda runs=5: pytest.fail("measured again instead of the cache"))
  assert cpu_tuning.bf16_speedup() == first
