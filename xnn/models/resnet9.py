"""ResNet-9: D. Page's fast CIFAR-10 network ("How to train your ResNet", 2018).

The DAWNBench-winning residual network (the "Residual" family of the lecture notes "Design"): 94% on
CIFAR-10 in 24 epochs.  Layout, from Page's reference code (``cifar10-fast``,
``conv_bn`` = 3x3 conv without bias -> BatchNorm -> ReLU; pooling after the ReLU):

    prep     conv_bn 3 -> 64                         32x32
    layer1   conv_bn 64 -> 128, max-pool 2,          16x16
             + residual (conv_bn 128 -> 128, conv_bn 128 -> 128)
    layer2   conv_bn 128 -> 256, max-pool 2          8x8
    layer3   conv_bn 256 -> 512, max-pool 2,         4x4
             + residual (conv_bn 512 -> 512, conv_bn 512 -> 512)
    pool     global max-pool                         1x1x512
    linear   512 -> 10, no bias, logits x 0.125

The residual branches add to their input without a final activation (``x + F(x)``,
F ending in ReLU).  8 convolutions + 1 linear layer: 6,573,120 parameters
(6,563,520 conv weights, 4,480 BatchNorm scales and biases, 5,120 linear weights).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.pooling import max_pool
from xnn.models.layers import ConvBN
from xnn.models.registry import register


class ResNet9(nn.Module):
  """Page's ResNet-9 (DAWNBench 2018) for 32x32 inputs; ``widths`` scales the channels."""
  num_classes: int = 10
  widths: tuple[int, int, int, int] = (64, 128, 256, 512)
  logit_scale: float = 0.125
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    w0, w1, w2, w3 = self.widths
    cbr = lambda f, name: ConvBN(f, 3, dtype=self.dtype, name=name)   # noqa: E731
    x = cbr(w0, "prep")(x, train)
    self.sow("intermediates", "stem", x)
    for i, (width, residual) in enumerate(((w1, True), (w2, False), (w3, True)), start=1):
      x = max_pool(cbr(width, f"layer{i}")(x, train), 2, 2)
      if residual:
        y = cbr(width, f"layer{i}_res1")(x, train)
        x = x + cbr(width, f"layer{i}_res2")(y, train)
      self.sow("intermediates", f"stage{i}", x)
    x = jnp.max(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, name="fc")(x)
    return x * self.logit_scale


register("resnet9", family="residual", input_shape=(32, 32, 3), num_classes=10)(ResNet9)
register("resnet9_tiny", family="residual", input_shape=(32, 32, 3), num_classes=10,
         widths=(8, 16, 16, 32), description="ResNet-9 with 1/8 of the channels (tests)")(ResNet9)
