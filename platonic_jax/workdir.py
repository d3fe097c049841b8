"""The workdir: atomic files with the process umask's mode, and one process at a time.

- ``atomic_write_bytes``: a reader (or a re-run after a kill) sees the old file or the
  complete new one, never a torn one; the file gets the mode ``open()`` would give it
  (0644 under the usual umask 022), not ``mkstemp``'s 0600, so colleagues on a shared
  machine can read reports and reuse feature caches.
- ``lock(workdir)``: an exclusive ``flock`` on ``<workdir>/.lock`` for the whole run. A
  second process exits at once naming the holder (pid, host, since when). The kernel
  drops the lock when its process dies, so a run killed with ``kill -9`` never blocks
  the next one. (``filelock`` would do the locking but cannot say who holds it.)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import tempfile
from typing import Iterator

from platonic_jax import errors

LOCK_FILE = ".lock"


def _umask() -> int:
  # os.umask can only be read by setting it; done once, at import, before any thread.
  mask = os.umask(0)
  os.umask(mask)
  return mask


_FILE_MODE = 0o666 & ~_umask()


def file_mode() -> int:
  """The permission bits a new file of this process gets (0o666 minus the umask)."""
  return _FILE_MODE


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (temporary file in the same directory, then
  ``os.replace``), with the umask's mode. Every stored artifact goes through here."""
  d = os.path.dirname(path) or "."
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path) + "-")
  try:
    with os.fdopen(fd, "wb") as f:
      os.fchmod(f.fileno(), _FILE_MODE)  # mkstemp makes 0600
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str, doc, *, indent: int | None = 1) -> None:
  """``doc`` as strict JSON (NaN / Inf refused), written atomically."""
  atomic_write_bytes(path, json.dumps(doc, indent=indent, allow_nan=False).encode())


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      info = json.load(f)
    return f"pid {info['pid']} on host {info['host']} since {info['since']}"
  except (OSError, ValueError, KeyError):
    return "another process (its details could not be read)"


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds ``<workdir>/.lock`` exclusively while the block runs.

  Raises ``errors.WorkdirBusy`` at once if another process holds it. Multi-host runs
  lock from process 0 only (the other processes write nothing of their own there).
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise errors.WorkdirBusy(
          f"workdir {workdir} is in use by {_holder(path)}. Wait for that run to finish "
          "(or stop it), or pass another --workdir.") from None
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the flock
