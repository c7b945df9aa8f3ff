"""Linear probes (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier probes"):
how linearly separable the classes are in each stage's features.

Each stage's output is globally average-pooled to one vector per example (over H and W, or over the valid
steps of a sequence), standardised with the training split's mean and standard deviation, and a
multinomial logistic regression -- softmax cross-entropy plus ``l2`` x ||W||^2 -- is fitted to the training
split by full-batch L-BFGS (optax), from zero weights (deterministic). Its accuracy on the test split, per
stage, against depth: the lecture notes "Design" expect lower-level features to be class-agnostic and deeper
ones class-specific.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xnn import plots


def pool(value: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """(N, H, W, C) -> (N, C) by the mean over H and W; (N, T, F) -> (N, F) by the mean over the valid steps."""
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    return value.mean(axis=(1, 2))
  if value.ndim == 3:
    m = np.ones(value.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    return (value * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1.0)
  return value.reshape(len(value), -1)


@functools.partial(jax.jit, static_argnames=("classes", "iterations"))
def _lbfgs(x: Any, y: Any, classes: int, l2: float, iterations: int) -> dict:
  def loss(p):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(p, updates), state), value

  p = {"w": jnp.zeros((x.shape[1], classes)), "b": jnp.zeros((classes,))}
  return jax.lax.scan(step, (p, opt.init(p)), None, length=iterations)[0][0]


def fit(features: np.ndarray, labels: np.ndarray, classes: int, l2: float = 1e-3, iterations: int = 200,
        width: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(W, b, (mean, std)) of the logistic regression on standardised ``features`` (N, D). ``width``: pad the
  features with zero columns to this many (which changes nothing: their weights stay 0), so that probes
  of several widths share one compiled fit."""
  d = features.shape[1]
  mean, std = features.mean(0), features.std(0) + 1e-6
  x = np.zeros((len(features), max(width or d, d)), np.float32)
  x[:, :d] = (features - mean) / std
  p = _lbfgs(jnp.asarray(x), jnp.asarray(labels), classes, l2, iterations)
  return np.asarray(p["w"])[:d], np.asarray(p["b"]), np.stack([mean, std])


def accuracy(w: np.ndarray, b: np.ndarray, scaling: np.ndarray, features: np.ndarray, labels: np.ndarray) -> float:
  logits = ((features - scaling[0]) / scaling[1]) @ w + b
  return float(np.mean(np.argmax(logits, axis=1) == labels))


def probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], classes: int,
          l2: float = 1e-3, width: int | None = None) -> dict[str, Any]:
  """Train and test accuracy of the probe fitted on ``train`` (features, labels); ``width``: see ``fit``."""
  w, b, scaling = fit(*train, classes, l2, width=width)
  return {"features": int(train[0].shape[1]), "train_accuracy": accuracy(w, b, scaling, *train),
          "test_accuracy": accuracy(w, b, scaling, *test)}


def chance(train_labels: np.ndarray, test_labels: np.ndarray, classes: int) -> float:
  """The test accuracy of always answering the training split's most frequent class."""
  return float(np.mean(test_labels == np.argmax(np.bincount(train_labels, minlength=classes))))


def probes_png(stages: list[str], results: dict[str, dict], chance_level: float, title: str) -> bytes:
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(0.9 * len(stages) + 3.2, 3.4))
  depth = np.arange(1, len(stages) + 1)
  ax.plot(depth, [results[s]["test_accuracy"] for s in stages], "o-", label="test split")
  ax.plot(depth, [results[s]["train_accuracy"] for s in stages], "s--", alpha=0.7, label="training split")
  ax.axhline(chance_level, color="0.5", ls=":", label=f"chance (most frequent class) {chance_level:.3f}")
  ax.set_xticks(depth, [f"{s}\n({results[s]['features']})" for s in stages], fontsize=7)
  ax.set_xlabel("stage (pooled features)")
  ax.set_ylabel("probe accuracy")
  ax.set_ylim(0, 1.02)
  plots.grid(ax)
  ax.legend(fontsize=7)
  ax.set_title(title, fontsize=9)
  return plots.png_bytes(fig)
