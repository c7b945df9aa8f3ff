"""Train state, the data-parallel train step and the eval step.

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
"""

from __future__ import annotations

import functools
from typing import Any, Callable

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


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                  label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted sums of cross-entropy and of correct predictions, and the weight total."""
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    onehot = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    losses = optax.softmax_cross_entropy(logits, onehot)
  else:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)


def _weights(batch: dict[str, jax.Array], label_key: str, mask_key: str | None) -> jax.Array:
  w = jnp.ones(batch[label_key].shape, jnp.float32)
  if mask_key and mask_key in batch:
    w = w * batch[mask_key].astype(jnp.float32)
  if "mask" in batch:      # eval padding: (N,) broadcast over any time axis
    m = batch["mask"].astype(jnp.float32)
    w = w * m.reshape(m.shape + (1,) * (w.ndim - m.ndim))
  return w


def make_train_step(model: nn.Module, *, input_keys: tuple[str, ...], label_key: str,
                    mask_key: str | None, lr_fn: optax.Schedule, bn_groups: int = 1,
                    label_smoothing: float = 0.0, group_sharding: Any = None) -> Callable:
  """Returns ``train_step(state, batch, rng) -> (state, metrics)`` (to be jitted)."""

  def forward(params, batch_stats, inputs, rng):
    variables = {"params": params}
    mutable = ["losses"]
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
      mutable.append("batch_stats")
    rngs = {"dropout": rng, "moe": jax.random.fold_in(rng, 1)}   # moe: noisy top-k gating
    return model.apply(variables, *inputs, train=True, rngs=rngs, mutable=mutable)

  def loss_fn(params, state, batch, rng):
    inputs = tuple(batch[k] for k in input_keys)
    if bn_groups == 1:
      logits, new_vars = forward(params, state.batch_stats, inputs, rng)
    else:
      def group(x):
        g = x.reshape((bn_groups, x.shape[0] // bn_groups) + x.shape[1:])
        return g if group_sharding is None else jax.lax.with_sharding_constraint(g, group_sharding)
      grouped = tuple(group(x) for x in inputs)
      rngs = jax.random.split(rng, bn_groups)
      logits, new_vars = jax.vmap(lambda xs, r: forward(params, state.batch_stats, xs, r))(grouped, rngs)
      logits = logits.reshape((-1,) + logits.shape[2:])
      new_vars = jax.tree.map(lambda v: jnp.mean(v, axis=0), new_vars)
    weights = _weights(batch, label_key, mask_key)
    loss_sum, correct, total = cross_entropy(logits, batch[label_key], weights, label_smoothing)
    loss = loss_sum / jnp.maximum(total, 1.0)
    aux = sum((jnp.sum(v) for v in jax.tree.leaves(new_vars.get("losses", {}))), jnp.float32(0.0))
    return loss + aux, (new_vars.get("batch_stats"), loss, correct / jnp.maximum(total, 1.0))

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (new_stats, loss, acc)), grads = grad_fn(state.params, state, batch, step_rng)
    metrics = {"loss": loss, "accuracy": acc, "grad_norm": optax.global_norm(grads),
               "learning_rate": lr_fn(state.step)}
    new_state = state.apply_gradients(grads=grads)
    if new_stats is not None:
      new_state = new_state.replace(batch_stats=new_stats)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, *, input_keys: tuple[str, ...], label_key: str,
                   mask_key: str | None) -> Callable:
  """Returns ``eval_step(state, batch) -> sums`` of loss, correct and count (masked)."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    variables = {"params": state.params}
    if state.batch_stats is not None:
      variables["batch_stats"] = state.batch_stats
    logits = model.apply(variables, *(batch[k] for k in input_keys), train=False)
    weights = _weights(batch, label_key, mask_key)
    loss_sum, correct, total = cross_entropy(logits, batch[label_key], weights)
    return {"loss_sum": loss_sum, "correct": correct, "count": total}

  return eval_step


def make_greedy_eval_step(model: nn.Module, *, max_len: int, label_key: str = "targets",
                          mask_key: str = "targets_mask") -> Callable:
  """Sequence-to-sequence evaluation without teacher forcing.

  Returns ``greedy_step(state, batch) -> sums``: the model's ``decode(inputs, max_len)``
  produces tokens from BOS alone, each step fed its own previous prediction; a token is
  correct where it equals the target at a valid position (answer tokens and EOS), a
  sequence where all of its valid positions are correct.
  """

  def greedy_step(state: TrainState, batch: dict[str, jax.Array]):
    variables = {"params": state.params}
    if state.batch_stats is not None:
      variables["batch_stats"] = state.batch_stats
    tokens, _ = model.apply(variables, batch["inputs"], max_len, method="decode")
    w = _weights(batch, label_key, mask_key)
    right = (tokens == batch[label_key]).astype(jnp.float32) * w
    seq_valid = (jnp.sum(w, -1) > 0).astype(jnp.float32)
    seq_right = (jnp.sum(right, -1) == jnp.sum(w, -1)).astype(jnp.float32) * seq_valid
    return {"token_correct": jnp.sum(right), "token_count": jnp.sum(w),
            "sequence_correct": jnp.sum(seq_right), "sequence_count": jnp.sum(seq_valid)}

  return greedy_step
