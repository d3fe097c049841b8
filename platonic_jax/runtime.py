"""Process set-up done once by the entry point (``run.py``), before any JAX computation:
multi-host initialisation and the quieting of libraries' misleading log lines."""

from __future__ import annotations

import os

from absl import logging


def initialize_distributed(cfg) -> None:
  """``jax.distributed.initialize()`` when ``config.distributed.multihost`` (once).

  ``coordinator_address`` / ``num_processes`` / ``process_id`` are passed when set;
  otherwise JAX detects them (TPU pods, SLURM, ...). Must run before any JAX computation:
  later, ``jax.distributed.initialize()`` refuses to run.
  """
  import jax  # noqa: PLC0415 - the entry imports jax only once the config is known good
  if not cfg.multihost or jax.distributed.is_initialized():
    return
  kw = {}
  if cfg.coordinator_address:
    kw["coordinator_address"] = cfg.coordinator_address
  if cfg.num_processes > 0:
    kw["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kw["process_id"] = cfg.process_id
  jax.distributed.initialize(**kw)
  logging.info("jax.distributed: process %d of %d, %d devices in all",
               jax.process_index(), jax.process_count(), jax.device_count())


def config_problems(cfg) -> list[str]:
  """Every unusable value of ``config.distributed``, one line each."""
  out = []
  if cfg.num_processes < 0:
    out.append(f"distributed.num_processes={cfg.num_processes}: must be >= 0 (0 = detect)")
  if cfg.process_id < -1:
    out.append(f"distributed.process_id={cfg.process_id}: must be >= -1 (-1 = detect)")
  if cfg.coordinator_address and ":" not in cfg.coordinator_address:
    out.append(f"distributed.coordinator_address={cfg.coordinator_address!r}: expected "
               "'host:port'")
  return out


class _DropOrbaxInfo:
  """absl-handler filter: Orbax logs a dozen INFO lines per save, burying the progress."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def quiet_logs() -> None:
  """Silences what only misleads a user of this project.

  - Orbax's INFO lines of every checkpoint save (progress stays readable);
  - transformers' "PyTorch was not found" advice at import: this project runs its own
    Flax models and needs torch only as the tests' reference.
  (TFDS's "Downloading and preparing dataset Unknown size" is replaced where the data is
  prepared, ``platonic_jax.data.open_source``.)
  """
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropOrbaxInfo) for f in handler.filters):
    handler.addFilter(_DropOrbaxInfo())
