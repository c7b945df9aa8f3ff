"""Feature visualisation: an input optimised to excite one channel or one class (Olah, Mordvintsev &
Schubert 2017, "Feature Visualization", Distill; Lucid).

The image is not optimised pixel by pixel, which gives high-frequency noise, but through the three
regularisers of the article:

* a decorrelated parameterisation (its section "Preconditioning and Parameterization"; Mordvintsev et al.
  2018, "Differentiable Image Parameterizations"): the image is the real part of the inverse Fourier
  transform of a spectrum whose coefficients are scaled by 1/f (so every frequency starts equally easy to
  change), its channels mixed by the square root of the data's channel covariance (colour decorrelation),
  and a sigmoid maps it into [0, 1];
* jitter (transformation robustness): each step sees the image shifted by a random number of pixels in
  [-jitter, jitter] along each axis;
* blur (frequency penalisation): each step sees it blurred by a Gaussian of standard deviation ``blur``
  pixels.

The objective -- the mean over positions of one channel of a stage, or one class's logit -- is maximised
with Adam. ``visualise`` also records, before each step and after the last, the objective of the image as it
is (no jitter, no blur): ``history`` (steps + 1, B).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xnn import plots


@dataclasses.dataclass(frozen=True)
class Settings:
  steps: int = 256
  learning_rate: float = 0.05          # Adam, as Lucid's render_vis
  jitter: int = 1                      # pixels
  blur: float = 0.5                    # pixels (standard deviation); 0: none
  decorrelate: bool = True             # Fourier + colour parameterisation; False: a sigmoid of raw pixels
  # standard deviation of the initial parameters: a noisy start (Lucid's 0.01 is near-grey), so that a channel
  # behind a ReLU that a flat grey image leaves at zero -- and without a gradient -- has one
  init_scale: float = 0.3
  seed: int = 0


def colour_sqrt(covariance: Any) -> np.ndarray:
  """The square root U sqrt(S) of a channel covariance U S U^T, scaled so its largest column has norm 1."""
  u, s, _ = np.linalg.svd(np.asarray(covariance, np.float64))
  root = u * np.sqrt(np.maximum(s, 0.0))
  return (root / max(np.linalg.norm(root, axis=0).max(), 1e-12)).astype(np.float32)


def _frequencies(n: int) -> np.ndarray:
  """|f| (cycles per pixel) of the n coefficients of an n-point discrete Fourier transform."""
  return np.abs(np.fft.fftfreq(n))


def _fourier_basis(n: int) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin) parts of the n-point inverse DFT, exp(2 pi i k m / n) / sqrt(n), as (n, n) real matrices: small
  images are transformed by two matrix products, which XLA compiles far faster than its FFT."""
  angle = 2.0 * np.pi * np.outer(np.arange(n), np.arange(n)) / n
  return (np.cos(angle) / np.sqrt(n)).astype(np.float32), (np.sin(angle) / np.sqrt(n)).astype(np.float32)


class Image:
  """An image batch (B, H, W, C) in [0, 1] as a function of parameters (decorrelated, or raw pixels)."""

  def __init__(self, shape: tuple[int, int, int, int], decorrelate: bool, colour: np.ndarray | None,
               init_scale: float = 0.01):
    self.shape, self.decorrelate, self.init_scale = shape, decorrelate, init_scale
    b, h, w, c = shape
    self.colour = jnp.asarray(colour if colour is not None and colour.shape == (c, c) else np.eye(c, dtype=np.float32))
    f = np.sqrt(_frequencies(h)[:, None] ** 2 + _frequencies(w)[None, :] ** 2)
    self.scale = jnp.asarray(1.0 / np.maximum(f, 1.0 / max(h, w)), jnp.float32)
    self.rows, self.cols = _fourier_basis(h), _fourier_basis(w)

  def init(self, key: Any) -> Any:
    b, h, w, c = self.shape
    if not self.decorrelate:
      return self.init_scale * jax.random.normal(key, self.shape)
    return self.init_scale * jax.random.normal(key, (2, b, h, w, c))

  def __call__(self, param: Any) -> Any:
    if not self.decorrelate:
      return jax.nn.sigmoid(param)
    (ch, sh), (cw, sw) = self.rows, self.cols
    re, im = param[0] * self.scale[:, :, None], param[1] * self.scale[:, :, None]
    # the real part of the inverse DFT of the spectrum re + i im, along rows then columns
    t_re = jnp.einsum("hu,buvc->bhvc", ch, re) - jnp.einsum("hu,buvc->bhvc", sh, im)
    t_im = jnp.einsum("hu,buvc->bhvc", sh, re) + jnp.einsum("hu,buvc->bhvc", ch, im)
    x = (jnp.einsum("wv,bhvc->bhwc", cw, t_re) - jnp.einsum("wv,bhvc->bhwc", sw, t_im)) / 4.0
    return jax.nn.sigmoid(x @ self.colour.T)


def _gaussian_circulant(n: int, sigma: float) -> np.ndarray:
  """The (n, n) matrix of a periodic Gaussian blur: row i holds exp(-d^2 / 2 sigma^2) over the wrapped distance
  d = |i - j| (mod n), normalised to sum 1."""
  d = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
  d = np.minimum(d, n - d)
  g = np.exp(-0.5 * (d / sigma) ** 2)
  return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def blur(x: Any, sigma: float) -> Any:
  """A Gaussian blur of standard deviation ``sigma`` pixels of (B, H, W, C), periodic at the borders."""
  if sigma <= 0:
    return x
  h, w = x.shape[1:3]
  return jnp.einsum("hi,bijc,wj->bhwc", _gaussian_circulant(h, sigma), x, _gaussian_circulant(w, sigma))


def jitter(x: Any, key: Any, pixels: int) -> Any:
  if pixels <= 0:
    return x
  dy, dx = jax.random.randint(key, (2,), -pixels, pixels + 1)
  return jnp.roll(x, (dy, dx), axis=(1, 2))


def visualise(objective: Callable, shape: tuple[int, int, int, int], settings: Settings = Settings(),
              colour: np.ndarray | None = None, to_model: Callable = lambda x: x) -> tuple[np.ndarray, np.ndarray]:
  """(images (B, H, W, C) in [0, 1], history (steps + 1, B)): each image b optimised to raise
  ``objective(to_model(images))[b]``. ``to_model`` maps [0, 1] images to the model's input (its
  normalisation); ``colour``: the decorrelating channel mixing (``colour_sqrt``)."""
  image = Image(shape, settings.decorrelate, colour, settings.init_scale)
  key_init, key_steps = jax.random.split(jax.random.key(settings.seed))
  param = image.init(key_init)
  opt = optax.adam(settings.learning_rate)

  def seen(p, key):
    return blur(jitter(image(p), key, settings.jitter), settings.blur)

  def loss(p, key):
    return -jnp.sum(objective(to_model(seen(p, key))))

  def step(carry, key):
    p, state = carry
    clean = objective(to_model(image(p)))
    grads = jax.grad(loss)(p, key)
    updates, state = opt.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), clean

  @jax.jit
  def run(p):
    (p, _), history = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key_steps, settings.steps))
    return image(p), jnp.concatenate([history, objective(to_model(image(p)))[None]])

  images, history = run(param)
  return np.asarray(images), np.asarray(history)


def feature_vis_png(images: np.ndarray, labels: list[str], title: str, per_row: int = 8) -> bytes:
  """The optimised images as a grid (grey when the data's channels are one grey value replicated)."""
  tiles = [im if im.shape[-1] == 3 else im.mean(axis=-1) for im in images]
  rows = [tiles[i:i + per_row] for i in range(0, len(tiles), per_row)]
  cols = [labels[i:i + per_row] for i in range(0, len(labels), per_row)]
  fig = plots.image_grid(rows, col_labels=cols, cmap="gray", title=title, tile_inches=1.2)
  return plots.png_bytes(fig)
