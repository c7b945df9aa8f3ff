"""Shared layers: explicitly padded convolution, BatchNorm, the conv/BN/activation units, LRN.

Padding is always explicit and symmetric (``((p, p), (p, p))``), as in the
papers and in PyTorch, so spatial sizes follow the published tables
(224 -> 112 -> 56 -> 28 -> 14 -> 7) rather than TensorFlow's asymmetric SAME.
BatchNorm uses PyTorch's defaults (momentum 0.1 on the new value, i.e. Flax
momentum 0.9; epsilon 1e-5) so parameter and statistic semantics match the
reference implementations the parameter-count tests cite.

The three orderings of convolution, BatchNorm and activation of the zoo:

* `ConvBN`      conv -> BN -> act (post-activation; act ``None`` for a linear
                unit, e.g. the ``Projection`` shortcut of the residual blocks).
* `BNActConv`   BN -> act -> conv (pre-activation: DenseNet's composite
                function H_l, Huang et al. 2017 sec. 3; the DPN units).
* `bn_act`, `BNAct`  BN -> act alone, where the convolution that follows is
                separate (He et al. 2016, "Identity Mappings", Fig. 4e: the
                projection shortcut reads the pre-activated input).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xnn.ops import backend_conv

Dtype = Any
Act = Callable[[jnp.ndarray], jnp.ndarray]

# Every convolution of the zoo: on the CPU backend xnn.ops' kernels (oneDNN's, or
# pure-JAX gradients XLA:CPU runs fast inside lax.scan too), elsewhere lax's.
Conv = functools.partial(nn.Conv, conv_general_dilated=backend_conv)

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv(features: int, kernel: int | Sequence[int], stride: int = 1,
         padding: int | None = None, *, groups: int = 1, dilation: int = 1,
         use_bias: bool = False, dtype: Dtype = jnp.float32,
         name: str | None = None, **kw: Any) -> nn.Conv:
  """A 2-D convolution with explicit symmetric padding (default: 'same' at stride 1).

  Uses ``xnn.ops.backend_conv`` (on the CPU: oneDNN's kernels where available).
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
  """Convolution -> BatchNorm -> activation (activation `None` for linear).

  ``use_scale=False`` drops the BatchNorm scale (beta only), as the Keras
  Inception-ResNet-v2 does (``BatchNormalization(scale=False)``).
  """
  features: int
  kernel: int | Sequence[int] = 3
  stride: int = 1
  padding: Any = None
  groups: int = 1
  dilation: int = 1
  act: Act | None = nn.relu
  bn_zero_init: bool = False
  use_scale: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv(self.features, self.kernel, self.stride, self.padding, groups=self.groups,
             dilation=self.dilation, dtype=self.dtype, name="conv")(x)
    x = batch_norm(train, self.dtype, name="bn", use_scale=self.use_scale,
                   scale_init=nn.initializers.zeros if self.bn_zero_init else nn.initializers.ones)(x)
    return x if self.act is None else self.act(x)


def bn_act(x: jnp.ndarray, train: bool, dtype: Dtype = jnp.float32, name: str = "bn",
           act: Act = nn.relu) -> jnp.ndarray:
  """BN -> activation, the BatchNorm a submodule ``name`` of the calling module."""
  return act(batch_norm(train, dtype, name=name)(x))


class BNAct(nn.Module):
  """BN -> activation as a module of its own (parameters under ``<name>/bn``)."""
  act: Act = nn.relu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    return bn_act(x, train, self.dtype, act=self.act)


class BNActConv(nn.Module):
  """BN -> activation -> convolution (no bias, 'same' padding), submodules ``bn`` and ``conv``."""
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  act: Act = nn.relu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = bn_act(x, train, self.dtype, act=self.act)
    return conv(self.features, self.kernel, self.stride, groups=self.groups, dtype=self.dtype, name="conv")(x)


class LRN(nn.Module):
  """Local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3).

  b_i = a_i / (k + alpha' * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, where alpha' is
  ``alpha`` (the paper's formula) or ``alpha / size`` when ``alpha_over_size``
  (Caffe's and PyTorch's convention). The paper uses k=2, n=5, alpha=1e-4,
  beta=0.75; Caffe's reference prototxt uses k=1 with alpha/n.
  """
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0
  alpha_over_size: bool = False

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    half = self.size // 2
    sq = jnp.square(x.astype(jnp.float32))
    s = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, 1, 1, self.size), (1, 1, 1, 1),
                              ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)))
    alpha = self.alpha / self.size if self.alpha_over_size else self.alpha
    return (x / jnp.power(self.k + alpha * s, self.beta).astype(x.dtype)).astype(x.dtype)
