"""Residual CNNs (lecture 002, "Residual").

CIFAR networks of He et al. 2015, "Deep Residual Learning for Image
Recognition", section 4.2: a 3x3 conv of 16, then 3 stages of n basic blocks
with 16/32/64 filters on 32/16/8 maps, global average pooling and a linear
layer: 6n+2 weighted layers. Shortcut option A (identity; stride-2 subsampling
and zero-padded channels where the shape changes, no parameters) or option B
(1x1 convolution + BN projection where the shape changes). The plain networks
are the same stacks without shortcuts.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.heads import Head
from xnn.models.layers import ConvBN, batch_norm, conv
from xnn.models.registry import register


class CifarBasicBlock(nn.Module):
  """Two 3x3 conv-BN layers; relu(F(x) + shortcut(x)) or relu(F(x)) when plain."""
  features: int
  stride: int = 1
  shortcut: str = "A"          # "A" | "B" | "none" (plain network)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = ConvBN(self.features, 3, self.stride, dtype=self.dtype, name="conv_bn1")(x, train)
    y = ConvBN(self.features, 3, 1, act=None, dtype=self.dtype, name="conv_bn2")(y, train)
    if self.shortcut == "none":
      return nn.relu(y)
    if x.shape[-1] != self.features or self.stride != 1:
      if self.shortcut == "A":
        x = x[:, ::self.stride, ::self.stride, :]
        extra = self.features - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
      elif self.shortcut == "B":
        x = conv(self.features, 1, self.stride, 0, dtype=self.dtype, name="proj")(x)
        x = batch_norm(train, self.dtype, name="proj_bn")(x)
      else:
        raise ValueError(f"shortcut must be 'A', 'B' or 'none', got {self.shortcut!r}")
    return nn.relu(y + x)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 inputs (He et al. 2015, section 4.2)."""
  depth: int = 20
  num_classes: int = 10
  shortcut: str = "A"
  widths: tuple[int, ...] = (16, 32, 64)
  head: str = "gap_linear"
  head_kwargs: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
    n = (self.depth - 2) // 6
    x = ConvBN(self.widths[0], 3, dtype=self.dtype, name="stem")(x, train)
    for s, w in enumerate(self.widths):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        x = CifarBasicBlock(w, stride, self.shortcut, self.dtype, name=f"stage{s + 1}_block{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 1}", x)
    return Head(self.num_classes, self.head, dtype=self.dtype, name="head",
                **(self.head_kwargs or {}))(x, train)


def _cifar(depth: int, plain: bool):
  def factory(shortcut: str = "A", **kw: Any) -> nn.Module:
    return CifarResNet(depth=depth, shortcut="none" if plain else shortcut, **kw)
  kind = "plain" if plain else "resnet"
  factory.__doc__ = (f"{'Plain' if plain else 'Residual'} CIFAR network of depth {depth} "
                     f"(He et al. 2015, 6n+2 with n={(depth - 2) // 6}).")
  return factory


for _d in (20, 32, 44, 56, 110, 1202):
  register(f"resnet{_d}", family="residual", input_shape=(32, 32, 3), num_classes=10)(_cifar(_d, False))
for _d in (20, 32, 44, 56, 110):
  register(f"plain{_d}", family="residual", input_shape=(32, 32, 3), num_classes=10)(_cifar(_d, True))
