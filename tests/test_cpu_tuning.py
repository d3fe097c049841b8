"""encoders/cpu_tuning.py: the CPU-only encoder knobs chosen by a probe, cached per CPU."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_fixtures
from platonic_jax import encoders
from platonic_jax.encoders import auto_dtype, cpu_tuning, dinov2, gpt2, resnet


@pytest.fixture
def probing(monkeypatch, tmp_path):
  """Probe mode (conftest sets "defaults" for the rest of the suite), a fresh cache."""
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "probe")
  monkeypatch.setenv(cpu_tuning.ENV_CACHE_DIR, str(tmp_path / "cache"))
  return tmp_path / "cache" / "cpu_tuning.json"


def _resnet(dtype):
  return resnet.ResNet(8, (8,), (1,), False, False, False, "relu", dtype)


def test_candidates_are_the_knobs_each_architecture_has(monkeypatch):
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda *a: False)
  res = cpu_tuning.candidates(resnet, _resnet(jnp.float32))   # Winograd, micro, YNNPACK
  assert len(res) == 8 and res[0] == cpu_tuning.defaults(resnet, _resnet(jnp.float32))
  assert res[0].knobs() == (True, False, True) and res[-1].knobs() == (False, False, False)
  assert len({c.knobs() for c in res}) == 8
  # bf16 on an AMX CPU: the convolutions as dots, in micro-batches, without YNNPACK
  monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda *a: True)
  assert cpu_tuning.candidates(resnet, _resnet(jnp.bfloat16))[0].knobs() == (True, True, False)
  assert cpu_tuning.candidates(resnet, _resnet(jnp.float32))[0].knobs() == (True, False, True)
  vit = cpu_tuning.candidates(dinov2, None)   # grouped attention, micro-batches; no options
  assert [c.knobs() for c in vit] == [(True, True, False), (True, False, False),
                                      (False, True, False), (False, False, False)]
  assert [c.label() for c in cpu_tuning.candidates(gpt2, None)] == ["micro_batch", "none"]


def test_resnet_cpu_variant_is_winograd_or_on_amx_in_bf16_the_conv_dots(monkeypatch):
  params = _resnet(jnp.float32).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  for amx in (False, True):
    monkeypatch.setattr(auto_dtype, "cpu_has_amx", lambda *a, amx=amx: amx)
    fp32, _ = resnet.cpu_variant(_resnet(jnp.float32), params)
    bf16, bf16_params = resnet.cpu_variant(_resnet(jnp.bfloat16), params)
    assert fp32.winograd_min_channels == resnet.WINOGRAD_MIN_CHANNELS and not fp32.conv_as_dots
    assert bf16.conv_as_dots == amx and (bf16.winograd_min_channels == 0) == amx
    if amx:
      assert bf16_params is params   # the dots read the HWIO kernels as they are


def test_pick_keeps_the_defaults_unless_another_is_clearly_faster():
  a, b, c = cpu_tuning.candidates(dinov2, None)[:3]
  assert cpu_tuning.pick({a: 1.0, b: 0.97, c: 0.99}) == a     # 3% is noise
  assert cpu_tuning.pick({a: 1.0, b: 0.90, c: 0.80}) == c


def test_the_probe_times_every_candidate_once_and_the_cache_answers_after(probing, caplog):
  cands = cpu_tuning.candidates(dinov2, None)
  calls = []

  def time_one(c):
    calls.append(c)
    return 0.5 if c.label() == "micro_batch" else 1.0   # grouped attention loses here

  with caplog.at_level(logging.INFO, logger=cpu_tuning.__name__):
    first = cpu_tuning.choose_by_probe("machine|model", cands, time_one, "tiny")
  assert first.label() == "micro_batch" and first.source == "probe"
  assert sorted(calls, key=str) == sorted(cands, key=str)
  assert "chosen by a" in caplog.text and "micro_batch 500.0" in caplog.text
  stored = json.loads(probing.read_text())["machine|model"]
  assert stored["choice"] == {"variant": False, "micro_batch": True, "compiler_options": False}
  again = cpu_tuning.choose_by_probe("machine|model", cands, time_one, "tiny")
  assert again.knobs() == first.knobs() and again.source == "cache" and len(calls) == 4
  # another key (another CPU model, model shape or dtype) is probed on its own
  cpu_tuning.choose_by_probe("other|model", cands, time_one, "tiny")
  assert len(calls) == 8 and set(json.loads(probing.read_text())) == {"machine|model",
                                                                     "other|model"}


def test_a_broken_cache_is_reported_and_rewritten(probing, caplog):
  probing.parent.mkdir(parents=True)
  probing.write_text("{not json")
  cands = cpu_tuning.candidates(gpt2, None)
  with caplog.at_level(logging.WARNING, logger=cpu_tuning.__name__):
    got = cpu_tuning.choose_by_probe("k", cands, lambda c: 1.0, "tiny")
  assert got.source == "probe" and "unreadable" in caplog.text
  assert json.loads(probing.read_text())["k"]["choice"]["micro_batch"] is True


def test_an_unwritable_cache_costs_a_warning_not_the_load(monkeypatch, tmp_path, caplog):
  blocker = tmp_path / "file"
  blocker.write_text("")
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "probe")
  monkeypatch.setenv(cpu_tuning.ENV_CACHE_DIR, str(blocker / "sub"))  # under a file
  with caplog.at_level(logging.WARNING, logger=cpu_tuning.__name__):
    got = cpu_tuning.choose_by_probe("k", cpu_tuning.candidates(gpt2, None), lambda c: 1.0, "x")
  assert got.source == "probe" and "cannot write" in caplog.text


def test_a_bad_mode_names_the_allowed_values(monkeypatch):
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "fast")
  with pytest.raises(ValueError, match=r"PLATONIC_JAX_CPU_TUNING='fast'.*'probe', 'defaults'"):
    cpu_tuning.mode()


@pytest.mark.parametrize("build", [hf_fixtures.tiny_resnet, hf_fixtures.tiny_dinov2])
def test_a_real_probe_chooses_caches_and_applies_a_choice(build, probing, tmp_path,
                                                          monkeypatch):
  """Load -> probe of every candidate (real compiles and timings) -> cached; what is
  chosen is what runs, and every choice gives the defaults' features."""
  directory, _ = build(str(tmp_path / "model"))
  images = hf_fixtures.random_images(5)
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "defaults")
  plain = encoders.load(directory)
  want = plain.encode(images, batch_size=8, layers="all")
  assert plain.cpu_choice == cpu_tuning.defaults(plain.arch, plain.module, plain.cpu_choice.reason)
  monkeypatch.setenv(cpu_tuning.ENV_MODE, "probe")

  probed = encoders.load(directory)
  assert probed.cpu_choice.source == "probe"
  times = dict(probed.cpu_choice.times_ms)
  assert set(times) == {c.label() for c in cpu_tuning.candidates(probed.arch, probed.module)}
  assert all(np.isfinite(t) and t > 0 for t in times.values())
  assert encoders.load(directory).cpu_choice.source == "cache"

  # Force the choice with every knob off: the module and the step run without them.
  none = cpu_tuning.candidates(probed.arch, probed.module)[-1]
  monkeypatch.setattr(cpu_tuning, "pick", lambda times, margin=0: none)
  probing.unlink()
  bare = encoders.load(directory)
  assert bare.cpu_choice.knobs() == (False, False, False)
  if build is hf_fixtures.tiny_resnet:
    assert bare.module.winograd_min_channels == 0 and plain.module.winograd_min_channels > 0
  else:
    assert bare.module.attention_group != plain.module.attention_group
  for got in (probed.encode(images, batch_size=8, layers="all"),
              bare.encode(images, batch_size=8, layers="all")):
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_models_too_large_to_probe_keep_the_defaults(probing, tmp_path, monkeypatch):
  directory, _ = hf_fixtures.tiny_dinov2(str(tmp_path / "model"))
  monkeypatch.setattr(cpu_tuning, "PROBE_MAX_PARAMS", 10)
  enc = encoders.load(directory)
  assert enc.cpu_choice.source == "defaults" and "too large" in enc.cpu_choice.reason
  assert not probing.exists()
