"""Pooling over NHWC maps with PyTorch's semantics, the one definition the zoo uses.

* `max_pool`: explicit symmetric padding (padded cells never win) and the
  optional ``ceil_mode`` GoogLeNet and SqueezeNet use.
* `avg_pool`: explicit symmetric padding and the ``count_include_pad`` switch
  (Inception-v4 and Inception-ResNet-v2 average over the valid cells only).
* `adaptive_avg_pool`: ``AdaptiveAvgPool2d``, the pool torchvision's AlexNet
  and VGG put before their classifier.

Kernel and stride are always given by the caller; padding defaults to 0, as in PyTorch.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _pool_pad(size: int, k: int, s: int, p: int, ceil_mode: bool) -> tuple[int, int]:
  """(left, right) padding reproducing PyTorch's output size, ceil_mode included."""
  if not ceil_mode:
    return (p, p)
  out = -(-(size + 2 * p - k) // s) + 1
  if (out - 1) * s >= size + p:   # PyTorch: the last window must start inside the input
    out -= 1
  return (p, max(p, (out - 1) * s + k - size - p))


def max_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
  """Max pooling over NHWC with PyTorch's padding and ``ceil_mode`` semantics."""
  pads = tuple(_pool_pad(x.shape[a], kernel, stride, padding, ceil_mode) for a in (1, 2))
  return nn.max_pool(x, (kernel, kernel), (stride, stride), padding=pads)


def avg_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0,
             count_include_pad: bool = True) -> jnp.ndarray:
  """Average pooling over NHWC (PyTorch's ``count_include_pad`` switch)."""
  return nn.avg_pool(x, (kernel, kernel), (stride, stride),
                     padding=((padding, padding), (padding, padding)),
                     count_include_pad=count_include_pad)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging matrix: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
  m = np.zeros((out, size), np.float32)
  for i in range(out):
    lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x: jnp.ndarray, output_size: int | tuple[int, int]) -> jnp.ndarray:
  """PyTorch's ``AdaptiveAvgPool2d``: any H x W -> output_size, bins as in PyTorch.

  Smaller inputs are spread over several bins (a 1x1 map becomes a constant
  7x7 map), so AlexNet/VGG's flatten head sees the same size at any resolution.
  """
  oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
  h, w = x.shape[1], x.shape[2]
  if (h, w) == (oh, ow):
    return x
  ph = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
  pw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
  return jnp.einsum("oh,nhwc,pw->nopc", ph, x, pw)
