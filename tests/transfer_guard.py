"""``strict_transfers``: jax's transfer guard, plus implicit reads of CPU arrays.

XLA:CPU arrays are host memory, so ``jax.transfer_guard("disallow")`` does not stop an
implicit read of one; ``strict_transfers`` also refuses a jax array's host value
(``float(x)``, ``x.item()``, ``x.tolist()``, ...) in this thread outside
``jax.device_get`` -- what the guard does on GPUs / TPUs. (``np.asarray(x)`` reads a CPU
array through the buffer protocol, which no Python hook sees: those calls in the loops
were made ``jax.device_get`` by reading the code.) It patches jax internals
(``ArrayImpl._value``, the guard's thread-local ``explicit_device_get``), the same in
jax 0.10 and 0.12.
"""

from __future__ import annotations

import contextlib
import threading

import jax
from jax._src import array as array_lib
from jax._src.lib import guard_lib


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
