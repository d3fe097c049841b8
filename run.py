"""Runs one experiment: python run.py --config=configs/synthetic.py --workdir=runs/synthetic

Any config field can be overridden (`--config.train.lr=3e-4`); a misspelt field exits
non-zero naming it. Re-running the same command resumes from the latest checkpoint; on
SIGTERM (preemption) the run saves a checkpoint and exits with status 0. All logic lives
in `platonic_jax.experiment`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for features, checkpoints, report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from platonic_jax import experiment, train  # after flag parsing: --help stays fast
  try:
    experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning("%s", e)  # a clean stop: the checkpoint is complete


if __name__ == "__main__":
  app.run(main)
