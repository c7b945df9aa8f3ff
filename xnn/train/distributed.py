"""Joining the processes of a multi-host job (``jax.distributed``).

``xnn train`` calls :func:`maybe_initialize` before touching a device:

* ``XNN_COORDINATOR_ADDRESS``, ``XNN_NUM_PROCESSES``, ``XNN_PROCESS_ID`` (and
  optionally ``XNN_LOCAL_DEVICE_IDS``) set: explicit initialisation, as
  ``launch/local_multihost.py`` does for several processes on one machine;
* ``XNN_DISTRIBUTED=auto``: ``jax.distributed.initialize()`` with no arguments,
  which finds the cluster by itself on Cloud TPU pods, Slurm and Open MPI;
* neither: a single process (nothing to do).
"""

from __future__ import annotations

import os

import jax


def maybe_initialize() -> bool:
  """Initialises ``jax.distributed`` from the environment; True if it did."""
  if os.environ.get("XNN_COORDINATOR_ADDRESS"):
    kwargs = dict(coordinator_address=os.environ["XNN_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["XNN_NUM_PROCESSES"]),
                  process_id=int(os.environ["XNN_PROCESS_ID"]))
    if os.environ.get("XNN_LOCAL_DEVICE_IDS"):
      kwargs["local_device_ids"] = [int(i) for i in os.environ["XNN_LOCAL_DEVICE_IDS"].split(",")]
    jax.distributed.initialize(**kwargs)
    return True
  if os.environ.get("XNN_DISTRIBUTED") == "auto":
    jax.distributed.initialize()
    return True
  return False
