"""Inception modules (Szegedy et al. 2014-2016): one branch mini-language and the modules written in it.

A *layer* is ``(features, kernel[, stride[, padding]])``: a conv-BN-ReLU
(`layers.ConvBN`) with stride 1 and 'same' padding unless given (padding 0 is
the papers' "V", valid); a *branch* is a sequence of layers applied in turn
(`conv_bn_chain`); `InceptionBranches` runs several branches, and optionally a
pooling branch, on one input and concatenates them on channels.

* GoogLeNet's `InceptionV1` and its auxiliary classifier `InceptionV1Aux`
  (Szegedy et al. 2014, Fig. 2b, Table 1).
* Inception-v3's factorised modules `InceptionA`..`InceptionE` and
  `InceptionV3Aux` (Szegedy et al. 2015, "Rethinking the Inception
  Architecture", Figs. 5-8, 10 and Table 1, in torchvision's layout).
* Inception-v4's `InceptionV4Stem`, `InceptionV4A/B/C` and `ReductionV4A/B`
  (Szegedy et al. 2016, "Inception-v4, Inception-ResNet ...", Figs. 3-8).
* Inception-ResNet-v2's `InceptionResNetBlock` with the A/B/C branch specs, the
  reductions and `InceptionResNetStem` (same paper, Figs. 7, 16-19) in the
  layer widths of the TF-slim/Keras reference; the network itself is in the
  residual family (`xnn.models.residual`).

The stems share their first three convolutions (`STEM_A`: 299 -> 147x147x64);
Inception-v3's stem and the reference Inception-ResNet-v2 stem continue alike
(3x3/2 max pool, `STEM_B`, 3x3/2 max pool).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.layers import ConvBN, conv
from xnn.models.pooling import adaptive_avg_pool, avg_pool, max_pool

Dtype = Any
Layer = tuple              # (features, kernel[, stride[, padding]])
Branch = Sequence[Layer]


def conv_bn_chain(x: jnp.ndarray, spec: Branch, train: bool, names: str, *, start: int = 0,
                  use_scale: bool = True, dtype: Dtype = jnp.float32) -> jnp.ndarray:
  """Applies the layers of one branch in turn; layer j is the submodule ``names.format(start + j)``."""
  for j, (features, kernel, *rest) in enumerate(spec):
    stride = rest[0] if rest else 1
    padding = rest[1] if len(rest) > 1 else None
    x = ConvBN(features, kernel, stride, padding, use_scale=use_scale, dtype=dtype,
               name=names.format(start + j))(x, train)
  return x


class InceptionBranches(nn.Module):
  """Parallel branches of one input, concatenated on channels (conv layers ``{prefix}{i}_{j}``).

  ``pool`` adds a last branch: "max" (3x3/2 max pool, the grid reductions) or
  "avg" (3x3/1 average pool over the valid cells, then a 1x1 conv-BN-ReLU of
  ``pool_features`` named ``pool_name``; by default named as the next branch's
  first layer).
  """
  branches: Sequence[Branch]
  pool: str | None = None
  pool_features: int = 0
  prefix: str = "branch"
  pool_name: str | None = None
  use_scale: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    ys = [conv_bn_chain(x, spec, train, f"{self.prefix}{i}_{{}}", use_scale=self.use_scale, dtype=self.dtype)
          for i, spec in enumerate(self.branches)]
    if self.pool == "max":
      ys.append(max_pool(x, 3, 2))
    elif self.pool == "avg":
      name = self.pool_name or f"{self.prefix}{len(self.branches)}_0"
      ys.append(ConvBN(self.pool_features, 1, use_scale=self.use_scale, dtype=self.dtype, name=name)(
          avg_pool(x, 3, 1, 1, count_include_pad=False), train))
    return jnp.concatenate(ys, axis=-1)


class SplitConv(nn.Module):
  """1x3 and 3x1 convolutions of one input, concatenated (Szegedy et al. 2015, Fig. 7)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    a = ConvBN(self.features, (1, 3), dtype=self.dtype, name="a")(x, train)
    b = ConvBN(self.features, (3, 1), dtype=self.dtype, name="b")(x, train)
    return jnp.concatenate([a, b], axis=-1)


# Szegedy et al. 2016, Fig. 3 (top) and Inception-v3's Table 1 (first three rows): 299 -> 147x147x64.
STEM_A = ((32, 3, 2, 0), (32, 3, 1, 0), (64, 3))
# After a 3x3/2 max pool (147 -> 73): 73 -> 71x71x192 (Inception-v3 Table 1; TF-slim Inception-ResNet-v2).
STEM_B = ((80, 1), (192, 3, 1, 0))


# ----------------------------------------------------------------------------- GoogLeNet


class InceptionV1(nn.Module):
  """GoogLeNet's Inception module with dimension reductions (Szegedy et al. 2014, Fig. 2b).

  Four branches concatenated on channels: 1x1 (`c1`); 1x1 (`c3r`) -> 3x3
  (`c3`); 1x1 (`c5r`) -> "5x5" (`c5`); 3x3 max pool -> 1x1 (`pool_proj`).
  Every convolution is conv-BN-ReLU as in torchvision. ``kernel5`` is the
  kernel of the "5x5" branch: 5 in the paper, 3 in torchvision's googlenet
  (whose published weights and parameter count use 3x3 there).
  """
  c1: int
  c3r: int
  c3: int
  c5r: int
  c5: int
  pool_proj: int
  kernel5: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    cb = lambda f, k, name: ConvBN(f, k, dtype=self.dtype, name=name)  # noqa: E731
    b1 = cb(self.c1, 1, "b1")(x, train)
    b2 = cb(self.c3, 3, "b2_3x3")(cb(self.c3r, 1, "b2_1x1")(x, train), train)
    b3 = cb(self.c5, self.kernel5, "b3_5x5")(cb(self.c5r, 1, "b3_1x1")(x, train), train)
    b4 = cb(self.pool_proj, 1, "b4_1x1")(max_pool(x, 3, 1, 1, ceil_mode=True), train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionV1Aux(nn.Module):
  """GoogLeNet auxiliary classifier (Szegedy et al. 2014, sec. 5; torchvision layout).

  Average pool to 4x4 -> 1x1 conv 128 (BN, ReLU) -> fc 1024 -> ReLU ->
  dropout 0.7 -> fc num_classes.
  """
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = adaptive_avg_pool(x, 4)
    x = ConvBN(128, 1, dtype=self.dtype, name="conv")(x, train)
    x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="fc1")(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(0.7, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


# ----------------------------------------------------------------------------- Inception-v3
# torchvision's layer names: b<kernel>_<i> counts the layers of a branch from 1.


class InceptionA(nn.Module):
  """Inception-v3 35x35 module (Szegedy et al. 2015, Fig. 5): 5x5 as two 3x3."""
  pool_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    chain = functools.partial(conv_bn_chain, train=train, start=1, dtype=self.dtype)
    b1 = ConvBN(64, 1, dtype=self.dtype, name="b1x1")(x, train)
    b5 = chain(x, ((48, 1), (64, 5)), names="b5x5_{}")
    b3 = chain(x, ((64, 1), (96, 3), (96, 3)), names="b3x3dbl_{}")
    bp = ConvBN(self.pool_features, 1, dtype=self.dtype, name="bpool")(avg_pool(x, 3, 1, 1), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Inception-v3 grid reduction 35 -> 17 (Szegedy et al. 2015, Fig. 10)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    b3 = ConvBN(384, 3, 2, 0, dtype=self.dtype, name="b3x3")(x, train)
    bd = conv_bn_chain(x, ((64, 1), (96, 3), (96, 3, 2, 0)), train, "b3x3dbl_{}", start=1, dtype=self.dtype)
    return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
  """Inception-v3 17x17 module (Szegedy et al. 2015, Fig. 6): 7x7 as 1x7 and 7x1."""
  c7: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    chain = functools.partial(conv_bn_chain, train=train, start=1, dtype=self.dtype)
    c7 = self.c7
    b1 = ConvBN(192, 1, dtype=self.dtype, name="b1x1")(x, train)
    b7 = chain(x, ((c7, 1), (c7, (1, 7)), (192, (7, 1))), names="b7x7_{}")
    bd = chain(x, ((c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))), names="b7x7dbl_{}")
    bp = ConvBN(192, 1, dtype=self.dtype, name="bpool")(avg_pool(x, 3, 1, 1), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Inception-v3 grid reduction 17 -> 8 (torchvision's Mixed_7a)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    chain = functools.partial(conv_bn_chain, train=train, start=1, dtype=self.dtype)
    b3 = chain(x, ((192, 1), (320, 3, 2, 0)), names="b3x3_{}")
    b7 = chain(x, ((192, 1), (192, (1, 7)), (192, (7, 1)), (192, 3, 2, 0)), names="b7x7x3_{}")
    return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
  """Inception-v3 8x8 module with expanded filter banks (Szegedy et al. 2015, Fig. 7)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b1 = ConvBN(320, 1, dtype=d, name="b1x1")(x, train)
    b3 = SplitConv(384, d, name="b3x3_2")(ConvBN(384, 1, dtype=d, name="b3x3_1")(x, train), train)
    bd = conv_bn_chain(x, ((448, 1), (384, 3)), train, "b3x3dbl_{}", start=1, dtype=d)
    bd = SplitConv(384, d, name="b3x3dbl_3")(bd, train)
    bp = ConvBN(192, 1, dtype=d, name="bpool")(avg_pool(x, 3, 1, 1), train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Aux(nn.Module):
  """Inception-v3 auxiliary classifier on the 17x17 grid (Szegedy et al. 2015, Fig. 8).

  5x5/3 average pool -> 1x1 conv 128 -> 5x5 conv 768 (both BN-ReLU) -> global
  average -> fc num_classes (torchvision's layout).
  """
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if min(x.shape[1:3]) < 17:      # the pool gives 5x5 on 17x17, which the 5x5 convolution needs
      raise ValueError(f"Inception-v3's auxiliary classifier needs the 17x17 grid of a 299x299 input, got "
                       f"{x.shape[1]}x{x.shape[2]}: use an input of at least 299x299 or aux_logits=False")
    x = avg_pool(x, 5, 3)
    x = ConvBN(128, 1, dtype=self.dtype, name="conv0")(x, train)
    x = ConvBN(768, 5, 1, 0, dtype=self.dtype, name="conv1")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


# ----------------------------------------------------------------------------- Inception-v4


class InceptionV4Stem(nn.Module):
  """Inception-v4 stem (Szegedy et al. 2016, Fig. 3): 299 -> 35x35x384."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    x = conv_bn_chain(x, STEM_A, train, "conv_{}", dtype=d)
    x = jnp.concatenate([max_pool(x, 3, 2), ConvBN(96, 3, 2, 0, dtype=d, name="mixed3a")(x, train)], -1)
    a = conv_bn_chain(x, ((64, 1), (96, 3, 1, 0)), train, "mixed4a_b0_{}", dtype=d)
    b = conv_bn_chain(x, ((64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, 0)), train, "mixed4a_b1_{}", dtype=d)
    x = jnp.concatenate([a, b], -1)
    return jnp.concatenate([ConvBN(192, 3, 2, 0, dtype=d, name="mixed5a")(x, train), max_pool(x, 3, 2)], -1)


def reduction_a(k: int, ell: int, m: int, n: int) -> tuple[Branch, ...]:
  """Reduction-A's conv branches (Szegedy et al. 2016, Fig. 7, filter banks k, l, m, n); + a 3x3/2 max pool."""
  return (((n, 3, 2, 0),), ((k, 1), (ell, 3), (m, 3, 2, 0)))


# Branch specs of Inception-v4 (timm's layout); the block's layers are b<branch>_<layer>.
INCEPTION_V4_A = (((96, 1),), ((64, 1), (96, 3)), ((64, 1), (96, 3), (96, 3)))               # Fig. 4
INCEPTION_V4_B = (((384, 1),), ((192, 1), (224, (1, 7)), (256, (7, 1))),
                  ((192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))))    # Fig. 5
REDUCTION_V4_B = (((192, 1), (192, 3, 2, 0)), ((256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, 0)))  # Fig. 8

# 35x35 block, 384 -> 384 channels (Fig. 4); 17x17 block, 1024 -> 1024 (Fig. 5).
InceptionV4A = functools.partial(InceptionBranches, INCEPTION_V4_A, pool="avg", pool_features=96, prefix="b")
InceptionV4B = functools.partial(InceptionBranches, INCEPTION_V4_B, pool="avg", pool_features=128, prefix="b")
# Reduction-A, 35 -> 17 (Fig. 7; k, l, m, n = 192, 224, 256, 384); Reduction-B, 17 -> 8, 1024 -> 1536 (Fig. 8).
ReductionV4A = functools.partial(InceptionBranches, reduction_a(192, 224, 256, 384), pool="max", prefix="b")
ReductionV4B = functools.partial(InceptionBranches, REDUCTION_V4_B, pool="max", prefix="b")


class InceptionV4C(nn.Module):
  """Inception-v4 8x8 block (Szegedy et al. 2016, Fig. 6): 1536 -> 1536 channels, two split branches."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = conv_bn_chain(x, ((256, 1),), train, "b0_{}", dtype=d)
    b1 = SplitConv(256, d, name="b1_split")(conv_bn_chain(x, ((384, 1),), train, "b1_{}", dtype=d), train)
    b2 = conv_bn_chain(x, ((384, 1), (448, (3, 1)), (512, (1, 3))), train, "b2_{}", dtype=d)
    b2 = SplitConv(256, d, name="b2_split")(b2, train)
    b3 = conv_bn_chain(avg_pool(x, 3, 1, 1, count_include_pad=False), ((256, 1),), train, "b3_{}", dtype=d)
    return jnp.concatenate([b0, b1, b2, b3], -1)


# ----------------------------------------------------------------------------- Inception-ResNet-v2

# Branch specs of Inception-ResNet-v2 (TF-slim/Keras widths).
INCEPTION_RESNET_A = (((32, 1),), ((32, 1), (32, 3)), ((32, 1), (48, 3), (64, 3)))          # Fig. 16
INCEPTION_RESNET_B = (((192, 1),), ((128, 1), (160, (1, 7)), (192, (7, 1))))                # Fig. 17
INCEPTION_RESNET_C = (((192, 1),), ((192, 1), (224, (1, 3)), (256, (3, 1))))                # Fig. 19
REDUCTION_A = reduction_a(256, 256, 384, 384)                                                # Fig. 7
REDUCTION_B = (((256, 1), (384, 3, 2, 0)), ((256, 1), (288, 3, 2, 0)),
               ((256, 1), (288, 3), (320, 3, 2, 0)))                                          # Fig. 18
MIXED_5B = (((96, 1),), ((48, 1), (64, 5)), ((64, 1), (96, 3), (96, 3)))


class InceptionResNetBlock(nn.Module):
  """Residual Inception block (Szegedy et al. 2016, Fig. 16-18, Sec. 3.3):
  x + scale * Conv1x1_linear(concat(branches)), then ReLU (unless `activate=False`).

  The linear 1x1 up-projection has a bias and no BN (as in the reference code).
  """
  branches: Sequence[Branch]
  scale: float = 1.0
  activate: bool = True
  use_scale: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = InceptionBranches(self.branches, use_scale=self.use_scale, dtype=self.dtype, name="mixed")(x, train)
    y = conv(x.shape[-1], 1, use_bias=True, dtype=self.dtype, name="up")(y)
    x = x + self.scale * y
    return nn.relu(x) if self.activate else x


class InceptionResNetStem(nn.Module):
  """Stem of the reference (TF-slim/Keras) Inception-ResNet-v2: 299 -> 35x35x320.

  `STEM_A`, 3x3/2 max pool, `STEM_B` (Inception-v3's stem), 3x3/2 max pool,
  then Mixed-5b (four branches, 320 channels). The paper's Fig. 3 stem
  (384 channels, `InceptionV4Stem`) is not the one the reference count uses.
  """
  use_scale: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    chain = functools.partial(conv_bn_chain, train=train, use_scale=self.use_scale, dtype=self.dtype)
    x = max_pool(chain(x, STEM_A, names="conv_a_{}"), 3, 2)
    x = max_pool(chain(x, STEM_B, names="conv_b_{}"), 3, 2)
    return InceptionBranches(MIXED_5B, pool="avg", pool_features=64, pool_name="pool_proj",
                             use_scale=self.use_scale, dtype=self.dtype, name="mixed_5b")(x, train)
