"""Densely connected CNNs (lecture 002, "Dense"): DenseNet-BC (Huang et al. 2017).

`densenet121/161/169/201/264` follow Table 1 of the paper in torchvision's
layout: conv7x7/2 + BN-ReLU + 3x3/2 max pool (224 -> 56), four dense blocks on
56, 28, 14 and 7 maps separated by transitions (BN-ReLU-conv1x1 to
floor(theta*m) maps, 2x2 average pool), a final BN-ReLU, global average pool
and a linear classifier. ``growth_rate`` (k), ``compression`` (theta, the
transition reduction), ``bn_size`` (bottleneck width = bn_size * k) and
``block_config`` are parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models import blocks as B
from xnn.models.layers import batch_norm, conv
from xnn.models.registry import register


class DenseNet(nn.Module):
  """DenseNet-BC (Huang et al. 2017, Table 1); see the module docstring."""
  block_config: tuple[int, ...] = (6, 12, 24, 16)
  growth_rate: int = 32
  num_init_features: int = 64
  compression: float = 0.5
  bn_size: int = 4
  drop_rate: float = 0.0
  num_classes: int = 1000
  head: str = "gap_linear"
  head_kwargs: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    x = conv(self.num_init_features, 7, 2, 3, dtype=d, name="conv0")(x)
    x = nn.relu(batch_norm(train, d, name="norm0")(x))
    self.sow("intermediates", "stem", x)                        # 112x112
    x = B.max_pool(x, 3, 2, 1)
    for i, n in enumerate(self.block_config):
      x = B.DenseBlock(n, self.growth_rate, self.bn_size, self.drop_rate, d, name=f"block{i + 1}")(x, train)
      if i == len(self.block_config) - 1:
        x = nn.relu(batch_norm(train, d, name="norm5")(x))
      self.sow("intermediates", f"stage{i + 1}", x)             # 56, 28, 14, 7
      if i < len(self.block_config) - 1:
        x = B.Transition(B.transition_features(x.shape[-1], self.compression), d,
                         name=f"transition{i + 1}")(x, train)
    return B.dropout_then_head(self, x, 0.0, train)


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
