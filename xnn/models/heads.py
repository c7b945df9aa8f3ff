"""Classification heads: feature map (N, H, W, C) -> logits (N, classes).

Lecture 002, "Feature Map To Feature Vector Transform" and "2 Classification
Head Design Ideas":

* ``gap_linear``   global average pool, then a linear classifier (default).
* ``flatten_mlp``  vectorise the map, then an MLP (hidden sizes, dropout):
                   the historical head of LeNet/AlexNet/VGG.
* ``pixel``        idea 1: classify every final-map pixel with one shared
                   linear classifier (a 1x1 convolution), then combine the
                   per-pixel logits by averaging (SqueezeNet's head) or with a
                   learned per-position weighting (``combine="learned"``).
* ``spatial_gap``  idea 2: multiply the final map pointwise by a learned
                   H x W weighting (shared over channels, initialised to 1 so it
                   starts as plain GAP), then global average pool and classify.

Every CNN of the zoo takes ``head=`` (one of the names above) and
``head_kwargs=`` so any head can be put on any body.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.layers import Conv

HEADS = ("gap_linear", "flatten_mlp", "pixel", "spatial_gap")


class Head(nn.Module):
  """Selectable classification head; see the module docstring."""
  num_classes: int
  kind: str = "gap_linear"
  hidden: Sequence[int] = (4096, 4096)   # flatten_mlp
  dropout: float = 0.5                    # flatten_mlp
  combine: str = "mean"                   # pixel: "mean" | "learned"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f"head expects an (N, H, W, C) feature map, got shape {x.shape}")
    n, h, w, _ = x.shape
    if self.kind == "gap_linear":
      return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(jnp.mean(x, axis=(1, 2)))
    if self.kind == "flatten_mlp":
      x = x.reshape(n, -1)
      for i, width in enumerate(self.hidden):
        x = nn.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x)
        x = nn.relu(x)
        if self.dropout:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
      return nn.Dense(self.num_classes, dtype=self.dtype, name="fc_out")(x)
    if self.kind == "pixel":
      logits = Conv(self.num_classes, (1, 1), dtype=self.dtype, name="pixel_fc")(x)
      if self.combine == "mean":
        return jnp.mean(logits, axis=(1, 2))
      if self.combine == "learned":
        wgt = self.param("combine_weight", nn.initializers.constant(1.0 / (h * w)), (h, w, 1))
        return jnp.sum(logits * wgt.astype(logits.dtype), axis=(1, 2))
      raise ValueError(f"pixel head combine must be 'mean' or 'learned', got {self.combine!r}")
    if self.kind == "spatial_gap":
      wgt = self.param("spatial_weight", nn.initializers.ones, (h, w, 1))
      x = jnp.mean(x * wgt.astype(x.dtype), axis=(1, 2))
      return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    raise ValueError(f"unknown head {self.kind!r}; expected one of {', '.join(HEADS)}")
