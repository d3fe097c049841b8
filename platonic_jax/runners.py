"""Which experiment a config runs: ``config.experiment`` names it (absent = the adapter
experiment of ``configs/default.py``; ``"prh"`` = the Platonic study's sweep,
``configs/prh.py``). run.py asks here for the checks to run before any work, the entry
function and the exceptions that mean "stopped cleanly on SIGTERM"."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from platonic_jax import errors

ADAPTERS, PRH = "adapters", "prh"


@dataclasses.dataclass(frozen=True)
class Runner:
  check: Callable[[Any], None]             # every config problem in one ConfigError
  run: Callable[[Any, str], Any]           # (config, workdir) -> results
  preempted: Callable[[], tuple[type, ...]]   # the clean-stop exception types (lazy)
  distributed: bool                        # whether config.distributed sets up processes


def _adapters() -> Runner:
  from platonic_jax import validate  # noqa: PLC0415 - no jax

  def run(config, workdir):
    from platonic_jax import experiment  # noqa: PLC0415
    return experiment.train_and_evaluate(config, workdir)

  def preempted():
    from platonic_jax import train  # noqa: PLC0415
    return (train.Preempted,)

  return Runner(validate.check, run, preempted, True)


def _prh() -> Runner:
  from platonic_jax.prh import validate  # noqa: PLC0415 - no jax

  def run(config, workdir):
    from platonic_jax.prh import sweep  # noqa: PLC0415
    return sweep.run(config, workdir)

  def preempted():
    from platonic_jax.prh import preempt  # noqa: PLC0415
    return (preempt.Preempted,)

  return Runner(validate.check, run, preempted, False)


RUNNERS = {ADAPTERS: _adapters, PRH: _prh}


def get(config) -> Runner:
  """The runner of ``config`` (``config.experiment``, default "adapters")."""
  name = config.get("experiment", ADAPTERS)
  if name not in RUNNERS:
    raise errors.ConfigError(f"experiment={name!r}: allowed {tuple(RUNNERS)}")
  return RUNNERS[name]()
