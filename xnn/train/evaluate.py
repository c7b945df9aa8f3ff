"""Evaluation: one jitted step summed over this host's share of the test split.

The test batches are read once (``xnn.data.pipeline.eval_batches``: in order, padded,
padding weighted 0) and kept on the host; ``Evaluator.sums(step_fn, state)`` runs any
``step(state, batch) -> sums`` over all of them -- the task's teacher-forced
evaluation every epoch, its final evaluations (greedy decoding) at the end -- and
returns the totals on the host.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from xnn.data import pipeline


def eval_local_batch(eval_batch_size: int) -> int:
  """This host's eval batch: the global ``eval_batch_size`` rounded up to a multiple of the devices."""
  n_dev = jax.device_count()
  return max(n_dev, -(-eval_batch_size // n_dev) * n_dev) // jax.process_count()


class Evaluator:
  def __init__(self, ds: Any, data_config: Any, eval_batch_size: int, mesh: Any):
    self.batches = list(pipeline.eval_batches(ds, data_config, eval_local_batch(eval_batch_size)))
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P("data"))
    self._jitted: dict[Callable, Callable] = {}

  @property
  def example(self) -> dict[str, np.ndarray]:
    """The first (host-local) test batch."""
    return self.batches[0]

  def to_global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.sharded, v) for k, v in local.items()}

  def sums(self, step_fn: Callable, state: Any) -> dict[str, np.ndarray]:
    """Totals of ``step_fn(state, batch)`` over every test batch, on the host (``step_fn`` is jitted once)."""
    if step_fn not in self._jitted:
      self._jitted[step_fn] = jax.jit(step_fn, in_shardings=(self.replicated, self.sharded),
                                      out_shardings=self.replicated)
    step = self._jitted[step_fn]
    total = None
    for b in self.batches:
      out = step(state, self.to_global(b))
      total = out if total is None else jax.tree.map(jnp.add, total, out)
    return jax.device_get(total)
