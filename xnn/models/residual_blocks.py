"""Reusable blocks of the residual CNN family (the lecture notes "Design", "Residual").

Every block takes NHWC input, `train` for BatchNorm, and a compute `dtype`.
Padding is explicit and symmetric (see `xnn.models.layers`).

* `Projection`: the 1x1 conv + BN shortcut (He et al. 2015, option B).
* `BasicBlock`, `Bottleneck`: post-activation residual blocks of He et al. 2015,
  "Deep Residual Learning for Image Recognition" (Table 1, Fig. 5), with the
  ResNeXt grouped 3x3 (Xie et al. 2017, Fig. 3c), squeeze-and-excitation
  (Hu et al. 2018, Fig. 3) and selective-kernel (Li et al. 2019, Fig. 1) options.
* `PreActBlock` in its `PreActBasicBlock` and `PreActBottleneck` shapes: the
  pre-activation blocks of He et al. 2016, "Identity Mappings in Deep Residual
  Networks" (Fig. 1b, 4e).
* `InvertedResidual`: MobileNet V2 inverted residual with linear bottleneck
  (Sandler et al. 2018, Table 1).
* `channel_shuffle`, `ShuffleV1Unit`, `ShuffleV2Unit`: Zhang et al. 2017
  (Fig. 1-2) and Ma et al. 2018 (Fig. 3c-d).
* `shift`, `CSCBlock`: the zero-parameter shift and the conv-shift-conv module
  of Wu et al. 2018.
* `SeparableConv`, `XceptionBlock`: depthwise-separable convolution and the
  Xception entry/middle/exit modules (Chollet 2017, Fig. 5).
* `DualPathBlock`: Chen et al. 2017, "Dual Path Networks" (Fig. 2e).

Inception-ResNet-v2's blocks are written in the Inception mini-language of
`xnn.models.inception`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xnn.models.layers import BNAct, BNActConv, ConvBN, batch_norm, conv
from xnn.models.pooling import avg_pool, max_pool

Dtype = Any


# Shortcut projection (He et al. 2015, option B): 1x1 conv with stride, then BN (submodules conv, bn).
Projection = functools.partial(ConvBN, kernel=1, padding=0, act=None)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018, Eq. 2-3): x * sigmoid(W2 relu(W1 GAP(x))).

  The two fully connected layers have biases, as in the authors' code; the
  hidden size is C / reduction.
  """
  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Dense(c // self.reduction, dtype=self.dtype, name="fc1")(s))
    s = nn.sigmoid(nn.Dense(c, dtype=self.dtype, name="fc2")(s))
    return x * s


class SKConv(nn.Module):
  """Selective kernel convolution (Li et al. 2019, Eq. 1-6).

  Split: `branches` grouped 3x3 convolutions with dilation 1, 2, ... (a 3x3
  with dilation 2 stands for the 5x5 kernel, as in the paper), each with BN and
  ReLU. Fuse: s = GAP(sum of branches), z = relu(BN(W s)) with
  d = max(C / reduction, min_dim). Select: softmax over branches of per-branch
  linear maps of z weight the branches channel-wise.
  """
  features: int
  stride: int = 1
  groups: int = 32
  branches: int = 2
  reduction: int = 16
  min_dim: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    u = [ConvBN(self.features, 3, self.stride, groups=self.groups, dilation=m + 1,
                dtype=self.dtype, name=f"branch{m + 1}")(x, train) for m in range(self.branches)]
    u = jnp.stack(u, axis=0)                               # (M, N, H, W, C)
    s = jnp.mean(jnp.sum(u, axis=0), axis=(1, 2))          # (N, C)
    d = max(self.features // self.reduction, self.min_dim)
    z = nn.Dense(d, use_bias=False, dtype=self.dtype, name="fc")(s)
    z = nn.relu(batch_norm(train, self.dtype, name="fc_bn")(z))
    logits = jnp.stack([nn.Dense(self.features, dtype=self.dtype, name=f"select{m + 1}")(z)
                        for m in range(self.branches)], axis=0)
    attn = jax.nn.softmax(logits, axis=0)[:, :, None, None, :]
    return jnp.sum(u * attn, axis=0)


class BasicBlock(nn.Module):
  """Post-activation basic block: relu(BN(conv3x3(relu(BN(conv3x3 x)))) + shortcut x)."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = ConvBN(self.features, 3, self.stride, dtype=self.dtype, name="conv_bn1")(x, train)
    y = ConvBN(self.features, 3, 1, act=None, dtype=self.dtype, name="conv_bn2")(y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Projection(self.features, stride=self.stride, dtype=self.dtype, name="proj")(x, train)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """Post-activation bottleneck 1x1 (width) -> 3x3 (width) -> 1x1 (features).

  `stride_on_1x1=False` puts the stride on the 3x3 (torchvision "v1.5");
  `True` puts it on the first 1x1 as in He et al. 2015. `groups` makes the 3x3
  grouped (ResNeXt), `se_reduction > 0` adds squeeze-and-excitation on the
  residual branch before the addition (SENet), `selective_kernel` replaces the
  3x3 by an `SKConv` (SKNet).
  """
  features: int
  width: int
  stride: int = 1
  groups: int = 1
  stride_on_1x1: bool = False
  se_reduction: int = 0
  selective_kernel: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    s1, s3 = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
    y = ConvBN(self.width, 1, s1, dtype=self.dtype, name="conv_bn1")(x, train)
    if self.selective_kernel:
      y = SKConv(self.width, s3, self.groups, dtype=self.dtype, name="sk")(y, train)
    else:
      y = ConvBN(self.width, 3, s3, groups=self.groups, dtype=self.dtype, name="conv_bn2")(y, train)
    y = ConvBN(self.features, 1, act=None, dtype=self.dtype, name="conv_bn3")(y, train)
    if self.se_reduction:
      y = SqueezeExcite(self.se_reduction, self.dtype, name="se")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Projection(self.features, stride=self.stride, dtype=self.dtype, name="proj")(x, train)
    return nn.relu(y + x)


class PreActBlock(nn.Module):
  """Pre-activation residual block (He et al. 2016, "Identity Mappings", Fig. 1b, 4e).

  x + conv_n(BN-ReLU(... conv_1(BN-ReLU(x)))): ``convs`` lists (features,
  kernel, stride) of conv_1 .. conv_n (no BN after them); the BN-ReLU units are
  ``preact``, ``preact2``, ... Where the shape changes, the projection shortcut
  (1x1 conv with the block's stride, no BN, ``proj``) reads the pre-activated
  input, as in the authors' code.
  """
  convs: Sequence[tuple[int, int, int]]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    features, stride = self.convs[-1][0], max(s for _, _, s in self.convs)
    a = BNAct(dtype=self.dtype, name="preact")(x, train)
    y = a
    for i, (f, k, s) in enumerate(self.convs):
      if i:
        y = BNAct(dtype=self.dtype, name=f"preact{i + 1}")(y, train)
      y = conv(f, k, s, dtype=self.dtype, name=f"conv{i + 1}")(y)
    if stride != 1 or x.shape[-1] != features:
      x = conv(features, 1, stride, 0, dtype=self.dtype, name="proj")(a)
    return y + x


def PreActBasicBlock(features: int, stride: int = 1, dtype: Dtype = jnp.float32, **kw: Any) -> PreActBlock:
  """Pre-activation basic block: BN-ReLU-3x3 (stride), BN-ReLU-3x3 (He et al. 2016, Fig. 4e)."""
  return PreActBlock(((features, 3, stride), (features, 3, 1)), dtype, **kw)


def PreActBottleneck(features: int, width: int, stride: int = 1, dtype: Dtype = jnp.float32,
                     **kw: Any) -> PreActBlock:
  """Pre-activation bottleneck: BN-ReLU-1x1 (width), BN-ReLU-3x3 (width, stride), BN-ReLU-1x1 (features)."""
  return PreActBlock(((width, 1, 1), (width, 3, stride), (features, 1, 1)), dtype, **kw)


class InvertedResidual(nn.Module):
  """MobileNet V2 block (Sandler et al. 2018, Table 1).

  1x1 expansion to `expand` channels + BN + ReLU6 (skipped when `expand` equals
  the input width, t = 1), 3x3 depthwise with the stride + BN + ReLU6, 1x1
  linear projection + BN; identity shortcut when stride 1 and shapes match.
  The expanded map is sown as "expand".
  """
  features: int
  expand: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = x
    if self.expand != x.shape[-1]:
      y = ConvBN(self.expand, 1, act=nn.relu6, dtype=self.dtype, name="expand_conv")(y, train)
      self.sow("intermediates", "expand", y)
    y = ConvBN(self.expand, 3, self.stride, groups=self.expand, act=nn.relu6,
               dtype=self.dtype, name="depthwise")(y, train)
    y = ConvBN(self.features, 1, act=None, dtype=self.dtype, name="project")(y, train)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


def channel_shuffle(x: jnp.ndarray, groups: int) -> jnp.ndarray:
  """Channel shuffle (Zhang et al. 2017, Fig. 1c): reshape (g, C/g), transpose, flatten."""
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleV1Unit(nn.Module):
  """ShuffleNet unit (Zhang et al. 2017, Fig. 2b-c).

  GConv1x1 + BN + ReLU -> channel shuffle -> 3x3 depthwise (stride) + BN ->
  GConv1x1 + BN, bottleneck width = features / 4 (Sec. 3.2). Stride 1: add the
  input; stride 2: concatenate a 3x3/2 average pool of the input (so the
  branch outputs `features - C_in` channels). ReLU after the merge.
  `first_group=False` makes the first 1x1 ungrouped (Stage 2's first unit,
  whose 24-channel input is too narrow to group).
  """
  features: int
  groups: int
  stride: int = 1
  first_group: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    mid = self.features // 4
    out = self.features - x.shape[-1] if self.stride == 2 else self.features
    g1 = self.groups if self.first_group else 1
    y = ConvBN(mid, 1, groups=g1, dtype=self.dtype, name="gconv1")(x, train)
    y = channel_shuffle(y, self.groups)
    y = ConvBN(mid, 3, self.stride, groups=mid, act=None, dtype=self.dtype, name="depthwise")(y, train)
    y = ConvBN(out, 1, groups=self.groups, act=None, dtype=self.dtype, name="gconv2")(y, train)
    if self.stride == 2:
      return nn.relu(jnp.concatenate([avg_pool(x, 3, 2, 1), y], axis=-1))
    return nn.relu(y + x)


class ShuffleV2Unit(nn.Module):
  """ShuffleNet V2 unit (Ma et al. 2018, Fig. 3c-d).

  Stride 1: split the channels in half, transform one half by 1x1-BN-ReLU,
  3x3 depthwise-BN, 1x1-BN-ReLU; stride 2: both branches see the whole input,
  the left one a 3x3/2 depthwise-BN then 1x1-BN-ReLU. Concatenate, shuffle (2 groups).
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    half = self.features // 2
    if self.stride == 1:
      left, right = jnp.split(x, 2, axis=-1)
    else:
      c = x.shape[-1]
      left = ConvBN(c, 3, self.stride, groups=c, act=None, dtype=self.dtype, name="left_depthwise")(x, train)
      left = ConvBN(half, 1, dtype=self.dtype, name="left_pointwise")(left, train)
      right = x
    right = ConvBN(half, 1, dtype=self.dtype, name="pointwise1")(right, train)
    right = ConvBN(half, 3, self.stride, groups=half, act=None, dtype=self.dtype, name="depthwise")(right, train)
    right = ConvBN(half, 1, dtype=self.dtype, name="pointwise2")(right, train)
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


def shift(x: jnp.ndarray, kernel: int) -> jnp.ndarray:
  """The shift operation (Wu et al. 2018, Sec. 3), zero FLOPs and zero parameters.

  The channels are split into kernel^2 near-equal groups; group i is moved by
  the i-th offset of the kernel x kernel window (zero filled at the border),
  the centre group (offset 0) taking the remainder.
  """
  if kernel == 1:
    return x
  n, h, w, c = x.shape
  k2 = kernel * kernel
  r = kernel // 2
  base, rem = divmod(c, k2)
  sizes = [base + (rem if i == k2 // 2 else 0) for i in range(k2)]
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
  out, start = [], 0
  for i, size in enumerate(sizes):
    dy, dx = divmod(i, kernel)
    out.append(xp[:, dy:dy + h, dx:dx + w, start:start + size])
    start += size
  return jnp.concatenate(out, axis=-1)


class CSCBlock(nn.Module):
  """Conv-shift-conv (CSC) residual module (Wu et al. 2018, Sec. 3-4).

  1x1 conv to `expansion` x C_in channels + BN + ReLU, shift with a kernel x
  kernel neighbourhood (the stride subsamples after the shift), 1x1 conv to
  `features` + BN; identity shortcut, or a 1x1/stride conv + BN projection
  where the shape changes; ReLU after the addition.
  """
  features: int
  expansion: int
  kernel: int = 3
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = ConvBN(self.expansion * x.shape[-1], 1, dtype=self.dtype, name="conv_bn1")(x, train)
    y = shift(y, self.kernel)[:, ::self.stride, ::self.stride, :]
    y = ConvBN(self.features, 1, act=None, dtype=self.dtype, name="conv_bn2")(y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Projection(self.features, stride=self.stride, dtype=self.dtype, name="proj")(x, train)
    return nn.relu(y + x)


class SeparableConv(nn.Module):
  """Depthwise-separable convolution (Chollet 2017): kxk depthwise then 1x1 pointwise, no bias."""
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    x = conv(c, self.kernel, self.stride, groups=c, dtype=self.dtype, name="depthwise")(x)
    return conv(self.features, 1, dtype=self.dtype, name="pointwise")(x)


class XceptionBlock(nn.Module):
  """Xception module (Chollet 2017, Fig. 5): [ReLU] SepConv-BN, (ReLU SepConv-BN)*.

  `stride=2` ends with a 3x3/2 max pool and uses a 1x1/2 conv + BN shortcut
  (entry and exit flows); `stride=1` with unchanged width uses the identity
  (middle flow). `start_with_relu=False` for the first entry block, which
  follows an activated convolution.
  """
  features: Sequence[int]
  stride: int = 1
  start_with_relu: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = x
    for i, f in enumerate(self.features):
      if i > 0 or self.start_with_relu:
        y = nn.relu(y)
      y = SeparableConv(f, dtype=self.dtype, name=f"sepconv{i + 1}")(y)
      y = batch_norm(train, self.dtype, name=f"bn{i + 1}")(y)
    if self.stride != 1:
      y = max_pool(y, 3, self.stride, 1)
    if self.stride != 1 or x.shape[-1] != self.features[-1]:
      x = Projection(self.features[-1], stride=self.stride, dtype=self.dtype, name="proj")(x, train)
    return y + x


# --- Dual path networks -------------------------------------------------------


class DualPathBlock(nn.Module):
  """Dual path block (Chen et al. 2017, Fig. 2e).

  Input: the pair (residual path, densely connected path), concatenated for the
  1x1 -> grouped 3x3 -> 1x1 transform (pre-activation units). The first
  `residual` output channels are added to the residual path, the last `inc`
  are appended to the dense path. `project` (first block of a stage) first maps
  the input by a 1x1 (stride) to a new residual path and 2*inc dense channels.
  """
  width: int           # 1x1 / 3x3 width (k_R scaled by the stage)
  residual: int        # residual path width (bw)
  inc: int             # dense path increment
  groups: int
  stride: int = 1
  project: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: tuple[jnp.ndarray, jnp.ndarray], train: bool = False):
    xin = jnp.concatenate(x, axis=-1)
    if self.project:
      s = BNActConv(self.residual + 2 * self.inc, 1, self.stride, dtype=self.dtype, name="proj")(xin, train)
      res, dense = s[..., :self.residual], s[..., self.residual:]
    else:
      res, dense = x
    y = BNActConv(self.width, 1, dtype=self.dtype, name="conv1")(xin, train)
    y = BNActConv(self.width, 3, self.stride, self.groups, dtype=self.dtype, name="conv2")(y, train)
    y = BNActConv(self.residual + self.inc, 1, dtype=self.dtype, name="conv3")(y, train)
    return res + y[..., :self.residual], jnp.concatenate([dense, y[..., self.residual:]], axis=-1)
