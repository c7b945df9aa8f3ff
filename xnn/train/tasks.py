"""What a run optimises and reports, one object per kind of task (scenic's ``BaseModel``).

A task knows its dataset's keys. It gives the model its inputs (``inputs``), turns
the model's output and the batch into the training loss and the logged metrics
(``loss``), into sums for evaluation (``eval_sums``), and may add evaluations of its
own at the end of training (``final_evals``). The train and eval steps call these
and never ask what kind of task they run.

* ``ImageClassification``     images (N, H, W, C) -> logits (N, classes), label (N,).
* ``SequenceClassification``  sequences (N, T, F) -> logits (N, classes), label (N,);
                              images read as rows or pixels are sequences.
* ``Tagging``                 sequences (N, T, F) -> logits (N, T, classes), labels (N, T),
                              an optional (N, T) mask of valid steps.
* ``Seq2Seq``                 tokens and teacher-forced decoder inputs -> logits
                              (N, T, vocab), targets (N, T) with a mask; at the end,
                              greedy decoding without teacher forcing.

The loss is softmax cross-entropy (optionally label-smoothed) averaged over valid
targets, plus any auxiliary losses the model sows into its ``losses`` collection
(the mixture-of-experts load balance); evaluation padding (``EVAL_PAD_KEY``) carries
weight 0. A model that returns ``(logits, aux_logits, ...)`` in training (GoogLeNet,
Inception-v3) adds ``aux_loss_weight`` times each auxiliary head's cross-entropy
(logged as ``aux_loss``: their unweighted sum); the metrics and evaluation use the
main head. A batch mixed by ``xnn.data.mixing`` (Mixup, CutMix) carries soft targets,
and the cross-entropy is taken against them (label smoothing applies on top).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from xnn.data.datasets import EVAL_PAD_KEY
from xnn.data.mixing import SOFT_TARGET_KEY

Batch = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array, label_smoothing: float = 0.0,
                  soft_targets: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted sums of cross-entropy and of correct predictions, and the weight total.

  ``soft_targets`` (same shape as ``logits``, e.g. Mixup's) replace the one-hot ``labels`` in the
  cross-entropy, and a prediction is correct where it names their largest share.
  """
  logits = logits.astype(jnp.float32)
  if soft_targets is not None or label_smoothing:
    targets = jax.nn.one_hot(labels, logits.shape[-1]) if soft_targets is None else soft_targets
    if label_smoothing:
      targets = optax.smooth_labels(targets, label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
  else:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  truth = labels if soft_targets is None else jnp.argmax(soft_targets, -1)
  correct = (jnp.argmax(logits, -1) == truth).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)


def heads(outputs: Any) -> tuple[jax.Array, ...]:
  """The logits of every head of a model's output: the main head first, then any auxiliary ones."""
  return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def main_logits(outputs: Any) -> jax.Array:
  """The logits of the main head."""
  return heads(outputs)[0]


@dataclasses.dataclass(frozen=True)
class Classification:
  """Cross-entropy classification of each example (or of each target position)."""
  name = "classification"
  input_keys: tuple[str, ...]
  label_key: str = "label"
  mask_key: str | None = None          # per-target validity (padding of variable lengths)
  label_smoothing: float = 0.0
  aux_loss_weight: float = 0.0         # weight of each auxiliary head's cross-entropy

  def inputs(self, batch: Batch) -> tuple[jax.Array, ...]:
    """The model's positional inputs."""
    return tuple(batch[k] for k in self.input_keys)

  def weights(self, batch: Batch) -> jax.Array:
    """Weight of every target: 1, times the target mask, times 0 on evaluation padding."""
    w = jnp.ones(batch[self.label_key].shape, jnp.float32)
    if self.mask_key and self.mask_key in batch:
      w = w * batch[self.mask_key].astype(jnp.float32)
    if EVAL_PAD_KEY in batch:      # (N,), broadcast over any time axis
      m = batch[EVAL_PAD_KEY].astype(jnp.float32)
      w = w * m.reshape(m.shape + (1,) * (w.ndim - m.ndim))
    return w

  def loss(self, outputs: Any, batch: Batch, aux_losses: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss to minimise, metrics to log): mean cross-entropy of the main head + ``aux_loss_weight`` x
    each auxiliary head's + the model's sown losses; the main head's loss and accuracy."""
    main, *aux = heads(outputs)
    labels, weights, soft = batch[self.label_key], self.weights(batch), batch.get(SOFT_TARGET_KEY)
    loss_sum, correct, total = cross_entropy(main, labels, weights, self.label_smoothing, soft)
    count = jnp.maximum(total, 1.0)
    metrics = {"loss": loss_sum / count, "accuracy": correct / count}
    sown = sum((jnp.sum(v) for v in jax.tree.leaves(aux_losses or {})), jnp.float32(0.0))
    if not aux:
      return metrics["loss"] + sown, metrics
    metrics["aux_loss"] = sum(cross_entropy(a, labels, weights, self.label_smoothing, soft)[0] for a in aux) / count
    return metrics["loss"] + self.aux_loss_weight * metrics["aux_loss"] + sown, metrics

  def eval_sums(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Sums over the batch that evaluation adds up: loss_sum, correct, count (of the main head)."""
    loss_sum, correct, total = cross_entropy(main_logits(outputs), batch[self.label_key], self.weights(batch))
    return {"loss_sum": loss_sum, "correct": correct, "count": total}

  def final_evals(self, model: Any, example_batch: dict) -> dict[str, Callable]:
    """Extra evaluations after training: name -> ``eval_fn(variables, batch) -> sums``."""
    del model, example_batch
    return {}

  def summarize(self, name: str, sums: dict[str, float]) -> dict[str, float]:
    """A final evaluation's sums as the numbers to report."""
    raise KeyError(f"task {self.name!r} has no final evaluation {name!r}")


class ImageClassification(Classification):
  name = "image_classification"


class SequenceClassification(Classification):
  name = "sequence_classification"


class Tagging(Classification):
  name = "tagging"


class Seq2Seq(Classification):
  """Teacher-forced training; greedy decoding (``model.decode(inputs, max_len)``) at the end.

  A decoded token is correct where it equals the target at a valid position (answer
  tokens and EOS), a sequence where all of its valid positions are correct.
  """
  name = "seq2seq"

  def final_evals(self, model: Any, example_batch: dict) -> dict[str, Callable]:
    max_len = example_batch[self.label_key].shape[1]
    encoder_key = self.input_keys[0]

    def greedy(variables, batch):
      tokens, _ = model.apply(variables, batch[encoder_key], max_len, method="decode")
      w = self.weights(batch)
      right = (tokens == batch[self.label_key]).astype(jnp.float32) * w
      seq_valid = (jnp.sum(w, -1) > 0).astype(jnp.float32)
      seq_right = (jnp.sum(right, -1) == jnp.sum(w, -1)).astype(jnp.float32) * seq_valid
      return {"token_correct": jnp.sum(right), "token_count": jnp.sum(w),
              "sequence_correct": jnp.sum(seq_right), "sequence_count": jnp.sum(seq_valid)}

    return {"greedy": greedy} if hasattr(model, "decode") else {}

  def summarize(self, name: str, sums: dict[str, float]) -> dict[str, float]:
    if name != "greedy":
      return super().summarize(name, sums)
    return {"greedy_token_accuracy": float(sums["token_correct"]) / max(float(sums["token_count"]), 1.0),
            "greedy_sequence_accuracy": float(sums["sequence_correct"]) / max(float(sums["sequence_count"]), 1.0)}


TASKS: dict[str, type[Classification]] = {
    t.name: t for t in (ImageClassification, SequenceClassification, Tagging, Seq2Seq)}


def task_for(ds: Any, data_config: Any, label_smoothing: float = 0.0, aux_loss_weight: float = 0.0) -> Classification:
  """The task a dataset (and how ``config.data`` reads it) poses."""
  if "decoder_inputs" in ds.input_keys:
    kind = "seq2seq"
  elif ds.kind == "image" and not data_config.as_sequence:
    kind = "image_classification"
  else:
    label_rank = len(getattr(ds.train[0][ds.label_key], "shape", ()))
    kind = "tagging" if label_rank == 1 else "sequence_classification"
  return TASKS[kind](tuple(ds.input_keys), ds.label_key, ds.mask_key, label_smoothing, aux_loss_weight)
