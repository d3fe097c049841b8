"""Orbax checkpoints of the train state in ``<workdir>/checkpoints``.

A checkpoint holds only what training changes (the ``TrainState``: step, adapter and
loss parameters, optimizer state, RNG key). The data position is not stored: it is a
function of the step (``platonic_jax.train.batch_indices``). Orbax writes each step to a
temporary directory and renames it when complete, so a process killed mid-save (even
``kill -9``) leaves the previous checkpoints intact and the partial one is ignored.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, *, keep: int = 3) -> ocp.CheckpointManager:
  """A CheckpointManager over ``<workdir>/checkpoints`` keeping the last ``keep`` steps.

  Saving is asynchronous (training continues while the state is written); call
  ``wait_until_finished()`` before exiting.
  """
  if keep < 1:
    raise ValueError(f"train.keep_ckpts={keep} must be >= 1")
  # cleanup_tmp_directories: a save cut by kill -9 leaves "<step>.orbax-checkpoint-tmp";
  # it is never read, and removing it lets the resumed run save that step again.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def abstract_state(init_fn: Callable[[], Any], sharding) -> Any:
  """Shapes/dtypes of ``init_fn()`` (via ``jax.eval_shape``: nothing is computed) with
  ``sharding`` attached, the target that ``StandardRestore`` fills."""
  shapes = jax.eval_shape(init_fn)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  """Starts saving ``state`` as ``step``; returns whether a save was started."""
  return mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract: Any) -> tuple[Any, int] | None:
  """(state, step) of the latest complete checkpoint, or None if there is none.

  Restores into ``abstract`` (from ``abstract_state``) so the optimizer state comes back
  as optax's named tuples, not plain dicts, and arrays land with the given sharding.
  A checkpoint whose tree does not match (e.g. the adapter config changed since it
  was written) raises ValueError saying so.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  logging.info("Restoring checkpoint step %d from %s", step, mngr.directory)
  try:
    state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"the checkpoint at step {step} in {mngr.directory} does not fit the current "
        f"config (was it written with another adapter / loss / modality setting?): {e}. "
        "Re-run with the config that wrote it, or use a new --workdir.") from e
  return state, step
