"""Runs one experiment: python run.py --config=configs/synthetic.py --workdir=runs/synthetic

Any config field can be overridden (`--config.train.lr=3e-4`); a misspelt field exits
with status 1 naming it, and bad values exit with status 2 listing every bad field
before any work starts. Re-running the same command resumes; on SIGTERM (preemption)
the run saves what it finished and exits with status 0. All logic lives in the package
(`platonic_jax.runners` picks `experiment.train_and_evaluate`, or for `configs/prh.py`
the Platonic sweep `prh.sweep.run`); this entry does the process set-up (log quieting,
the allocator's trim policy, multi-host initialisation) and turns the project's
user-facing errors into one-line messages.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for features, checkpoints, report.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
  """absl's flag parsing; a misspelt config field exits like any bad flag (status 1).

  ml_collections raises AttributeError/KeyError for an override of a field the locked
  config does not have, which absl would print as a traceback.
  """
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    detail = e.args[0] if e.args else e
    detail = str(detail.args[0] if isinstance(detail, Exception) and detail.args else detail)
    field = detail.split("\n")[0].strip("'\"")
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and
           field in a.split("=")[0].split(".")]
    hint = " ".join(detail.split("\n")[1:])
    sys.stderr.write(f"FATAL Flags parsing error: {', '.join(bad) or '--config'}: the config "
                     f"has no field {field!r}. {hint}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def _fail(e: Exception) -> None:
  if os.environ.get("PLATONIC_JAX_TRACEBACK"):
    raise e
  sys.stderr.write(f"error: {e}\n(set PLATONIC_JAX_TRACEBACK=1 to see the traceback)\n")
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported after flag parsing (--help stays fast); validation first, so a bad value
  # costs no JAX backend, no data and no write.
  from platonic_jax import errors, host_memory, runners, runtime
  config = _CONFIG.value
  try:
    runner = runners.get(config)   # config.experiment: the adapter experiment or the sweep
    runner.check(config)
  except errors.UserError as e:
    _fail(e)
  runtime.quiet_logs()
  host_memory.keep_freed_memory()   # XLA:CPU's per-step buffers stay mapped (host_memory.py)
  if runner.distributed:
    runtime.initialize_distributed(config.distributed)
  try:
    runner.run(config, _WORKDIR.value)
  except runner.preempted() as e:
    logging.warning("%s", e)  # a clean stop: everything finished is saved
  except errors.UserError as e:
    # The message names the problem and the fix; any other exception is a bug of this
    # code and keeps its traceback.
    _fail(e)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
