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


def test_load_says_when_auto_keeps_float32_on_an_amx_cpu(monkeypatch, caplog):
  """On an AMX CPU "auto" stays float32 and says so once (the option to try bf16)."""
  from platonic_jax.encoders import core
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda: True)
  monkeypatch.setattr(core, "resolve", lambda name: (_ for _ in ()).throw(
      ValueError("stop after the dtype")))
  with caplog.at_level("INFO"), pytest.raises(ValueError, match="stop after the dtype"):
    core.load("unused", dtype="auto")
  assert "keeps float32 on this AMX CPU" in caplog.text
  caplog.clear()
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda: False)
  with caplog.at_level("INFO"), pytest.raises(ValueError, match="stop after the dtype"):
    core.load("unused", dtype="auto")
  assert "AMX" not in caplog.text
