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

Training tools of the step, each off by default:

* ``mix``: Mixup / CutMix of the batch (``xnn.data.mixing``), drawn from its own
  stream of the step's key.
* ``grad_accum_steps`` k (``train.grad_accum_steps``): the global batch is cut into k
  micro-batches (example i goes to micro-batch i mod k, so every device holds its
  share of each), run one after another in a ``lax.scan``; their gradients are
  averaged and the optimiser steps once. Activations are live for one micro-batch at
  a time. The gradient equals the whole batch's (up to float summation order) for a
  model without BatchNorm and with equal example weights. BatchNorm normalises each
  micro-batch with its own statistics (B/k examples: as ``bn_stats='groups'`` with
  groups of B/k), and the running averages are the mean of the k micro-batches'
  updates.
* ``ema_decay`` d (``train.ema_decay``): after every optimiser step
  ``ema = d * ema + (1 - d) * new`` for the parameters and the BatchNorm statistics
  (``optax.incremental_update``), started from the initial values; the loop evaluates
  the average as well (``make_eval_step(..., ema=True)``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from xnn.models import init_variables


class TrainState(train_state.TrainState):
  batch_stats: Any = None
  ema_params: Any = None          # the moving averages (train.ema_decay > 0)
  ema_batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       example_inputs: tuple[jax.Array, ...], rng_streams: Sequence[str] = ("dropout",),
                       ema: bool = False) -> TrainState:
  """Initialises parameters (float32) and optimiser state from example inputs, in train mode
  (``xnn.models.init_variables``: auxiliary heads included); ``ema``: the moving averages too."""
  variables = init_variables(model, example_inputs, rng, tuple(rng_streams))
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=variables.get("batch_stats"))
  if ema:
    state = state.replace(ema_params=state.params, ema_batch_stats=state.batch_stats)
  # A strongly typed step (TrainState.create's Python 0 becomes a weakly typed array, a
  # restored one is strong), so that a fresh and a resumed run compile the same program.
  return state.replace(step=jnp.zeros((), jnp.int32))


def variables_of(state: TrainState, ema: bool = False) -> dict[str, Any]:
  """The model variables held by ``state`` (parameters and BatchNorm statistics), or their moving averages."""
  params, stats = (state.ema_params, state.ema_batch_stats) if ema else (state.params, state.batch_stats)
  if params is None:
    raise ValueError("this run keeps no moving average of its weights (train.ema_decay = 0)")
  variables = {"params": params}
  if stats is not None:
    variables["batch_stats"] = stats
  return variables


def stream_rngs(rng: jax.Array, streams: Sequence[str]) -> dict[str, jax.Array]:
  """One key per random stream: the first stream gets ``rng`` itself, the i-th ``fold_in(rng, i)``."""
  return {s: rng if i == 0 else jax.random.fold_in(rng, i) for i, s in enumerate(streams)}


def _grouped(x: jax.Array, groups: int, sharding: Any) -> jax.Array:
  g = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
  return g if sharding is None else jax.lax.with_sharding_constraint(g, sharding)


def micro_batches(x: jax.Array, k: int, sharding: Any = None) -> jax.Array:
  """(B, ...) -> (k, B/k, ...): micro-batch j holds examples j, j+k, j+2k, ... (each device keeps its rows)."""
  m = jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
  return m if sharding is None else jax.lax.with_sharding_constraint(m, sharding)


MIX_STREAM = 0x6D6978          # folded into the step's key for Mixup/CutMix draws ("mix")


def make_train_step(model: nn.Module, task: Any, *, lr_fn: optax.Schedule,
                    rng_streams: Sequence[str] = ("dropout",), bn_groups: int = 1,
                    group_sharding: Any = None, mix: Callable | None = None, grad_accum_steps: int = 1,
                    micro_sharding: Any = None, ema_decay: float = 0.0) -> Callable:
  """Returns ``train_step(state, batch, rng) -> (state, metrics)`` (to be jitted).

  Metrics: the task's (``loss``, ``accuracy``, ...), ``grad_norm`` and ``learning_rate``.
  ``bn_groups``: BatchNorm groups per (micro-)batch; ``mix(batch, rng) -> (batch, info)``: Mixup/CutMix;
  ``micro_sharding``: sharding of the (k, B/k, ...) micro-batches (``P(None, "data")``).
  """

  def forward(params, batch_stats, inputs, rng):
    variables, mutable = {"params": params}, ["losses"]
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
      mutable.append("batch_stats")
    return model.apply(variables, *inputs, train=True, rngs=stream_rngs(rng, rng_streams), mutable=mutable)

  def loss_fn(params, batch_stats, batch, rng):
    inputs = task.inputs(batch)
    if bn_groups == 1:
      outputs, new_vars = forward(params, batch_stats, inputs, rng)
    else:
      grouped = tuple(_grouped(x, bn_groups, group_sharding) for x in inputs)
      rngs = jax.random.split(rng, bn_groups)
      outputs, new_vars = jax.vmap(lambda xs, r: forward(params, batch_stats, xs, r))(grouped, rngs)
      outputs = jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), outputs)
      new_vars = jax.tree.map(lambda v: jnp.mean(v, axis=0), new_vars)
    loss, metrics = task.loss(outputs, batch, new_vars.get("losses"))
    return loss, (new_vars.get("batch_stats"), metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def gradients(params, batch_stats, batch, rng):
    """(gradients, new BatchNorm statistics, metrics), averaged over the micro-batches."""
    if grad_accum_steps == 1:
      (_, (new_stats, metrics)), grads = grad_fn(params, batch_stats, batch, rng)
      return grads, new_stats, metrics
    micro = jax.tree.map(lambda x: micro_batches(x, grad_accum_steps, micro_sharding), batch)

    def one(j, mb):
      (_, (new_stats, metrics)), grads = grad_fn(params, batch_stats, mb, jax.random.fold_in(rng, j))
      return grads, new_stats, metrics

    def body(total, inputs):
      return jax.tree.map(jnp.add, total, one(*inputs)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(one, 0, first))
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro))
    return jax.tree.map(lambda t: t / grad_accum_steps, total)

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    if mix is not None:
      batch, _ = mix(batch, jax.random.fold_in(jax.random.fold_in(rng, MIX_STREAM), state.step))
    grads, new_stats, metrics = gradients(state.params, state.batch_stats, batch, step_rng)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads), "learning_rate": lr_fn(state.step)}
    new_state = state.apply_gradients(grads=grads)
    if new_stats is not None:
      new_state = new_state.replace(batch_stats=new_stats)
    if ema_decay:
      average = lambda new, old: optax.incremental_update(new, old, 1.0 - ema_decay)  # noqa: E731
      new_state = new_state.replace(ema_params=average(new_state.params, state.ema_params),
                                    ema_batch_stats=average(new_state.batch_stats, state.ema_batch_stats))
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, task: Any, ema: bool = False) -> Callable:
  """Returns ``eval_step(state, batch) -> sums`` of the task's evaluation (padding masked), of the weights
  or (``ema``) of their moving average."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    outputs = model.apply(variables_of(state, ema), *task.inputs(batch), train=False)
    return task.eval_sums(outputs, batch)

  return eval_step


def make_final_eval_step(eval_fn: Callable) -> Callable:
  """``step(state, batch) -> sums`` of one of the task's final evaluations."""
  return lambda state, batch: eval_fn(variables_of(state), batch)
