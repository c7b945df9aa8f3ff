"""The train step ``xnn train`` runs, for the model tests: ``create_train_state`` + ``make_train_step``.

``xnn.train.train`` builds the state with ``create_train_state`` (a train-mode init:
auxiliary classifiers included) and the step with ``make_train_step`` from the task its
data poses; the zoo's tests take their models through exactly these, with the task
``task_and_batch`` gives each registered model (the model's published auxiliary-loss
weight included), so a model that trains in the tests trains in ``xnn train``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

import xnn.models as M
from xnn.data import sequence_tasks
from xnn.train import tasks
from xnn.train.step import TrainState, create_train_state, make_eval_step, make_train_step

# The registered models whose data is not an image batch, and the task it poses.
SEQUENCE_TASKS = {
    "rnn_classifier": "sequence_classification", "gru_classifier": "sequence_classification",
    "lstm_classifier": "sequence_classification", "bilstm_classifier": "sequence_classification",
    "pyramidal_lstm_classifier": "sequence_classification", "moe_lstm_classifier": "sequence_classification",
    "transformer_classifier": "sequence_classification",
    "lstm_tagger": "tagging", "lstm_generator": "tagging",
    "rnn_seq2seq": "seq2seq", "transformer_seq2seq": "seq2seq",
}
TX = optax.sgd(0.1, momentum=0.9)
LR = optax.constant_schedule(0.1)
# Low-optimisation XLA:CPU compile for the real steps: compile time, not compute, dominates them (a third to a
# half of it saved on a 2-core machine); the step's mathematics is the same.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_compiled(fn: Any, *args: Any) -> Any:
  """``fn(*args)`` compiled once with ``FAST_COMPILE`` and run."""
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def task_and_batch(name: str, batch: int = 2, shape: tuple[int, ...] | None = None, model: Any = None,
                   **kwargs: Any) -> tuple[Any, tasks.Classification, dict[str, jax.Array]]:
  """(model, task, batch of zeros) for the registered model ``name`` at its default input (or ``shape``)."""
  info = M.info(name)
  model = model if model is not None else M.build(name, **kwargs)
  kind = SEQUENCE_TASKS.get(name, "image_classification")
  if kind == "seq2seq":
    d = sequence_tasks.make_task("reverse", batch, seed=0, length=info.input_shape[0])
    task = tasks.Seq2Seq(("inputs", "decoder_inputs"), "targets", "targets_mask")
    return model, task, {k: jnp.asarray(d[k]) for k in ("inputs", "decoder_inputs", "targets", "targets_mask")}
  x = jnp.zeros((batch, *(shape or info.input_shape)), jnp.float32)
  if kind == "tagging":      # one label per output step
    out = jax.eval_shape(lambda: model.apply(M.init_variables(model, (x,), jax.random.key(0)), x))
    labels = jnp.zeros(out.shape[:-1], jnp.int32)
  else:
    labels = jnp.zeros((batch,), jnp.int32)
  task = tasks.TASKS[kind](("inputs",), "label", None, 0.0, info.aux_loss_weight)
  return model, task, {"inputs": x, "label": labels}


def initial_state(model: Any, task: tasks.Classification, batch: dict[str, jax.Array],
                  rng_streams: tuple[str, ...] = ("dropout",), tx: optax.GradientTransformation = TX) -> TrainState:
  """``create_train_state`` on the first example of ``batch``, as ``xnn.train.train.init_state`` calls it."""
  return create_train_state(model, tx, jax.random.key(0), tuple(x[:1] for x in task.inputs(batch)), rng_streams)


def train_step(model: Any, task: tasks.Classification, rng_streams: tuple[str, ...] = ("dropout",), **options):
  """``make_train_step`` as ``xnn train`` builds it (``options``: bn_groups, mix, grad_accum_steps, ...)."""
  return make_train_step(model, task, lr_fn=LR, rng_streams=rng_streams, **options)


def one_step(model: Any, task: tasks.Classification, batch: dict[str, jax.Array],
             rng_streams: tuple[str, ...] = ("dropout",),
             tx: optax.GradientTransformation = TX) -> tuple[TrainState, TrainState, dict[str, jax.Array]]:
  """(initial state, state after one train step, its metrics): to be run under ``jax.jit`` or ``jax.eval_shape``."""
  state = initial_state(model, task, batch, rng_streams, tx)
  after, metrics = train_step(model, task, rng_streams)(state, batch, jax.random.key(1))
  return state, after, metrics


def state_from(variables: dict[str, Any], tx: optax.GradientTransformation = TX) -> TrainState:
  """A train state holding given variables (e.g. filled on the host, to compile no initialiser)."""
  return TrainState.create(apply_fn=None, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats")).replace(step=jnp.zeros((), jnp.int32))


def eval_loss(model: Any, task: tasks.Classification, state: TrainState, batch: dict[str, jax.Array]) -> jax.Array:
  """The mean loss of ``state`` on ``batch`` as ``xnn train`` evaluates it (``make_eval_step``: inference mode)."""
  sums = make_eval_step(model, task)(state, batch)
  return sums["loss_sum"] / sums["count"]
