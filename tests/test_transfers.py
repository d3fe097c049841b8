"""Nothing crosses between host and device implicitly in adapter training: the loop
(resume included) runs under ``transfer_guard.strict_transfers`` (jax's
``transfer_guard("disallow")`` plus implicit reads of CPU arrays), explicit
``jax.device_put`` / ``jax.device_get`` allowed; and ``platonic_jax.prefetch``, which
prepares the encoders' batches ahead in a thread. (Encoding and extraction:
tests/test_transfers_encoders.py.)
"""

from __future__ import annotations

import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from platonic_jax import prefetch
from test_train import paired_features, small_config, train_adapters
from transfer_guard import strict_transfers


def test_strict_transfers_catches_implicit_transfers_both_ways(monkeypatch):
  """The check itself can fail: each direction of an implicit transfer is caught."""
  x = jax.jit(lambda: jnp.arange(3.0))()
  with strict_transfers(monkeypatch):
    with pytest.raises(RuntimeError, match="implicit device-to-host"):
      float(jax.jit(jnp.sum)(x))
    with pytest.raises(RuntimeError, match="implicit device-to-host"):
      x.tolist()
    with pytest.raises(Exception, match="Disallowed host-to-device"):
      jax.jit(lambda a, b: a + b)(x, np.ones(3, np.float32))
    np.testing.assert_array_equal(jax.device_get(x), [0.0, 1.0, 2.0])   # explicit: fine
    jax.device_put(np.ones(3))


@pytest.mark.parametrize("learn_tau", [False, True])
def test_training_loop_moves_nothing_implicitly(learn_tau, tmp_path, monkeypatch):
  config = small_config(num_steps=8, log_every=4, ckpt_every=4)
  config.loss.learn_tau = learn_tau
  feats = paired_features()
  want = train_adapters(config, feats, str(tmp_path / "a"))
  with strict_transfers(monkeypatch):
    got = train_adapters(config, feats, str(tmp_path / "b"))
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "8")   # resume from step 4's checkpoint
    again = train_adapters(config, feats, str(tmp_path / "b"))
  assert [h["loss"] for h in got.history] == [h["loss"] for h in want.history]
  assert [h["lr"] for h in got.history] == [h["lr"] for h in want.history]
  assert [h["step"] for h in again.history] == [4, 8]
  assert again.history[-1]["loss"] == want.history[-1]["loss"]
  if learn_tau:
    assert all("tau" in h for h in got.history)


def test_prefetch_keeps_order_runs_ahead_and_raises_in_place():
  produced_second = threading.Event()

  def items():
    yield 0
    yield 1
    produced_second.set()
    yield 2
    raise ValueError("bad item 3")

  it = prefetch.ahead(items(), size=2)
  assert next(it) == 0
  # while the consumer holds item 0, the producer has already made the next ones
  assert produced_second.wait(5.0)
  assert [next(it), next(it)] == [1, 2]
  with pytest.raises(ValueError, match="bad item 3"):
    next(it)
  assert list(prefetch.ahead(iter(range(7)), size=1)) == list(range(7))
  with pytest.raises(ValueError, match="prefetch size must be >= 1"):
    next(prefetch.ahead([1], size=0))


def test_prefetch_stops_its_thread_when_closed():
  pulled = []

  def endless():
    i = 0
    while True:
      pulled.append(i)
      yield i
      i += 1

  it = prefetch.ahead(endless(), size=2)
  assert next(it) == 0
  it.close()
  n = len(pulled)
  assert n <= 4 and not any(t.name == "prefetch" and t.is_alive()
                            for t in threading.enumerate())
