"""Nothing crosses between host and device implicitly in the hot loops: the encoders'
batch loop, feature extraction and adapter training run under
``jax.transfer_guard("disallow")`` (explicit ``jax.device_put`` / ``jax.device_get``
allowed), and batches are prepared ahead in a thread (``platonic_jax.prefetch``).

XLA:CPU arrays are host memory, so jax's guard does not stop an implicit read of one;
``strict_transfers`` therefore also refuses a jax array's host value (``float(x)``,
``x.item()``, ``x.tolist()``, ...) in this thread outside ``jax.device_get`` -- what the
guard does on GPUs / TPUs. (``np.asarray(x)`` reads a CPU array through the buffer
protocol, which no Python hook sees: those calls in the loops were made
``jax.device_get`` by reading the code.)
"""

from __future__ import annotations

import contextlib
import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import array as array_lib
from jax._src.lib import guard_lib

import hf_fixtures as fx
from platonic_jax import encoders, prefetch, train
from test_features import _extract, flickr_setup  # noqa: F401 - the fixture
from test_train import paired_features, small_config, train_adapters


@contextlib.contextmanager
def strict_transfers(monkeypatch):
  """``jax.transfer_guard("disallow")`` plus implicit device -> host reads refused on
  CPU too (this thread only: libraries' worker threads, e.g. Orbax's, are theirs).
  Yields ``setup``: a context where both are allowed again (loading an encoder)."""
  main = threading.get_ident()
  real = array_lib.ArrayImpl._value
  relaxed = []

  def guarded(self):
    if (threading.get_ident() == main and not relaxed
        and not guard_lib.thread_local_state().explicit_device_get):
      raise RuntimeError("implicit device-to-host transfer (a jax array's host value); "
                         "use jax.device_get")
    return real.fget(self)

  @contextlib.contextmanager
  def setup():
    relaxed.append(True)
    try:
      with jax.transfer_guard("allow"):
        yield
    finally:
      relaxed.pop()

  monkeypatch.setattr(array_lib.ArrayImpl, "_value", property(guarded))
  try:
    with jax.transfer_guard("disallow"):
      yield setup
  finally:
    monkeypatch.setattr(array_lib.ArrayImpl, "_value", real)


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


@pytest.mark.parametrize("kind", ["resnet", "gpt2", "dinov2"])
def test_encoder_loop_moves_nothing_implicitly(kind, tmp_path, monkeypatch):
  directory = str(tmp_path)
  if kind == "resnet":
    fx.tiny_resnet(directory)
  elif kind == "gpt2":
    fx.tiny_gpt2(directory)
  else:
    fx.tiny_dinov2(directory)
  items = (fx.random_images(5) if kind != "gpt2" else
           ["a dog", "two cats on a red mat", "x", "a long caption about the market", "y"])
  enc = encoders.load(directory)
  want = enc.encode(items, batch_size=2, layers="all")
  with strict_transfers(monkeypatch):
    got = enc.encode(items, batch_size=2, layers="all")   # 3 batches: prefetched
    if kind == "gpt2":
      enc.bits_per_byte(items, batch_size=2)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_feature_extraction_moves_nothing_implicitly(flickr_setup, tmp_path,  # noqa: F811
                                                     monkeypatch):
  """The extraction loop (decode, encode, save chunks); loading an encoder is set-up."""
  _, c = flickr_setup
  want = _extract(c, str(tmp_path / "a"))
  real_load = encoders.load
  with strict_transfers(monkeypatch) as setup:
    def load(*args, **kwargs):
      with setup():
        return real_load(*args, **kwargs)

    monkeypatch.setattr(encoders, "load", load)
    got = _extract(c, str(tmp_path / "b"))
  for s in want:
    for k in want[s].views:
      np.testing.assert_array_equal(got[s].views[k], want[s].views[k])


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
