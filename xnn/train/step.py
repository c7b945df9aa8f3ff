"""Train state, the data-parallel train step and the eval step, for any task.

Data parallelism is written with ``jax.jit`` over a one-axis ``Mesh``
(``data``): the global batch is sharded along it, the state is replicated, and
XLA inserts the gradient all-reduce (the semantics of ``pmap`` + ``pmean``).

BatchNorm statistics (``config.train.bn_stats``):

* ``global`` (default): mean and variance over the whole global batch, on any
  number of devices -- synchronised BN. Results do not depend on the device
  count: 8 devices give the single-device numbers (up to float reduction order).
* ``per_device``: statistics over each device's share of the batch, as ``pmap``
  computed them (and as the ResNet paper's 2-GPU runs did: 64 images each).
  Different device counts then train differently.
* ``groups``: statistics over consecutive groups of ``bn_group_size`` examples
  ("ghost" batches), independent of the device count -- e.g. 64 to reproduce
  the paper's BN on one device.

Grouped statistics are computed by ``vmap``-ping the model over the groups
(batch reshaped to (G, B/G, ...)); the running averages of the groups are then
averaged, as pmap-based trainers average them across replicas.

The task (``xnn.train.tasks``) gives the model its inputs and turns its outputs into
the loss and metrics; the model's ``rng_streams`` (``xnn.models.ModelInfo``) name
the random streams it draws from in training.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       example_inputs: tuple[jax.Array, ...]) -> TrainState:
  """Initialises parameters (float32) and optimiser state from example inputs."""
  variables = model.init({"params": rng, "dropout": rng}, *example_inputs, train=False)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=variables.get("batch_stats"))
  # A strongly typed step (TrainState.create's Python 0 becomes a weakly typed array, a
  # restored one is strong), so that a fresh and a resumed run compile the same program.
  return state.replace(step=jnp.zeros((), jnp.int32))


def variables_of(state: TrainState) -> dict[str, Any]:
  """The model variables held by ``state`` (parameters and BatchNorm statistics)."""
  variables = {"params": state.params}
  if state.batch_stats is not None:
    variables["batch_stats"] = state.batch_stats
  return variables


def stream_rngs(rng: jax.Array, streams: Sequence[str]) -> dict[str, jax.Array]:
  """One key per random stream: the first stream gets ``rng`` itself, the i-th ``fold_in(rng, i)``."""
  return {s: rng if i == 0 else jax.random.fold_in(rng, i) for i, s in enumerate(streams)}


def _grouped(x: jax.Array, groups: int, sharding: Any) -> jax.Array:
  g = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
  return g if sharding is None else jax.lax.with_sharding_constraint(g, sharding)


def make_train_step(model: nn.Module, task: Any, *, lr_fn: optax.Schedule,
                    rng_streams: Sequence[str] = ("dropout",), bn_groups: int = 1,
                    group_sharding: Any = None) -> Callable:
  """Returns ``train_step(state, batch, rng) -> (state, metrics)`` (to be jitted).

  Metrics: the task's (``loss``, ``accuracy``), ``grad_norm`` and ``learning_rate``.
  """

  def forward(params, batch_stats, inputs, rng):
    variables, mutable = {"params": params}, ["losses"]
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
      mutable.append("batch_stats")
    return model.apply(variables, *inputs, train=True, rngs=stream_rngs(rng, rng_streams), mutable=mutable)

  def loss_fn(params, state, batch, rng):
    inputs = task.inputs(batch)
    if bn_groups == 1:
      outputs, new_vars = forward(params, state.batch_stats, inputs, rng)
    else:
      grouped = tuple(_grouped(x, bn_groups, group_sharding) for x in inputs)
      rngs = jax.random.split(rng, bn_groups)
      outputs, new_vars = jax.vmap(lambda xs, r: forward(params, state.batch_stats, xs, r))(grouped, rngs)
      outputs = jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), outputs)
      new_vars = jax.tree.map(lambda v: jnp.mean(v, axis=0), new_vars)
    loss, metrics = task.loss(outputs, batch, new_vars.get("losses"))
    return loss, (new_vars.get("batch_stats"), metrics)

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (new_stats, metrics)), grads = grad_fn(state.params, state, batch, step_rng)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads), "learning_rate": lr_fn(state.step)}
    new_state = state.apply_gradients(grads=grads)
    if new_stats is not None:
      new_state = new_state.replace(batch_stats=new_stats)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, task: Any) -> Callable:
  """Returns ``eval_step(state, batch) -> sums`` of the task's evaluation (padding masked)."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    outputs = model.apply(variables_of(state), *task.inputs(batch), train=False)
    return task.eval_sums(outputs, batch)

  return eval_step


def make_final_eval_step(eval_fn: Callable) -> Callable:
  """``step(state, batch) -> sums`` of one of the task's final evaluations."""
  return lambda state, batch: eval_fn(variables_of(state), batch)
