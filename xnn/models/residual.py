"""Residual CNNs (the lecture notes "Design", "Residual"), built from `residual_blocks`.

* CIFAR networks of He et al. 2015, section 4.2 (`resnet20`..`resnet1202`,
  `plain20`..`plain110`): a 3x3 conv of 16, 3 stages of n basic blocks with
  16/32/64 filters on 32/16/8 maps, GAP and a linear layer (6n+2 layers).
  Shortcut option A (identity; stride-2 subsampling and zero-padded channels,
  no parameters, the default) or B (`shortcut="B"`: 1x1 conv + BN projection).
  The plain networks are the same stacks without shortcuts.
* ImageNet ResNets (He et al. 2015, Table 1): `resnet18..152` in torchvision's
  "v1.5" form (stride on the bottleneck 3x3), `resnet50/101/152_v1` (stride on
  the first 1x1 as in the paper), pre-activation `preact_resnet18..152`
  (He et al. 2016), `wide_resnet50_2` (Zagoruyko & Komodakis 2016),
  `resnext50_32x4d`, `resnext101_32x8d` (Xie et al. 2017, Table 1),
  `se_resnet50`, `se_resnext50_32x4d` (Hu et al. 2018, Table 1),
  `sknet50` (Li et al. 2019, Table 1).
* `mobilenet_v2` (Sandler et al. 2018, Table 2), `mobilenet_v2_28` and
  `resnet_v2b` (the 28x28 MobileNet V2 and pre-activation bottleneck network
  of the course's design homework, practice section).
* `xception` (Chollet 2017, Fig. 5), `shufflenet_v1_g*` (Zhang et al. 2017,
  Table 1), `shufflenet_v2_x*` (Ma et al. 2018, Table 5), `shiftnet`
  (Wu et al. 2018, ShiftNet-A as tabulated in the lecture notes "Design"),
  `inception_resnet_v2` (Szegedy et al. 2016, blocks from `xnn.models.inception`),
  `dpn92`, `dpn98` (Chen et al. 2017, Table 1).

Every network is an `ImageClassifier` (``num_classes``, ``head``, ``head_kwargs``,
``dtype``). Stage outputs are sown into `intermediates` ("stem", "stage1", ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models import inception
from xnn.models import residual_blocks as rb
from xnn.models.heads import ImageClassifier, attach_head
from xnn.models.layers import ConvBN, batch_norm, bn_act, conv
from xnn.models.pooling import max_pool
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


def _stage_stride(stage: int, block: int) -> int:
  """Every stage but the first halves the map in its first block."""
  return 2 if (stage > 0 and block == 0) else 1


class CifarResNet(ImageClassifier):
  """ResNet-(6n+2) for 32x32 inputs (He et al. 2015, section 4.2)."""
  depth: int = 20
  shortcut: str = "A"
  widths: tuple[int, ...] = (16, 32, 64)
  _: dataclasses.KW_ONLY
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
    n = (self.depth - 2) // 6
    x = ConvBN(self.widths[0], 3, dtype=self.dtype, name="stem")(x, train)
    for s, w in enumerate(self.widths):
      for b in range(n):
        x = CifarBasicBlock(w, _stage_stride(s, b), self.shortcut, self.dtype,
                            name=f"stage{s + 1}_block{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 1}", x)
    return attach_head(self, x, train)


def _cifar(depth: int, plain: bool):
  def factory(shortcut: str = "A", **kw: Any) -> nn.Module:
    return CifarResNet(depth=depth, shortcut="none" if plain else shortcut, **kw)
  factory.__doc__ = (f"{'Plain' if plain else 'Residual'} CIFAR network of depth {depth} "
                     f"(He et al. 2015, 6n+2 with n={(depth - 2) // 6}).")
  return factory


for _d in (20, 32, 44, 56, 110, 1202):
  register(f"resnet{_d}", family="residual", input_shape=(32, 32, 3), num_classes=10)(_cifar(_d, False))
for _d in (20, 32, 44, 56, 110):
  register(f"plain{_d}", family="residual", input_shape=(32, 32, 3), num_classes=10)(_cifar(_d, True))


def _conv_pool_stem(mdl: nn.Module, x: jnp.ndarray, train: bool, features: int, kernel: int) -> jnp.ndarray:
  """ImageNet stem: kxk/2 conv + BN + ReLU (``conv1``, sown "stem"), then a 3x3/2 max pool (pad 1).

  7x7 in ResNet (He et al. 2015, Table 1 "conv1" and pool) and DPN, 3x3 in ShuffleNet (Zhang et al. 2017, Table 1).
  """
  x = ConvBN(features, kernel, 2, kernel // 2, dtype=mdl.dtype, name="conv1")(x, train)
  mdl.sow("intermediates", "stem", x)
  return max_pool(x, 3, 2, 1)


def _round8(v: float, divisor: int = 8) -> int:
  """MobileNet channel rounding: nearest multiple of 8, never below 90% of v."""
  r = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return r + divisor if r < 0.9 * v else r


# --- ImageNet ResNet family ----------------------------------------------------


class ResNet(ImageClassifier):
  """ImageNet ResNet (He et al. 2015, Table 1) and its descendants.

  `block`: "basic" | "bottleneck" (post-activation) | "preact_basic" |
  "preact_bottleneck" (He et al. 2016: the stem keeps conv-BN-ReLU-pool, every
  block pre-activates its input, and a final BN-ReLU precedes pooling; the
  layout of the imgclsmob PreResNet whose counts the tests cite).
  Bottleneck width = planes * width_per_group / 64 * groups (ResNeXt's C x d;
  wide ResNets use width_per_group=128), output = 4 * planes.
  """
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  block: str = "basic"
  planes: tuple[int, ...] = (64, 128, 256, 512)
  groups: int = 1
  width_per_group: int = 64
  stride_on_1x1: bool = False
  se_reduction: int = 0
  selective_kernel: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv_pool_stem(self, x, train, 64, 7)
    for s, (n, p) in enumerate(zip(self.stage_sizes, self.planes)):
      for b in range(n):
        stride, name = _stage_stride(s, b), f"stage{s + 1}_block{b + 1}"
        width = p * self.width_per_group // 64 * self.groups
        if self.block == "basic":
          x = rb.BasicBlock(p, stride, self.dtype, name=name)(x, train)
        elif self.block == "bottleneck":
          x = rb.Bottleneck(4 * p, width, stride, self.groups, self.stride_on_1x1, self.se_reduction,
                            self.selective_kernel, self.dtype, name=name)(x, train)
        elif self.block == "preact_basic":
          x = rb.PreActBasicBlock(p, stride, self.dtype, name=name)(x, train)
        elif self.block == "preact_bottleneck":
          x = rb.PreActBottleneck(4 * p, width, stride, self.dtype, name=name)(x, train)
        else:
          raise ValueError(f"unknown block {self.block!r}")
      self.sow("intermediates", f"stage{s + 1}", x)
    if self.block.startswith("preact"):
      x = bn_act(x, train, self.dtype, name="final_bn")
    return attach_head(self, x, train)


_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
           101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def _imagenet_resnet(name: str, depth: int, doc: str, *, preact: bool = False, **arch: Any) -> None:
  """Registers `ResNet` of Table 1's `depth` under `name`, with `arch` options bound."""
  block, sizes = _DEPTHS[depth]
  register(name, family="residual", input_shape=(224, 224, 3), num_classes=1000, description=doc,
           stage_sizes=sizes, block="preact_" + block if preact else block, **arch)(ResNet)


for _d in _DEPTHS:
  _imagenet_resnet(f"resnet{_d}", _d, f"ResNet-{_d} (He et al. 2015, Table 1; torchvision v1.5: stride on the 3x3).")
  _imagenet_resnet(f"preact_resnet{_d}", _d, f"Pre-activation ResNet-{_d} (He et al. 2016, Identity Mappings).",
                   preact=True)
for _d in (50, 101, 152):
  _imagenet_resnet(f"resnet{_d}_v1", _d, f"ResNet-{_d} as in He et al. 2015 (stride on the first 1x1).",
                   stride_on_1x1=True)
_imagenet_resnet("wide_resnet50_2", 50, "Wide ResNet-50-2 (Zagoruyko & Komodakis 2016; bottleneck width x2).",
                 width_per_group=128)
_imagenet_resnet("resnext50_32x4d", 50, "ResNeXt-50 32x4d (Xie et al. 2017, Table 1).", groups=32, width_per_group=4)
_imagenet_resnet("resnext101_32x8d", 101, "ResNeXt-101 32x8d (Xie et al. 2017).", groups=32, width_per_group=8)
_imagenet_resnet("se_resnet50", 50, "SE-ResNet-50 (Hu et al. 2018, Table 1; r=16, stride on the first 1x1).",
                 se_reduction=16, stride_on_1x1=True)
_imagenet_resnet("se_resnext50_32x4d", 50, "SE-ResNeXt-50 32x4d (Hu et al. 2018, Table 1; r=16).",
                 se_reduction=16, groups=32, width_per_group=4, stride_on_1x1=True)
_imagenet_resnet("sknet50", 50, "SKNet-50 (Li et al. 2019, Table 1): ResNeXt-50 32x4d with SK[M=2, G=32, r=16] 3x3s.",
                 selective_kernel=True, groups=32, width_per_group=4)


class ResNetV2b(ImageClassifier):
  """The CIFAR pre-activation bottleneck network of the course's design homework (practice code "ResNetV2b").

  3x3 conv of 32 (tail), three levels of 4/6/3 pre-activation bottlenecks with
  widths 32/64/128 and outputs 128/256/512 (strides 1/2/2: 28 -> 28 -> 14 -> 7
  for 28x28 crops), final BN-ReLU, head.
  """
  stage_sizes: tuple[int, ...] = (4, 6, 3)
  widths: tuple[int, ...] = (32, 64, 128)
  outputs: tuple[int, ...] = (128, 256, 512)
  stem_features: int = 32
  _: dataclasses.KW_ONLY
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv(self.stem_features, 3, dtype=self.dtype, name="conv1")(x)
    self.sow("intermediates", "stem", x)
    for s, (n, w, o) in enumerate(zip(self.stage_sizes, self.widths, self.outputs)):
      for b in range(n):
        x = rb.PreActBottleneck(o, w, _stage_stride(s, b), self.dtype, name=f"stage{s + 1}_block{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 1}", x)
    return attach_head(self, bn_act(x, train, self.dtype, name="final_bn"), train)


register("resnet_v2b", family="residual", input_shape=(28, 28, 3), num_classes=10)(ResNetV2b)


# --- MobileNet V2 --------------------------------------------------------------

# Sandler et al. 2018, Table 2: (t, c, n, s) per bottleneck row.
MOBILENET_V2_ROWS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                     (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(ImageClassifier):
  """MobileNet V2 (Sandler et al. 2018, Table 2) with width multiplier `width`.

  3x3/2 conv of 32 + BN + ReLU6 ("stem"), the seven bottleneck rows ("stage1"
  .."stage7"), 1x1 conv to 1280 + BN + ReLU6 ("stage8"), head. Channel counts
  are width-scaled and rounded to multiples of 8 (the last conv is never
  narrowed below 1280), as in the reference implementation. The reference's
  dropout (0.2) before the classifier is a head choice here (no parameters).
  """
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = ConvBN(_round8(32 * self.width), 3, 2, act=nn.relu6, dtype=self.dtype, name="conv1")(x, train)
    self.sow("intermediates", "stem", x)
    for r, (t, c, n, s) in enumerate(MOBILENET_V2_ROWS):
      out = _round8(c * self.width)
      for b in range(n):
        x = rb.InvertedResidual(out, t * x.shape[-1], s if b == 0 else 1, self.dtype,
                                name=f"stage{r + 1}_block{b + 1}")(x, train)
      self.sow("intermediates", f"stage{r + 1}", x)
    x = ConvBN(_round8(1280 * max(1.0, self.width)), 1, act=nn.relu6, dtype=self.dtype, name="conv_last")(x, train)
    self.sow("intermediates", "stage8", x)
    return attach_head(self, x, train)


register("mobilenet_v2", family="residual", input_shape=(224, 224, 3), num_classes=1000)(MobileNetV2)


class MobileNetV2_28(ImageClassifier):
  """The 28x28 MobileNet V2 of the course's design homework (practice section, "Practice with MobileNet V2").

  Tail: 3x3 conv of 16 + BN + ReLU6 (28x28x16). Levels of 4/6/3 inverted
  residuals with expansion widths 64/128/256 and outputs 16/64/128; the first
  block of levels 2 and 3 has stride 2 on its depthwise 3x3 (28 -> 14 -> 7).
  1x1 conv to 256 + BN + ReLU6, GAP, dense. The homework's dense layer has 200
  outputs, but its input is a 28x28 crop of CIFAR-10 and its reported accuracy
  (0.89) is a 10-class result, so the default is `num_classes=10`; pass 200 for
  the homework's table.
  """
  expands: tuple[int, ...] = (64, 128, 256)
  outputs: tuple[int, ...] = (16, 64, 128)
  stage_sizes: tuple[int, ...] = (4, 6, 3)
  stem_features: int = 16
  last_features: int = 256
  _: dataclasses.KW_ONLY
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = ConvBN(self.stem_features, 3, act=nn.relu6, dtype=self.dtype, name="conv1")(x, train)
    self.sow("intermediates", "stem", x)
    for s, (n, e, o) in enumerate(zip(self.stage_sizes, self.expands, self.outputs)):
      for b in range(n):
        x = rb.InvertedResidual(o, e, _stage_stride(s, b), self.dtype, name=f"stage{s + 1}_block{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 1}", x)
    x = ConvBN(self.last_features, 1, act=nn.relu6, dtype=self.dtype, name="conv_last")(x, train)
    self.sow("intermediates", "stage4", x)
    return attach_head(self, x, train)


register("mobilenet_v2_28", family="residual", input_shape=(28, 28, 3), num_classes=10)(MobileNetV2_28)


# --- Xception ------------------------------------------------------------------


class Xception(ImageClassifier):
  """Xception (Chollet 2017, Fig. 5), 299x299 -> 10x10x2048.

  Entry flow: 3x3/2 conv 32 and 3x3 conv 64 (both unpadded, + BN + ReLU), then
  modules of 128, 256, 728 ("entry", 19x19x728); middle flow: 8 modules of
  three ReLU-SepConv-BN of 728 ("middle"); exit flow: a (728, 1024) module,
  SepConv 1536 + BN + ReLU, SepConv 2048 + BN + ReLU ("exit"), head.
  """
  middle_repeats: int = 8

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = ConvBN(32, 3, 2, 0, dtype=self.dtype, name="conv1")(x, train)
    x = ConvBN(64, 3, 1, 0, dtype=self.dtype, name="conv2")(x, train)
    self.sow("intermediates", "stem", x)
    for i, f in enumerate((128, 256, 728)):
      x = rb.XceptionBlock((f, f), 2, i > 0, self.dtype, name=f"entry{i + 1}")(x, train)
    self.sow("intermediates", "entry", x)
    for i in range(self.middle_repeats):
      x = rb.XceptionBlock((728,) * 3, 1, True, self.dtype, name=f"middle{i + 1}")(x, train)
    self.sow("intermediates", "middle", x)
    x = rb.XceptionBlock((728, 1024), 2, True, self.dtype, name="exit1")(x, train)
    for i, f in enumerate((1536, 2048)):
      x = rb.SeparableConv(f, dtype=self.dtype, name=f"exit_sepconv{i + 1}")(x)
      x = bn_act(x, train, self.dtype, name=f"exit_bn{i + 1}")
    self.sow("intermediates", "exit", x)
    return attach_head(self, x, train)


register("xception", family="residual", input_shape=(299, 299, 3), num_classes=1000)(Xception)


# --- ShuffleNet V1 / V2 --------------------------------------------------------

# Zhang et al. 2017, Table 1: stage output channels per group count.
SHUFFLENET_V1_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                          4: (272, 544, 1088), 8: (384, 768, 1536)}


class ShuffleNetV1(ImageClassifier):
  """ShuffleNet 1x (Zhang et al. 2017, Table 1) with `groups` in {1, 2, 3, 4, 8}.

  3x3/2 conv of 24 + BN + ReLU, 3x3/2 max pool, stages of 4/8/4 units (the
  first with stride 2), head. Stage 2's first unit has an ungrouped first 1x1.
  """
  groups: int = 3
  stage_sizes: tuple[int, ...] = (4, 8, 4)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv_pool_stem(self, x, train, 24, 3)
    for s, (n, c) in enumerate(zip(self.stage_sizes, SHUFFLENET_V1_CHANNELS[self.groups])):
      for b in range(n):
        x = rb.ShuffleV1Unit(c, self.groups, 2 if b == 0 else 1, s + b > 0, self.dtype,
                             name=f"stage{s + 2}_unit{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 2}", x)
    return attach_head(self, x, train)


for _g in SHUFFLENET_V1_CHANNELS:
  register(f"shufflenet_v1_g{_g}", family="residual", input_shape=(224, 224, 3), num_classes=1000,
           groups=_g)(ShuffleNetV1)
register("shufflenet_v1", family="residual", input_shape=(224, 224, 3), num_classes=1000, groups=3)(ShuffleNetV1)

# Ma et al. 2018, Table 5: stage channels and the final 1x1 conv width per multiplier.
SHUFFLENET_V2_CHANNELS = {"x0_5": (48, 96, 192, 1024), "x1_0": (116, 232, 464, 1024),
                          "x1_5": (176, 352, 704, 1024), "x2_0": (244, 488, 976, 2048)}


class ShuffleNetV2(ImageClassifier):
  """ShuffleNet V2 (Ma et al. 2018, Table 5): stem as V1, stages of 4/8/4 units,
  1x1 conv (1024 or 2048) + BN + ReLU ("conv5"), head."""
  channels: tuple[int, ...] = SHUFFLENET_V2_CHANNELS["x1_0"]
  stage_sizes: tuple[int, ...] = (4, 8, 4)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv_pool_stem(self, x, train, 24, 3)
    for s, (n, c) in enumerate(zip(self.stage_sizes, self.channels)):
      for b in range(n):
        x = rb.ShuffleV2Unit(c, 2 if b == 0 else 1, self.dtype, name=f"stage{s + 2}_unit{b + 1}")(x, train)
      self.sow("intermediates", f"stage{s + 2}", x)
    x = ConvBN(self.channels[-1], 1, dtype=self.dtype, name="conv_last")(x, train)
    self.sow("intermediates", "conv5", x)
    return attach_head(self, x, train)


for _k, _c in SHUFFLENET_V2_CHANNELS.items():
  register(f"shufflenet_v2_{_k}", family="residual", input_shape=(224, 224, 3), num_classes=1000,
           channels=_c)(ShuffleNetV2)


# --- ShiftNet ------------------------------------------------------------------

# The lecture notes "Design", "Residual: ShiftNet" (Wu et al. 2018, ShiftNet-A):
# per group (output channels, shift kernel, expansion of the stride-2 module,
# expansion of the stride-1 modules, number of stride-1 modules).
SHIFTNET_A = ((64, 5, 4, 4, 4), (128, 5, 4, 3, 5), (256, 3, 3, 2, 6), (512, 3, 2, 1, 2))


class ShiftNet(ImageClassifier):
  """ShiftNet-A (Wu et al. 2018): 7x7/2 conv of 32 + BN + ReLU, four groups of
  conv-shift-conv modules, each opening with a stride-2 module (112 -> 56 ->
  28 -> 14 -> 7), head."""
  groups: tuple[tuple[int, ...], ...] = SHIFTNET_A
  stem_features: int = 32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = ConvBN(self.stem_features, 7, 2, dtype=self.dtype, name="conv1")(x, train)
    self.sow("intermediates", "stem", x)
    for g, (c, k, e_down, e, n) in enumerate(self.groups):
      x = rb.CSCBlock(c, e_down, k, 2, self.dtype, name=f"group{g + 1}_block1")(x, train)
      for b in range(n):
        x = rb.CSCBlock(c, e, k, 1, self.dtype, name=f"group{g + 1}_block{b + 2}")(x, train)
      self.sow("intermediates", f"stage{g + 1}", x)
    return attach_head(self, x, train)


register("shiftnet", family="residual", input_shape=(224, 224, 3), num_classes=1000)(ShiftNet)


# --- Inception-ResNet-v2 -------------------------------------------------------


class InceptionResNetV2(ImageClassifier):
  """Inception-ResNet-v2 (Szegedy et al. 2016, Fig. 15), 299x299 -> 8x8x1536.

  Stem to 35x35x320 ("stem"), 10 x block A (scale 0.17, "stage1"), reduction A
  to 17x17x1088, 20 x block B (scale 0.1, "stage2"), reduction B to 8x8x2080,
  9 x block C (scale 0.2) and a final block C without ReLU, 1x1 conv of 1536
  ("stage3"), head. Layer widths follow the TF-slim/Keras reference.
  BN has a scale by default (timm, 55,843,464 parameters); `bn_scale=False`
  drops it as Keras does (55,813,192 trainable parameters).
  """
  repeats: tuple[int, int, int] = (10, 20, 10)
  scales: tuple[float, float, float] = (0.17, 0.1, 0.2)
  bn_scale: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d, use_scale = self.dtype, self.bn_scale
    x = inception.InceptionResNetStem(use_scale, d, name="stem_block")(x, train)
    self.sow("intermediates", "stem", x)
    specs = (inception.INCEPTION_RESNET_A, inception.INCEPTION_RESNET_B, inception.INCEPTION_RESNET_C)
    reductions = (inception.REDUCTION_A, inception.REDUCTION_B)
    for s, (n, scale, spec) in enumerate(zip(self.repeats, self.scales, specs)):
      if s > 0:
        x = inception.InceptionBranches(reductions[s - 1], pool="max", use_scale=use_scale, dtype=d,
                                        name=f"reduction{s}")(x, train)
      for b in range(n):
        last = s == 2 and b == n - 1
        x = inception.InceptionResNetBlock(spec, 1.0 if last else scale, not last, use_scale, d,
                                           name=f"stage{s + 1}_block{b + 1}")(x, train)
      if s == 2:
        x = ConvBN(1536, 1, use_scale=use_scale, dtype=d, name="conv_last")(x, train)
      self.sow("intermediates", f"stage{s + 1}", x)
    return attach_head(self, x, train)


register("inception_resnet_v2", family="residual", input_shape=(299, 299, 3), num_classes=1000)(InceptionResNetV2)


# --- Dual Path Networks --------------------------------------------------------


class DPN(ImageClassifier):
  """Dual Path Network (Chen et al. 2017, Table 1).

  Stem: 7x7/2 conv + BN + ReLU, 3x3/2 max pool. Four stages of dual path
  blocks; stage s has 1x1/3x3 width k_R * 2^s, residual path 256 * 2^s and
  dense increment `incs[s]`; grouped 3x3 with G groups. Final BN-ReLU of the
  concatenated paths, head.
  """
  stem_features: int = 64
  k_r: int = 96
  groups: int = 32
  stage_sizes: tuple[int, ...] = (3, 4, 20, 3)
  incs: tuple[int, ...] = (16, 32, 24, 128)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _conv_pool_stem(self, x, train, self.stem_features, 7)
    paths = (x, x[..., :0])
    for s, (n, inc) in enumerate(zip(self.stage_sizes, self.incs)):
      for b in range(n):
        paths = rb.DualPathBlock(self.k_r * 2 ** s, 256 * 2 ** s, inc, self.groups,
                                 stride=_stage_stride(s, b), project=b == 0,
                                 dtype=self.dtype, name=f"stage{s + 1}_block{b + 1}")(paths, train)
      self.sow("intermediates", f"stage{s + 1}", jnp.concatenate(paths, axis=-1))
    x = bn_act(jnp.concatenate(paths, axis=-1), train, self.dtype, name="final_bn")
    return attach_head(self, x, train)


register("dpn92", family="residual", input_shape=(224, 224, 3), num_classes=1000,
         stem_features=64, k_r=96, groups=32, stage_sizes=(3, 4, 20, 3), incs=(16, 32, 24, 128))(DPN)
register("dpn98", family="residual", input_shape=(224, 224, 3), num_classes=1000,
         stem_features=96, k_r=160, groups=40, stage_sizes=(3, 6, 20, 3), incs=(16, 32, 32, 128))(DPN)
