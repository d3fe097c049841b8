"""What every benchmark shares: the machine it ran on, and option errors as one line.

- ``machine()`` / ``header()``: the CPU model and its instruction-set extensions
  (``platonic_jax.host_cpu``: ``/proc/cpuinfo``, ``platform`` elsewhere), core count, and JAX's backend, device kind
  and count, printed at the top of every benchmark. Numbers from an AMD EPYC without AMX
  and an Intel Xeon with it, or from a CPU and a GPU, are different measurements and
  must never be compared as one: the header says which machine a table is from.
- ``ArgumentParser``: an ``argparse`` parser whose errors are one line
  (``prog: error: ...``, exit status 2) instead of the usage block, and the comma-list
  types ``choices`` / ``ints`` that name the allowed values. ``option_error`` raises the
  same for checks made after parsing.
- ``pin_one_core()``: ``--single_thread``'s one-core pinning, the same for torch and XLA.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

from platonic_jax.host_cpu import ISA_FLAGS, cpu_info, usable_cores  # noqa: F401 - re-exported


def machine() -> dict:
  """The machine a benchmark runs on: CPU (model, ISA, cores), JAX (version, backend,
  device kind and count) and the XLA_FLAGS in effect. Imports jax: call it after any
  flag that must be set before jax starts."""
  import jax
  cpu = cpu_info()
  devices = jax.devices()
  cores = usable_cores()
  return {"cpu_model": cpu["model"], "cpu_isa": cpu["isa"], "cpu_cores": cores,
          "python": platform.python_version(), "jax": jax.__version__,
          "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "device_count": len(devices), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def header(info: dict | None = None) -> str:
  """One line naming the machine (``machine()``), for the top of a benchmark's output."""
  m = machine() if info is None else info
  isa = " ".join(m["cpu_isa"]) or "(no ISA flags read)"
  return (f"machine: {m['cpu_model']} ({m['cpu_cores']} cores; {isa}) | jax {m['jax']} "
          f"backend {m['backend']}: {m['device_count']} x {m['device_kind']}"
          + (f" | XLA_FLAGS {m['xla_flags']!r}" if m["xla_flags"] else ""))


def print_header(extra: str = "") -> dict:
  """Prints ``header()`` (and ``extra`` on the next line); returns ``machine()``."""
  info = machine()
  print(header(info), flush=True)
  if extra:
    print(extra, flush=True)
  return info


def pin_one_core() -> int:
  """Pins this process (torch's and XLA:CPU's threads alike) to one core; returns it.

  Why affinity and not flags: jax >= 0.10's XLA:CPU (the thunk runtime) runs its own
  intra-op thread pool, which ``--xla_cpu_multi_thread_eigen=false`` no longer turns
  off -- measured here: a 2048² fp32 matmul ran at 178 GFLOP/s with that flag, 165
  without, 85 pinned to one core. XLA sizes its pools from the affinity mask, so
  pinning before jax starts is the one switch that gives both sides one thread."""
  if "jax" in sys.modules:
    raise RuntimeError("--single_thread must be applied before jax is imported "
                       "(XLA sizes its thread pools when it starts)")
  core = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {core})
  return core


class ArgumentParser(argparse.ArgumentParser):
  """``argparse.ArgumentParser`` whose errors are one line on stderr, exit status 2:
  ``prog: error: argument --dtypes: 'float32' is not one of fp32, bf16``."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def option_error(flag: str, message: str, prog: str | None = None):
  """Exits as ``ArgumentParser.error`` does, for a check made after parsing (e.g. a
  value allowed only with another option)."""
  prog = prog or os.path.basename(sys.argv[0])
  sys.stderr.write(f"{prog}: error: argument {flag}: {message}\n")
  raise SystemExit(2)


def choices(allowed, *, min_count: int = 1):
  """An argparse ``type``: a comma-separated subset of ``allowed`` -> tuple, in the
  given order; an unknown or missing value names the allowed ones."""
  allowed = tuple(allowed)

  def parse(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if bad:
      raise argparse.ArgumentTypeError(
          f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not one of "
          f"{', '.join(allowed)}")
    if len(items) < min_count:
      raise argparse.ArgumentTypeError(f"give at least {min_count} of {', '.join(allowed)}")
    return items
  return parse


def ints(minimum: int = 1, *, sep: str = ","):
  """An argparse ``type``: ``sep``-separated integers >= ``minimum`` -> tuple."""

  def parse(text: str) -> tuple[int, ...]:
    try:
      values = tuple(int(s) for s in text.split(sep) if s.strip())
    except ValueError:
      raise argparse.ArgumentTypeError(
          f"{text!r} is not a {sep!r}-separated list of integers") from None
    if not values or min(values) < minimum:
      raise argparse.ArgumentTypeError(
          f"{text!r}: give integers >= {minimum}, separated by {sep!r}")
    return values
  return parse
