"""Checkpoints with orbax: train state + grain iterator state, keep-last-N.

Orbax writes each step into a temporary folder and renames it when complete,
so an interrupted save never looks like a checkpoint. ``restore_latest`` also
survives a *corrupt* complete one (a truncated or deleted file): it warns and
falls back to the previous good step; it never loads a bad one silently.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import grain
import orbax.checkpoint as ocp

log = logging.getLogger("xnn")


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options, item_names=("state", "data"))


def iterator_save_args(data_iter: Any) -> Any:
  """The input position of a streaming run: its grain iterator's state."""
  return grain.checkpoint.CheckpointSave(data_iter)


def iterator_restore_args(data_iter: Any) -> Any:
  return grain.checkpoint.CheckpointRestore(data_iter)


def position_save_args(step: int) -> Any:
  """The input position of a device-resident run: the step (its batches are a function of it)."""
  return ocp.args.JsonSave({"mode": "device_resident", "step": int(step)})


def position_restore_args() -> Any:
  return ocp.args.JsonRestore()


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_args: Any) -> None:
  """Saves the train state and the input position (``data_args``: the input's ``save_args(step)``)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=data_args), force=True)
  manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   data_restore_args: Callable[[], Any]) -> tuple[int, Any] | None:
  """(step, state) of the newest checkpoint that restores, or None if there is none.

  ``data_restore_args()`` (the input's ``restore_args``) restores the input position
  (a grain iterator in place). Unusable newer checkpoints are deleted once an older
  one has restored.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  bad: list[int] = []
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=data_restore_args()))
    except Exception as e:  # noqa: BLE001 -- any failure means this step is unusable
      log.warning("checkpoint at step %d cannot be restored (%s: %s); trying the previous one",
                  step, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
      print(f"WARNING: checkpoint at step {step} is corrupt or incomplete "
            f"({type(e).__name__}); falling back to an earlier one.", flush=True)
      bad.append(step)
      continue
    for b in bad:     # a later save at these steps must not collide with the unusable ones
      manager.delete(b)
    return step, restored["state"]
  if steps:
    raise RuntimeError(f"none of the checkpoints {steps} in {manager.directory} could be restored")
  return None
