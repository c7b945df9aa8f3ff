"""Densely connected CNNs (the lecture notes "Design", "Dense"): DenseNet-BC (Huang et al. 2017).

`densenet121/161/169/201/264` follow Table 1 of the paper in torchvision's
layout: conv7x7/2 + BN-ReLU + 3x3/2 max pool (224 -> 56), four dense blocks on
56, 28, 14 and 7 maps separated by transitions (BN-ReLU-conv1x1 to
floor(theta*m) maps, 2x2 average pool), a final BN-ReLU, global average pool
and a linear classifier. ``growth_rate`` (k), ``compression`` (theta, the
transition reduction), ``bn_size`` (bottleneck width = bn_size * k) and
``block_config`` are parameters.

The blocks (section 3): `DenseLayer` (DenseNet-B's bottleneck, two BN-ReLU-conv
composite functions H_l, `layers.BNActConv`), `DenseBlock` and `Transition`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.heads import ImageClassifier, attach_head
from xnn.models.layers import BNActConv, bn_act, conv
from xnn.models.pooling import avg_pool, max_pool
from xnn.models.registry import register


class DenseLayerOptions(nn.Module):
  """Options of a dense layer: growth rate k, bottleneck width ``bn_size`` * k, dropout after the layer."""
  growth_rate: int = 32
  bn_size: int = 4
  drop_rate: float = 0.0
  dtype: Any = jnp.float32


class DenseLayer(DenseLayerOptions):
  """DenseNet-B bottleneck layer: BN-ReLU-conv1x1 (bn_size*k) -> BN-ReLU-conv3x3 (k)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = BNActConv(self.bn_size * self.growth_rate, 1, dtype=self.dtype, name="bottleneck")(x, train)
    y = BNActConv(self.growth_rate, 3, dtype=self.dtype, name="conv")(y, train)
    if self.drop_rate:
      y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    return y


class DenseBlock(DenseLayerOptions):
  """`num_layers` dense layers of these options, each fed the concatenation of all earlier maps (eq. 2)."""
  num_layers: int = 6

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i in range(self.num_layers):
      y = DenseLayer(self.growth_rate, self.bn_size, self.drop_rate, self.dtype, name=f"layer{i + 1}")(x, train)
      x = jnp.concatenate([x, y], axis=-1)
    return x


class Transition(nn.Module):
  """Transition layer: BN-ReLU-conv1x1 to floor(theta*m) maps, 2x2 average pool (sec. 3)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = BNActConv(self.features, 1, dtype=self.dtype, name="conv")(x, train)
    return avg_pool(x, 2, 2)


def transition_features(channels: int, compression: float) -> int:
  """Output channels of a transition: floor(theta * m) (Huang et al. 2017, sec. 3)."""
  return int(math.floor(channels * compression))


class DenseNet(ImageClassifier):
  """DenseNet-BC (Huang et al. 2017, Table 1); see the module docstring."""
  block_config: tuple[int, ...] = (6, 12, 24, 16)
  growth_rate: int = 32
  num_init_features: int = 64
  compression: float = 0.5
  bn_size: int = 4
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    x = bn_act(conv(self.num_init_features, 7, 2, 3, dtype=d, name="conv0")(x), train, d, name="norm0")
    self.sow("intermediates", "stem", x)                        # 112x112
    x = max_pool(x, 3, 2, 1)
    for i, n in enumerate(self.block_config):
      x = DenseBlock(self.growth_rate, self.bn_size, self.drop_rate, d, num_layers=n, name=f"block{i + 1}")(x, train)
      if i == len(self.block_config) - 1:
        x = bn_act(x, train, d, name="norm5")
      self.sow("intermediates", f"stage{i + 1}", x)             # 56, 28, 14, 7
      if i < len(self.block_config) - 1:
        x = Transition(transition_features(x.shape[-1], self.compression), d,
                       name=f"transition{i + 1}")(x, train)
    return attach_head(self, x, train, dropout=0.0)   # pool, then classify (torchvision)


# Huang et al. 2017, Table 1 (densenet161: k=48, 96 initial maps, as torchvision).
DENSENETS = {
    "densenet121": dict(block_config=(6, 12, 24, 16)),
    "densenet161": dict(block_config=(6, 12, 36, 24), growth_rate=48, num_init_features=96),
    "densenet169": dict(block_config=(6, 12, 32, 32)),
    "densenet201": dict(block_config=(6, 12, 48, 32)),
    "densenet264": dict(block_config=(6, 12, 64, 48)),
}

for _name, _cfg in DENSENETS.items():
  register(_name, family="dense", input_shape=(224, 224, 3),
           description=f"DenseNet-BC {_name[8:]} (Huang et al. 2017, Table 1)", **_cfg)(DenseNet)
