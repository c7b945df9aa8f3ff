"""Shared layers: explicitly padded convolution, conv-BN-activation, heads.

Padding is always explicit and symmetric (``((p, p), (p, p))``), as in the
papers and in PyTorch, so spatial sizes follow the published tables
(224 -> 112 -> 56 -> 28 -> 14 -> 7) rather than TensorFlow's asymmetric SAME.
BatchNorm uses PyTorch's defaults (momentum 0.1 on the new value, i.e. Flax
momentum 0.9; epsilon 1e-5) so parameter and statistic semantics match the
reference implementations the parameter-count tests cite.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from xnn.ops.conv import backend_conv

Dtype = Any

# Every convolution of the zoo: on the CPU backend xnn.ops.conv (oneDNN's kernels, or
# pure-JAX gradients XLA:CPU runs fast inside lax.scan too), elsewhere lax's.
Conv = functools.partial(nn.Conv, conv_general_dilated=backend_conv)

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def same_padding(kernel: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding that keeps the size at stride 1: p = d*(k-1)/2 (odd k)."""
  p = dilation * (kernel - 1) // 2
  return ((p, p), (p, p))


def conv(features: int, kernel: int | Sequence[int], stride: int = 1,
         padding: int | None = None, *, groups: int = 1, dilation: int = 1,
         use_bias: bool = False, dtype: Dtype = jnp.float32,
         name: str | None = None, **kw: Any) -> nn.Conv:
  """A 2-D convolution with explicit symmetric padding (default: 'same' at stride 1).

  Uses ``xnn.ops.conv.backend_conv`` (on the CPU: oneDNN's kernels where available).
  """
  k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  if padding is None:
    pad = tuple(((dilation * (kk - 1)) // 2,) * 2 for kk in k)
  elif isinstance(padding, int):
    pad = ((padding, padding), (padding, padding))
  else:
    pad = padding
  return Conv(features, k, strides=(stride, stride), padding=pad,
              feature_group_count=groups, kernel_dilation=(dilation, dilation),
              use_bias=use_bias, dtype=dtype, name=name, **kw)


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None,
               scale_init: Callable = nn.initializers.ones, **kw: Any) -> nn.BatchNorm:
  """BatchNorm with PyTorch-equivalent momentum/epsilon; stats stay float32."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, dtype=dtype, param_dtype=jnp.float32,
                      scale_init=scale_init, name=name, **kw)


class ConvBN(nn.Module):
  """Convolution -> BatchNorm -> activation (activation `None` for linear)."""
  features: int
  kernel: int | Sequence[int] = 3
  stride: int = 1
  padding: Any = None
  groups: int = 1
  dilation: int = 1
  act: Callable[[jnp.ndarray], jnp.ndarray] | None = nn.relu
  bn_zero_init: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv(self.features, self.kernel, self.stride, self.padding, groups=self.groups,
             dilation=self.dilation, dtype=self.dtype, name="conv")(x)
    x = batch_norm(train, self.dtype, name="bn",
                   scale_init=nn.initializers.zeros if self.bn_zero_init else nn.initializers.ones)(x)
    return x if self.act is None else self.act(x)


class ClassifierHead(nn.Module):
  """Global average pooling followed by a linear classifier (the default head)."""
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
