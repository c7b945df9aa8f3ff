"""Serial CNNs: one path from input to output (lecture 002, "Serial")."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.heads import Head
from xnn.models.registry import register


class LeNet5(nn.Module):
  """LeNet-5 as drawn in the homework (`003_*`): LeCun et al. 1998 layout.

  32x32xC -> conv5x5x8 -> maxpool2 -> conv5x5x16 -> maxpool2 -> fc120 -> fc84
  -> num_classes, ReLU activations, valid convolutions. At C=3 the parameter
  counts are 608, 3,216, 48,120, 10,164 and 850 (62,958 in all); the
  homework's column (208, 416, 48,001, 10,081, 841) forgets the input channels
  of the convolutions and counts one bias per layer.
  """
  num_classes: int = 10
  head: str = "flatten_mlp"
  head_kwargs: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.relu(nn.Conv(8, (5, 5), padding="VALID", dtype=self.dtype, name="conv1")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    self.sow("intermediates", "stage1", x)
    x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype, name="conv2")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    self.sow("intermediates", "stage2", x)
    kw = {"hidden": (120, 84), "dropout": 0.0} if self.head == "flatten_mlp" else {}
    return Head(self.num_classes, self.head, dtype=self.dtype, name="head",
                **{**kw, **(self.head_kwargs or {})})(x, train)


@register("lenet5", family="serial", input_shape=(32, 32, 3), num_classes=10)
def lenet5(**kw: Any) -> nn.Module:
  """LeNet-5 (the 32x32 homework variant: 8 and 16 feature maps)."""
  return LeNet5(**kw)
