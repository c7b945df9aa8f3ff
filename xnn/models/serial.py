"""Serial CNNs: one path from input to output (the lecture notes "Design", "Serial").

* `lenet5`: the 32x32 LeNet-5 of the LeNet-5 homework (activation and parameter table).
* `alexnet`: torchvision's one-tower AlexNet (64/192/384/256/256 filters,
  Krizhevsky 2014 "One weird trick" layout), adaptive average pool to 6x6,
  classifier 4096-4096 with dropout 0.5.
* `alexnet_original`: Krizhevsky et al. 2012 (Fig. 2, sec. 3): 96/256/384/384/256
  filters on 227x227, LRN after conv1/conv2 then max pool, two-group convolutions
  in conv2, conv4, conv5 (the two-GPU split). `caffenet`: the Caffe reference
  variant (bvlc_reference_caffenet prototxt): pool before LRN, Caffe's LRN
  (k=1, alpha/n).
* `vgg11..vgg19` and `_bn` (Simonyan & Zisserman 2015, Table 1, configurations
  A, B, D, E) in torchvision's layout; `vgg11_cifar`: the 32x32 VGG-11 of the
  tutorial "Week2 CNN Architectures" (FC 512-2048-2048-10, no adaptive pooling).
* `mobilenet_v1` (Howard et al. 2017, Table 1) with width multiplier alpha.

Every network is an `ImageClassifier`; the flatten_mlp head of LeNet, AlexNet
and VGG gets the reference's hidden sizes and dropout unless ``head_kwargs`` say otherwise.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.heads import ImageClassifier, attach_head
from xnn.models.layers import LRN, ConvBN, batch_norm, conv
from xnn.models.pooling import adaptive_avg_pool, max_pool
from xnn.models.registry import register


class LeNet5(ImageClassifier):
  """LeNet-5 as drawn in the LeNet-5 homework (activation and parameter table): LeCun et al. 1998 layout.

  32x32xC -> conv5x5x8 -> maxpool2 -> conv5x5x16 -> maxpool2 -> fc120 -> fc84
  -> num_classes, ReLU activations, valid convolutions. At C=3 the parameter
  counts are 608, 3,216, 48,120, 10,164 and 850 (62,958 in all); the
  homework's column (208, 416, 48,001, 10,081, 841) forgets the input channels
  of the convolutions and counts one bias per layer.
  """
  _: dataclasses.KW_ONLY
  num_classes: int = 10
  head: str = "flatten_mlp"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = max_pool(nn.relu(conv(8, 5, 1, 0, use_bias=True, dtype=self.dtype, name="conv1")(x)), 2, 2)
    self.sow("intermediates", "stage1", x)
    x = max_pool(nn.relu(conv(16, 5, 1, 0, use_bias=True, dtype=self.dtype, name="conv2")(x)), 2, 2)
    self.sow("intermediates", "stage2", x)
    return attach_head(self, x, train, mlp_hidden=(120, 84), mlp_dropout=0.0)


class AlexNet(ImageClassifier):
  """AlexNet in torchvision's layout (Krizhevsky 2014, "One weird trick", one tower).

  conv11/4 64 -> pool -> conv5 192 -> pool -> conv3 384 -> conv3 256 -> conv3 256
  -> pool -> adaptive avg pool 6x6 -> 4096 -> 4096 -> classes. Convolutions carry
  biases; 61,100,840 parameters at 1000 classes, as torchvision's alexnet.
  The flatten_mlp head puts dropout after each hidden ReLU (torchvision: before
  each hidden Linear); the parameters are the same.
  """
  pool_size: int = 6
  _: dataclasses.KW_ONLY
  head: str = "flatten_mlp"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    c = lambda f, k, s, p, name: conv(f, k, s, p, use_bias=True, dtype=self.dtype, name=name)  # noqa: E731
    x = max_pool(nn.relu(c(64, 11, 4, 2, "conv1")(x)), 3, 2)
    self.sow("intermediates", "stage1", x)
    x = max_pool(nn.relu(c(192, 5, 1, 2, "conv2")(x)), 3, 2)
    self.sow("intermediates", "stage2", x)
    x = nn.relu(c(384, 3, 1, 1, "conv3")(x))
    self.sow("intermediates", "stage3", x)
    x = nn.relu(c(256, 3, 1, 1, "conv4")(x))
    self.sow("intermediates", "stage4", x)
    x = max_pool(nn.relu(c(256, 3, 1, 1, "conv5")(x)), 3, 2)
    self.sow("intermediates", "stage5", x)
    x = adaptive_avg_pool(x, self.pool_size)
    return attach_head(self, x, train, mlp_hidden=(4096, 4096))


class AlexNetOriginal(ImageClassifier):
  """AlexNet of Krizhevsky et al. 2012 (Fig. 2, sec. 3.3-3.5) on 227x227 inputs.

  conv1 96x11x11/4 (227 -> 55) -> ReLU -> LRN -> max pool 3/2 (27) -> conv2
  256x5x5 p2, 2 groups -> ReLU -> LRN -> pool (13) -> conv3 384x3x3 -> conv4
  384x3x3, 2 groups -> conv5 256x3x3, 2 groups -> pool (6) -> 4096 -> 4096 ->
  classes. The groups are the paper's two-GPU split (conv3 sees both towers).
  With ``pool_before_lrn`` (CaffeNet, bvlc_reference_caffenet) each LRN follows
  its pool and uses Caffe's LRN (k=1, alpha/n); the paper's LRN is k=2, n=5,
  alpha=1e-4, beta=0.75. 60,965,224 parameters at 1000 classes in both.
  An adaptive average pool to 6x6 (identity at 227) lets other sizes through.
  """
  pool_before_lrn: bool = False
  _: dataclasses.KW_ONLY
  head: str = "flatten_mlp"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    c = lambda f, k, p, g, name, s=1: conv(f, k, s, p, groups=g, use_bias=True,  # noqa: E731
                                           dtype=self.dtype, name=name)
    lrn = LRN(5, 1e-4, 0.75, 1.0, True) if self.pool_before_lrn else LRN(5, 1e-4, 0.75, 2.0, False)

    def norm_pool(y: jnp.ndarray) -> jnp.ndarray:
      return lrn(max_pool(y, 3, 2)) if self.pool_before_lrn else max_pool(lrn(y), 3, 2)

    x = nn.relu(c(96, 11, 0, 1, "conv1", 4)(x))
    self.sow("intermediates", "stage0", x)           # conv1: 55x55x96
    x = norm_pool(x)
    self.sow("intermediates", "stage1", x)           # 27x27x96
    x = norm_pool(nn.relu(c(256, 5, 2, 2, "conv2")(x)))
    self.sow("intermediates", "stage2", x)           # 13x13x256
    x = nn.relu(c(384, 3, 1, 1, "conv3")(x))
    x = nn.relu(c(384, 3, 1, 2, "conv4")(x))
    self.sow("intermediates", "stage3", x)           # 13x13x384
    x = max_pool(nn.relu(c(256, 3, 1, 2, "conv5")(x)), 3, 2)
    self.sow("intermediates", "stage4", x)           # 6x6x256
    x = adaptive_avg_pool(x, 6)
    return attach_head(self, x, train, mlp_hidden=(4096, 4096))


# Simonyan & Zisserman 2015, Table 1: numbers are 3x3 conv widths, "M" a 2x2/2 max pool.
VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),               # A
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),      # B
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),                                                            # D
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),                                                       # E
}


class VGG(ImageClassifier):
  """VGG (Simonyan & Zisserman 2015, Table 1) in torchvision's layout.

  3x3 convolutions with bias (and BatchNorm after each when ``batch_norm``),
  five 2x2 max pools (224 -> 7), adaptive average pool to ``pool_size`` (7;
  ``None`` to flatten the map as is, as the 32x32 `vgg11_cifar` does), then the
  flatten_mlp head with ``hidden`` sizes and dropout 0.5.
  """
  depth: int = 16
  batch_norm: bool = False
  hidden: tuple[int, ...] = (4096, 4096)
  pool_size: int | None = 7
  _: dataclasses.KW_ONLY
  head: str = "flatten_mlp"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    stage, i = 1, 0
    for v in VGG_CONFIGS[self.depth]:
      if v == "M":
        x = max_pool(x, 2, 2)
        self.sow("intermediates", f"stage{stage}", x)
        stage += 1
        continue
      i += 1
      x = conv(v, 3, use_bias=True, dtype=self.dtype, name=f"conv{i}")(x)
      if self.batch_norm:
        x = batch_norm(train, self.dtype, name=f"bn{i}")(x)
      x = nn.relu(x)
    if self.pool_size:
      x = adaptive_avg_pool(x, self.pool_size)
    return attach_head(self, x, train, mlp_hidden=self.hidden)


# Howard et al. 2017, Table 1: (pointwise output channels, depthwise stride) per dw/pw pair.
MOBILENET_V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(ImageClassifier):
  """MobileNet v1 (Howard et al. 2017, Table 1) with width multiplier alpha (sec. 3.3).

  conv3x3/2 32 -> 13 depthwise-separable pairs (3x3 depthwise-BN-ReLU,
  1x1 pointwise-BN-ReLU) -> global average pool -> fc. Convolutions have no
  bias (BatchNorm follows each), channels are int(alpha * c). At alpha=1 the
  count is 4,231,976 (the paper's Table 8: "4.2 million").
  """
  width: float = 1.0
  dropout: float = 0.001

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    ch = lambda c: max(1, int(c * self.width))  # noqa: E731
    x = ConvBN(ch(32), 3, 2, dtype=self.dtype, name="conv1")(x, train)
    stage = 1
    for i, (c, s) in enumerate(MOBILENET_V1_LAYERS):
      if s == 2:
        self.sow("intermediates", f"stage{stage}", x)
        stage += 1
      x = ConvBN(x.shape[-1], 3, s, groups=x.shape[-1], dtype=self.dtype, name=f"dw{i + 1}")(x, train)
      x = ConvBN(ch(c), 1, dtype=self.dtype, name=f"pw{i + 1}")(x, train)
    self.sow("intermediates", f"stage{stage}", x)
    return attach_head(self, x, train, dropout=self.dropout)


register("lenet5", family="serial", input_shape=(32, 32, 3), num_classes=10,
         description="LeNet-5 (the 32x32 homework variant: 8 and 16 feature maps).")(LeNet5)
register("alexnet", family="serial", input_shape=(224, 224, 3),
         description="AlexNet, torchvision layout (64/192/384/256/256, adaptive pool 6x6).")(AlexNet)
register("alexnet_original", family="serial", input_shape=(227, 227, 3),
         description="AlexNet of Krizhevsky et al. 2012 (96/256/384/384/256, LRN, 2 groups).")(AlexNetOriginal)
register("caffenet", family="serial", input_shape=(227, 227, 3), pool_before_lrn=True,
         description="CaffeNet (bvlc_reference_caffenet): AlexNet with pooling before LRN.")(AlexNetOriginal)
for _depth in (11, 13, 16, 19):
  for _bn in (False, True):
    register(f"vgg{_depth}{'_bn' if _bn else ''}", family="serial", input_shape=(224, 224, 3),
             depth=_depth, batch_norm=_bn,
             description=f"VGG-{_depth}{' with BatchNorm' if _bn else ''} (Simonyan & Zisserman 2015)")(VGG)
register("vgg11_cifar", family="serial", input_shape=(32, 32, 3), num_classes=10,
         depth=11, hidden=(2048, 2048), pool_size=None,
         description='VGG-11 on 32x32 inputs (tutorial "Week2 CNN Architectures"): FC 512 -> 2048 -> 2048 -> classes.',
         )(VGG)
for _w, _suffix in ((1.0, ""), (0.75, "_075"), (0.5, "_050"), (0.25, "_025")):
  register(f"mobilenet_v1{_suffix}", family="serial", input_shape=(224, 224, 3), width=_w,
           description=f"MobileNet v1, width multiplier {_w} (Howard et al. 2017)")(MobileNetV1)
