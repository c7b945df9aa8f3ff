"""Saliency: which input values the predicted class score depends on.

* ``gradient``: d S_c / d x at the input, S_c the score (logit) of the predicted class c (Simonyan,
  Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks", sec. 3.1); shown as max_channels |.|.
* ``smoothgrad``: the gradient averaged over copies of the input with Gaussian noise of standard deviation
  ``noise`` x (max - min of the input) (Smilkov et al. 2017, "SmoothGrad", eq. 3; 10-20% noise, sec. 3.2).
* ``integrated_gradients``: (x - x') * the mean of the gradient along the straight path from the baseline x'
  to x, a right Riemann sum over ``steps`` points (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for
  Deep Networks", eq. 3); its values sum to S_c(x) - S_c(x') ("completeness", their Proposition 1).

``score`` is any function of an input batch returning one score per example; ``class_score`` makes the
predicted-class score of a classifier's logits. Examples are independent (BatchNorm in inference mode), so
the gradient of the summed scores is every example's own gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from xnn import plots


def class_score(logits_fn: Callable, classes: Any) -> Callable:
  """``x -> logits_fn(x)[n, classes[n]]``: the score of a fixed class per example."""
  classes = jnp.asarray(classes)

  def score(x):
    logits = logits_fn(x)
    return jnp.take_along_axis(logits, classes[:, None], axis=-1)[:, 0]

  return score


def gradient(score: Callable, x: Any) -> np.ndarray:
  """d score_n / d x_n for every example n of the batch ``x``."""
  return np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(score(x))))(jnp.asarray(x)))


def smoothgrad(score: Callable, x: Any, key: Any, samples: int = 32, noise: float = 0.15) -> np.ndarray:
  """Smilkov et al. 2017, eq. 3: the mean gradient over ``samples`` noisy copies of each example."""
  grad = jax.grad(lambda x: jnp.sum(score(x)))

  @jax.jit
  def run(x, key):
    sigma = noise * (jnp.max(x) - jnp.min(x))

    def one(carry, k):
      return carry + grad(x + sigma * jax.random.normal(k, x.shape, x.dtype)), None

    return jax.lax.scan(one, jnp.zeros_like(x), jax.random.split(key, samples))[0] / samples

  return np.asarray(run(jnp.asarray(x), key))


def integrated_gradients(score: Callable, x: Any, baseline: Any = None, steps: int = 32) -> np.ndarray:
  """Sundararajan et al. 2017, eq. 3 (Riemann sum at alpha = k/steps, k = 1..steps); baseline: zeros."""
  x = jnp.asarray(x)
  baseline = jnp.zeros_like(x) if baseline is None else jnp.asarray(baseline)
  grad = jax.grad(lambda x: jnp.sum(score(x)))

  @jax.jit
  def run(x, baseline):
    def one(carry, alpha):
      return carry + grad(baseline + alpha * (x - baseline)), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(x), jnp.arange(1, steps + 1, dtype=x.dtype) / steps)
    return (x - baseline) * total / steps

  return np.asarray(run(x, baseline))


def heat(attribution: np.ndarray) -> np.ndarray:
  """An image's (H, W, C) attribution as one (H, W) map: max over channels of |.| (Simonyan et al. sec. 3.1);
  a sequence's (T, F) as it is, in absolute value."""
  a = np.abs(np.asarray(attribution, np.float32))
  return a.max(axis=-1) if a.ndim == 3 else a


def saliency_png(images: np.ndarray | None, maps: dict[str, np.ndarray], captions: list[str], title: str,
                 sequences: np.ndarray | None = None) -> bytes:
  """One row per example: the input, then each attribution map of ``maps`` ({name: (K, ...)}) overlaid on
  it (each scaled to its own largest value). Without ``images`` (K, H, W, 3), the (K, T, F) ``sequences``
  are drawn as they are and the maps beside them."""
  plt = plots.pyplot()
  k = len(captions)
  cols = 1 + len(maps)
  fig, axes = plt.subplots(k, cols, figsize=(0.4 + 1.7 * cols, 0.4 + 1.75 * k), squeeze=False)
  for i in range(k):
    ax = axes[i][0]
    if images is not None:
      ax.imshow(np.clip(images[i], 0, 1), interpolation="nearest")
    elif sequences is not None:
      ax.imshow(np.asarray(sequences[i], np.float32), cmap="gray", interpolation="nearest")
    ax.set_ylabel(captions[i], fontsize=7)
    for j, (name, m) in enumerate(maps.items(), start=1):
      ax = axes[i][j]
      h = heat(m[i])
      if images is not None:
        ax.imshow(images[i].mean(axis=-1), cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        ax.imshow(h, cmap="inferno", alpha=0.7, interpolation="nearest", vmin=0, vmax=max(float(h.max()), 1e-12))
      else:
        ax.imshow(h, cmap="inferno", interpolation="nearest")
      if i == 0:
        ax.set_title(name, fontsize=8)
    if i == 0:
      axes[i][0].set_title("input", fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  return plots.png_bytes(fig)
