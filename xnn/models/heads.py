"""Classification heads: feature map (N, H, W, C) -> logits (N, classes).

The lecture notes "Design", "Feature Map To Feature Vector Transform" and
"2 Classification Head Design Ideas":

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

Every CNN of the zoo is an `ImageClassifier`: it takes ``head=`` (one of the
names above) and ``head_kwargs=``, so any head can be put on any body, and
attaches it with `attach_head`.
"""

from __future__ import annotations

import dataclasses
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


class ImageClassifier(nn.Module):
  """Base of the zoo's CNNs: the number of classes, the selectable head and the compute dtype.

  The fields are keyword-only, so a subclass's own fields (its architecture)
  stay its leading positional arguments; a subclass changes a default by
  restating the field after its own ``_: dataclasses.KW_ONLY`` marker. The
  network ends with `attach_head`.
  """
  _: dataclasses.KW_ONLY
  num_classes: int = 1000
  head: str = "gap_linear"
  head_kwargs: Any = None
  dtype: Any = jnp.float32


def attach_head(model: ImageClassifier, x: jnp.ndarray, train: bool, *, dropout: float | None = None,
                mlp_hidden: Sequence[int] | None = None, mlp_dropout: float = 0.5) -> jnp.ndarray:
  """The selectable head of ``model`` (its submodule ``head``) on the final feature map ``x``.

  ``dropout``: the rate of the references' pool -> dropout -> classifier of the
  GAP networks (GoogLeNet, Inception, MobileNet v1; DenseNet with 0): with the
  default ``gap_linear`` head the map is averaged first, so the dropout acts on
  the pooled vector; any other head receives the dropped-out map. ``None``: no
  dropout stage, the head reads the map as it is. ``mlp_hidden``,
  ``mlp_dropout``: the reference's hidden sizes and dropout, used when the head
  is ``flatten_mlp`` (the serial networks). ``model.head_kwargs`` override both.

  A function rather than a method, so that the head's layers keep the names
  ``head/...`` in traces and cost reports (Flax scopes a method call by its name).
  """
  kw = {"hidden": tuple(mlp_hidden), "dropout": mlp_dropout} if (
      mlp_hidden is not None and model.head == "flatten_mlp") else {}
  if dropout is not None:
    if model.head == "gap_linear":
      x = jnp.mean(x, axis=(1, 2), keepdims=True)
    if dropout:
      x = nn.Dropout(dropout, deterministic=not train)(x)
  return Head(model.num_classes, model.head, dtype=model.dtype, name="head",
              **{**kw, **(model.head_kwargs or {})})(x, train)
