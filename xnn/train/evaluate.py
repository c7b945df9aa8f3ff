"""Evaluation: one jitted step summed over this host's share of the test split.

The test batches are read once (``xnn.data.pipeline.eval_batches``: in order, padded,
padding weighted 0) and kept on the host; ``Evaluator.sums(step_fn, state)`` runs any
``step(state, batch) -> sums`` over all of them -- the task's teacher-forced
evaluation every epoch, its final evaluations (greedy decoding) at the end -- and
returns the totals on the host.

``make_report_step`` and ``report`` give ``xnn eval``'s fuller account of one
checkpoint: top-1 and top-k accuracy, loss, per-class accuracy and the confusion
matrix (summed on the device, (classes, classes) counts per batch).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from xnn.data import pipeline
from xnn.train.tasks import main_logits


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


# --- a checkpoint's full report (``xnn eval``) ----------------------------------------------


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label's logit is among the ``k`` largest: fewer than ``k`` classes score strictly higher.

  Counting strictly higher logits makes every top-1 hit (``argmax == label``) a top-k hit, ties included.
  """
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


def confusion_counts(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """(classes, classes) weighted counts: row = true label, column = the argmax prediction.

  Leading axes of any rank (examples, or examples x time steps) are summed over.
  """
  n = logits.shape[-1]
  true = jax.nn.one_hot(labels, n, dtype=jnp.float32) * weights[..., None]
  pred = jax.nn.one_hot(jnp.argmax(logits, -1), n, dtype=jnp.float32)
  return jnp.einsum("...i,...j->ij", true, pred)


def make_report_step(model: Any, task: Any, k: int = 5) -> Callable:
  """``step(variables, batch) -> sums``: the task's evaluation sums (as in training, so that the top-1 is the
  run's own test accuracy) plus ``topk_correct`` (with ``k`` < classes) and the ``confusion`` counts."""

  def step(variables, batch):
    outputs = model.apply(variables, *task.inputs(batch), train=False)
    sums = dict(task.eval_sums(outputs, batch))
    logits = main_logits(outputs).astype(jnp.float32)
    labels, w = batch[task.label_key], task.weights(batch)
    if k < logits.shape[-1]:
      sums["topk_correct"] = jnp.sum(topk_correct(logits, labels, k) * w)
    sums["confusion"] = confusion_counts(logits, labels, w)
    return sums

  return step


def report(sums: dict[str, np.ndarray], k: int = 5) -> dict[str, Any]:
  """Top-1, top-k (None when there are no more than ``k`` classes), mean loss, per-class accuracy and the
  confusion matrix from ``make_report_step``'s totals (counts as integers; a class without examples: None)."""
  n = max(float(sums["count"]), 1.0)
  confusion = np.rint(np.asarray(sums["confusion"], np.float64)).astype(np.int64)
  counts = confusion.sum(axis=1)
  per_class = [float(confusion[c, c] / counts[c]) if counts[c] else None for c in range(len(counts))]
  out = {"examples": int(round(float(sums["count"]))), "loss": float(sums["loss_sum"]) / n,
         "top1_accuracy": float(sums["correct"]) / n, f"top{k}_accuracy": None}
  if "topk_correct" in sums:
    out[f"top{k}_accuracy"] = float(sums["topk_correct"]) / n
  else:
    out[f"top{k}_note"] = f"not computed: {len(counts)} classes, top-{k} needs more than {k}"
  out.update(num_classes=len(counts), class_counts=counts.tolist(), per_class_accuracy=per_class,
             confusion_matrix=confusion.tolist())
  return out
