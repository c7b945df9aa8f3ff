"""Per-example transforms of image records ``{"image": HxWxC, "label": int}``.

All are grain transforms so the same objects serve the streaming loader, the
evaluation pass and bring-your-own arrays. Random ones draw from the
``np.random.Generator`` grain derives from the loader seed and the record's
position, so a resumed run sees exactly the same crops and flips.

* ``ToFloat``        uint8 (or 0..pixel_max ints) -> float32 in [0, 1].
* ``Resize``         bilinear to (H, W) (the digits are upscaled 8 -> 32 for LeNet-5).
* ``ToChannels``     grey -> C copies (e.g. 3 for networks drawn for RGB).
* ``PadCropFlip``    He et al. 2015 (sec. 4.2): pad 4 zeros a side, random
                     crop back to size, random horizontal flip.
* ``RandomCrop`` / ``CenterCrop``  the course recipe (`000_*`): random 28x28
                     crops of the 32x32 image for training, the centre crop at test.
* ``Normalize``      per-channel (x - mean) / std.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import grain
import numpy as np


@functools.lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) bilinear interpolation weights, half-pixel centres, edge clamp.

  Same convention as ``jax.image.resize(method="bilinear")`` and PIL for
  upsampling (triangle kernel; for downsampling the kernel is widened by the
  scale, i.e. antialiased, as both of them do).
  """
  scale = n_out / n_in
  support = max(1.0, 1.0 / scale)
  centres = (np.arange(n_out) + 0.5) / scale - 0.5
  src = np.arange(n_in)
  w = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centres[:, None]) / support)
  w /= w.sum(axis=1, keepdims=True)
  return w.astype(np.float32)


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Bilinear resize of an HxWxC float image to ``size`` = (H', W')."""
  h, w = image.shape[:2]
  if (h, w) == tuple(size):
    return image
  ah, aw = _interp_matrix(h, size[0]), _interp_matrix(w, size[1])
  return np.einsum("oh,hwc,pw->opc", ah, image, aw).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
  pixel_max: float = 255.0

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    return {**element, "image": np.asarray(element["image"], np.float32) / np.float32(self.pixel_max)}


@dataclasses.dataclass(frozen=True)
class Resize(grain.transforms.Map):
  size: tuple[int, int]

  def map(self, element):
    return {**element, "image": resize_bilinear(element["image"], self.size)}


@dataclasses.dataclass(frozen=True)
class ToChannels(grain.transforms.Map):
  channels: int

  def map(self, element):
    img = element["image"]
    if img.shape[-1] == self.channels:
      return element
    if img.shape[-1] != 1:
      raise ValueError(f"can only replicate a 1-channel image to {self.channels}, got {img.shape}")
    return {**element, "image": np.repeat(img, self.channels, axis=-1)}


@dataclasses.dataclass(frozen=True)
class PadCropFlip(grain.transforms.RandomMap):
  """Zero-pad ``pad`` pixels a side, random crop to the input size, random h-flip."""
  pad: int = 4
  flip: bool = True

  def random_map(self, element, rng: np.random.Generator):
    img = element["image"]
    h, w = img.shape[:2]
    p = self.pad
    padded = np.pad(img, ((p, p), (p, p), (0, 0)))
    y, x = rng.integers(0, 2 * p + 1, size=2)
    out = padded[y:y + h, x:x + w]
    if self.flip and rng.random() < 0.5:
      out = out[:, ::-1]
    return {**element, "image": np.ascontiguousarray(out)}


@dataclasses.dataclass(frozen=True)
class RandomCrop(grain.transforms.RandomMap):
  """A random ``size`` crop (no padding), optionally with a random h-flip."""
  size: tuple[int, int]
  flip: bool = False

  def random_map(self, element, rng: np.random.Generator):
    img = element["image"]
    h, w = img.shape[:2]
    ch, cw = self.size
    if ch > h or cw > w:
      raise ValueError(f"crop {self.size} is larger than the image {img.shape[:2]}")
    y = rng.integers(0, h - ch + 1)
    x = rng.integers(0, w - cw + 1)
    out = img[y:y + ch, x:x + cw]
    if self.flip and rng.random() < 0.5:
      out = out[:, ::-1]
    return {**element, "image": np.ascontiguousarray(out)}


@dataclasses.dataclass(frozen=True)
class CenterCrop(grain.transforms.Map):
  size: tuple[int, int]

  def map(self, element):
    img = element["image"]
    h, w = img.shape[:2]
    ch, cw = self.size
    y, x = (h - ch) // 2, (w - cw) // 2
    return {**element, "image": img[y:y + ch, x:x + cw]}


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def map(self, element):
    img = element["image"]
    mean = np.asarray(self.mean, np.float32)
    std = np.asarray(self.std, np.float32)
    return {**element, "image": ((img - mean) / std).astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class SelectKeys(grain.transforms.Map):
  """Keeps only the keys the model and loss use (drops e.g. TFDS ids)."""
  keys: tuple[str, ...]

  def map(self, element):
    return {k: np.asarray(element[k]) for k in self.keys}
