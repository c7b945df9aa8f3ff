"""Batch-level preprocessing and augmentation, vectorised with NumPy.

Everything works on a whole host batch at once (``images``: (B, H, W, C)), so the
per-example Python cost of an input pipeline disappears. Random augmentations
take their parameters as arrays (one entry per example), drawn by
:func:`draw_params` from the config seed and the *global* batch index, so the
crops and flips of an example do not depend on how many hosts share the batch.

* ``to_float``        0..pixel_max -> float32 in [0, 1].
* ``resize``          bilinear to (H, W) (the digits are upscaled 8 -> 32 for LeNet-5).
* ``to_channels``     grey -> C copies (e.g. 3 for networks drawn for RGB).
* ``pad_crop_flip``   He et al. 2015 (sec. 4.2): pad 4 zeros a side, random crop
                      back to size, random horizontal flip.
* ``random_crop`` / ``center_crop``  the course recipe (the course's design homework):
                      random 28x28 crops of the 32x32 image for training, the centre
                      crop at test.
* ``normalize``       per-channel (x - mean) / std.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

# The names config.data takes (xnn.configs.schema checks them; every input path supports them all).
AUGMENTATIONS = ("none", "pad_crop_flip", "random_crop")   # data.augment
NORMALIZATIONS = ("per_channel", "minus_one_one", "none")   # data.normalize
SEQUENCE_READINGS = ("", "rows", "pixels")                  # data.as_sequence: images as (H, W*C) or (H*W, C)


@functools.lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) bilinear interpolation weights, half-pixel centres, edge clamp.

  Same convention as ``jax.image.resize(method="bilinear")`` (triangle kernel;
  for downsampling the kernel is widened by the scale, i.e. antialiased).
  """
  scale = n_out / n_in
  support = max(1.0, 1.0 / scale)
  centres = (np.arange(n_out) + 0.5) / scale - 0.5
  src = np.arange(n_in)
  w = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centres[:, None]) / support)
  w /= w.sum(axis=1, keepdims=True)
  return w.astype(np.float32)


def to_float(images: np.ndarray, pixel_max: float) -> np.ndarray:
  return np.asarray(images, np.float32) * np.float32(1.0 / pixel_max)


def resize(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Bilinear resize of (B, H, W, C) images to (B, size[0], size[1], C)."""
  h, w = images.shape[1:3]
  if (h, w) == tuple(size):
    return images
  ah, aw = _interp_matrix(h, size[0]), _interp_matrix(w, size[1])
  return np.einsum("oh,bhwc,pw->bopc", ah, images, aw, optimize=True).astype(np.float32)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
  if images.shape[-1] == channels:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f"can only replicate 1-channel images to {channels}, got shape {images.shape}")
  return np.repeat(images, channels, axis=-1)


def _windows(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, size: tuple[int, int],
             flip: np.ndarray | None) -> np.ndarray:
  """Per-example (dy, dx) windows of ``size``, mirrored where ``flip``; one gather."""
  b = images.shape[0]
  rows = dy[:, None] + np.arange(size[0])[None, :]
  cols = dx[:, None] + np.arange(size[1])[None, :]
  if flip is not None:
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return images[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_crop_flip(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray | None,
                  pad: int) -> np.ndarray:
  """Zero-pad ``pad`` pixels a side, crop back at offsets (dy, dx) in [0, 2*pad], flip."""
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return _windows(padded, dy, dx, images.shape[1:3], flip)


def random_crop(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray | None,
                size: tuple[int, int]) -> np.ndarray:
  h, w = images.shape[1:3]
  if size[0] > h or size[1] > w:
    raise ValueError(f"crop {tuple(size)} is larger than the images {(h, w)}")
  return _windows(images, dy, dx, size, flip)


def center_crop(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  h, w = images.shape[1:3]
  y, x = (h - size[0]) // 2, (w - size[1]) // 2
  return images[:, y:y + size[0], x:x + size[1]]


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  mean = np.asarray(mean, np.float32)
  inv = np.float32(1.0) / np.asarray(std, np.float32)
  return (images - mean) * inv


def draw_params(seed: int, batch_index: int, global_batch: int, max_dy: int, max_dx: int,
                flip: bool) -> dict[str, np.ndarray]:
  """Crop offsets in [0, max] and flip flags for every example of a global batch."""
  rng = np.random.default_rng([seed, batch_index])
  return {"dy": rng.integers(0, max_dy + 1, global_batch), "dx": rng.integers(0, max_dx + 1, global_batch),
          "flip": rng.random(global_batch) < 0.5 if flip else None}
