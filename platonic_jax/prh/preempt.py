"""SIGTERM during the sweep: finish the chunk or pair in hand, save it, stop cleanly.

    with preempt.Stop() as stop:
      ...; stop.check("after chunk 3 of model X")   # raises Preempted once SIGTERM came

run.py turns ``Preempted`` into a warning and exit status 0 (a preemptible VM's normal
end); re-running the command resumes from what was saved.
"""

from __future__ import annotations

import signal
import threading


class Preempted(Exception):
  """The sweep stopped on SIGTERM after saving its last finished piece of work."""

  def __init__(self, where: str):
    super().__init__(f"preempted (SIGTERM) {where}; everything finished is saved: re-run the "
                     "same command to resume")


class Stop:
  """A SIGTERM handler that only raises a flag; ``check`` stops the sweep at a safe point.
  Outside the main thread (no signal handlers there) it never triggers."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handler(self, signum, frame):  # noqa: ARG002 - the signal module's signature
    self.requested = True

  def __enter__(self) -> "Stop":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def check(self, where: str) -> None:
    if self.requested:
      raise Preempted(where)
