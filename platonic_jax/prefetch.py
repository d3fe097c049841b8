"""Runs an iterator a few items ahead in a background thread (host work off the loop).

    for batch in prefetch.ahead(make_batches(), size=2):   # same items, same order
        ...

Feature extraction uses it so that decoding, preprocessing and the explicit
``jax.device_put`` of the next batches (``flax.jax_utils.prefetch_to_device``'s idea,
without its pmap layout) run while the device computes the current one; the loop then
only dispatches and collects. XLA, PIL and numpy release the GIL in their heavy parts,
so one thread is enough to overlap them.

An exception of the producer is raised in the consumer at the item where it occurred;
closing the generator (``break``, garbage collection) stops the producer after at most
``size`` more items.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Raised:
  def __init__(self, error: BaseException):
    self.error = error


def ahead(items: Iterable[T], size: int = 2) -> Iterator[T]:
  """The items of ``items`` in order, produced up to ``size`` ahead in a thread."""
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}")
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(x) -> bool:
    while not stop.is_set():
      try:
        q.put(x, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for x in items:
        if not put(x):
          return
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
      put(_Raised(e))
      return
    put(_DONE)

  thread = threading.Thread(target=produce, name="prefetch", daemon=True)
  thread.start()
  try:
    while True:
      x = q.get()
      if x is _DONE:
        return
      if isinstance(x, _Raised):
        raise x.error
      yield x
  finally:
    stop.set()
    thread.join()
