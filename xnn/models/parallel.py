"""Parallel (multi-branch) CNNs (the lecture notes "Design", "Parallel").

* `googlenet` (Szegedy et al. 2014, Table 1) in torchvision's layout
  (conv-BN-ReLU everywhere, 3x3 in the "5x5" branch); auxiliary classifiers
  with ``aux_logits=True``.
* `inception_v3` (Szegedy et al. 2015, Table 1) in torchvision's layout, 299x299,
  auxiliary head with ``aux_logits=True`` (the default, as in torchvision).
* `inception_v4` (Szegedy et al. 2016, Figs. 3-9), timm's layout.
* `squeezenet1_0`, `squeezenet1_1` (Iandola et al. 2016, Table 1; v1.1 from the
  SqueezeNet repository), torchvision's layout, built from `FireModule`.

The Inception modules are in `xnn.models.inception`. With ``aux_logits`` the
models return ``(logits, aux_logits...)`` when ``train=True`` and only the
logits otherwise (as torchvision).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from xnn.models.inception import (STEM_A, STEM_B, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
                                  InceptionV1, InceptionV1Aux, InceptionV3Aux, InceptionV4A, InceptionV4B,
                                  InceptionV4C, InceptionV4Stem, ReductionV4A, ReductionV4B, conv_bn_chain)
from xnn.models.heads import ImageClassifier, attach_head
from xnn.models.layers import ConvBN, conv
from xnn.models.pooling import max_pool
from xnn.models.registry import register

# GoogLeNet Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(ImageClassifier):
  """GoogLeNet / Inception v1 (Szegedy et al. 2014, Table 1), torchvision layout.

  224 -> conv7x7/2 64 (112) -> pool (56) -> conv1x1 64, conv3x3 192 -> pool (28)
  -> 3a, 3b (256, 480) -> pool (14) -> 4a..4e (512, 512, 512, 528, 832) -> pool
  (7) -> 5a, 5b (832, 1024) -> GAP -> dropout 0.2 -> fc. Max pools use
  ceil_mode as torchvision. ``kernel5=5`` gives the paper's 5x5 branch.
  6,624,904 parameters at 1000 classes without the auxiliary heads.
  """
  aux_logits: bool = False
  kernel5: int = 3
  dropout: float = 0.2

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Any:
    d = self.dtype
    x = ConvBN(64, 7, 2, dtype=d, name="conv1")(x, train)
    self.sow("intermediates", "stage1", x)                       # 112x112x64
    x = max_pool(x, 3, 2, ceil_mode=True)
    x = ConvBN(64, 1, dtype=d, name="conv2")(x, train)
    x = ConvBN(192, 3, dtype=d, name="conv3")(x, train)
    self.sow("intermediates", "stage2", x)                       # 56x56x192
    x = max_pool(x, 3, 2, ceil_mode=True)
    aux = []
    for stage, names in ((3, ("3a", "3b")), (4, ("4a", "4b", "4c", "4d", "4e")), (5, ("5a", "5b"))):
      for n in names:
        if self.aux_logits and train and n in ("4b", "4e"):
          aux.append(InceptionV1Aux(self.num_classes, d, name=f"aux{len(aux) + 1}")(x, train))
        x = InceptionV1(*GOOGLENET_MODULES[n], kernel5=self.kernel5, dtype=d, name=f"inception{n}")(x, train)
      self.sow("intermediates", f"stage{stage}", x)              # 28x28x480, 14x14x832, 7x7x1024
      if stage == 3:
        x = max_pool(x, 3, 2, ceil_mode=True)
      elif stage == 4:
        x = max_pool(x, 2, 2, ceil_mode=True)
    logits = attach_head(self, x, train, dropout=self.dropout)
    return (logits, *aux) if aux else logits


class InceptionV3(ImageClassifier):
  """Inception-v3 (Szegedy et al. 2015, Table 1), torchvision layout, 299x299 input.

  Stem 299 -> 35x35x192; 3 x InceptionA (35x35x288); InceptionB (17x17x768);
  4 x InceptionC; InceptionD (8x8x1280); 2 x InceptionE (8x8x2048); GAP;
  dropout 0.5; fc. The auxiliary classifier (on the 17x17x768 map) is
  built when ``aux_logits``. 27,161,264 parameters at 1000 classes with the
  auxiliary head, 23,834,568 without. The smallest input is 75x75 without the
  auxiliary head (``aux_logits=False``) and 299x299 with it: its 5x5/3 pool and
  5x5 convolution need the 17x17 grid.
  """
  aux_logits: bool = True
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Any:
    d = self.dtype
    x = max_pool(conv_bn_chain(x, STEM_A, train, "stem{}", start=1, dtype=d), 3, 2)
    self.sow("intermediates", "stage1", x)                       # 73x73x64
    x = max_pool(conv_bn_chain(x, STEM_B, train, "stem{}", start=4, dtype=d), 3, 2)
    self.sow("intermediates", "stage2", x)                       # 35x35x192
    for i, pf in enumerate((32, 64, 64)):
      x = InceptionA(pf, d, name=f"mixed5{'bcd'[i]}")(x, train)
    self.sow("intermediates", "stage3", x)                       # 35x35x288
    x = InceptionB(d, name="mixed6a")(x, train)
    for i, c7 in enumerate((128, 160, 160, 192)):
      x = InceptionC(c7, d, name=f"mixed6{'bcde'[i]}")(x, train)
    self.sow("intermediates", "stage4", x)                       # 17x17x768
    aux = InceptionV3Aux(self.num_classes, d, name="aux")(x, train) if self.aux_logits and train else None
    x = InceptionD(d, name="mixed7a")(x, train)
    x = InceptionE(d, name="mixed7b")(x, train)
    x = InceptionE(d, name="mixed7c")(x, train)
    self.sow("intermediates", "stage5", x)                       # 8x8x2048
    logits = attach_head(self, x, train, dropout=self.dropout)
    return (logits, aux) if aux is not None else logits


class InceptionV4(ImageClassifier):
  """Inception-v4 (Szegedy et al. 2016, Fig. 9), timm's layout, 299x299 input.

  Stem (35x35x384) -> 4 x Inception-A -> Reduction-A (17x17x1024) -> 7 x
  Inception-B -> Reduction-B (8x8x1536) -> 3 x Inception-C -> GAP -> dropout
  (paper: keep 0.8) -> fc. 42,679,816 parameters at 1000 classes (timm's
  inception_v4, "42.7M"). The smallest input is 75x75.
  """
  dropout: float = 0.2

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    x = InceptionV4Stem(d, name="stem_block")(x, train)
    self.sow("intermediates", "stem", x)                         # 35x35x384
    for i in range(4):
      x = InceptionV4A(dtype=d, name=f"a{i + 1}")(x, train)
    self.sow("intermediates", "stage1", x)
    x = ReductionV4A(dtype=d, name="reduction_a")(x, train)
    for i in range(7):
      x = InceptionV4B(dtype=d, name=f"b{i + 1}")(x, train)
    self.sow("intermediates", "stage2", x)                       # 17x17x1024
    x = ReductionV4B(dtype=d, name="reduction_b")(x, train)
    for i in range(3):
      x = InceptionV4C(d, name=f"c{i + 1}")(x, train)
    self.sow("intermediates", "stage3", x)                       # 8x8x1536
    return attach_head(self, x, train, dropout=self.dropout)


class FireModule(nn.Module):
  """SqueezeNet fire module (Iandola et al. 2016, sec. 3.1, Fig. 1).

  squeeze 1x1 (s1x1 filters) -> ReLU -> concat(expand 1x1 (e1x1), expand 3x3
  (e3x3)) -> ReLU. Convolutions carry biases and no BatchNorm, as in the paper.
  """
  squeeze: int
  expand1x1: int
  expand3x3: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = nn.relu(conv(self.squeeze, 1, use_bias=True, dtype=self.dtype, name="squeeze")(x))
    e1 = conv(self.expand1x1, 1, use_bias=True, dtype=self.dtype, name="expand1x1")(s)
    e3 = conv(self.expand3x3, 3, use_bias=True, dtype=self.dtype, name="expand3x3")(s)
    return nn.relu(jnp.concatenate([e1, e3], axis=-1))


# SqueezeNet fire modules: (squeeze, expand1x1, expand3x3); "M" a 3x3/2 ceil-mode max pool.
SQUEEZENET_CONFIGS = {
    "1_0": ((96, 7), ("M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128),
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), "M", (64, 256, 256))),
    "1_1": ((64, 3), ("M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}


class SqueezeNet(ImageClassifier):
  """SqueezeNet (Iandola et al. 2016, Table 1; v1.1 from the authors' repository).

  conv/2 (96x7x7 in v1.0, 64x3x3 in v1.1) -> fire modules with 3x3/2 max pools
  -> dropout 0.5 on the map -> 1x1 conv classifier averaged over positions (the
  ``pixel`` head, the lecture notes' idea 1). torchvision also applies a ReLU to
  the per-pixel logits before averaging; the ``pixel`` head does not (same
  parameters: 1,248,424 for v1.0 and 1,235,496 for v1.1 at 1000 classes).
  """
  version: str = "1_0"
  dropout: float = 0.5
  _: dataclasses.KW_ONLY
  head: str = "pixel"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    (f0, k0), layers = SQUEEZENET_CONFIGS[self.version]
    x = nn.relu(conv(f0, k0, 2, 0, use_bias=True, dtype=self.dtype, name="conv1")(x))
    stage, fire = 1, 0
    for layer in layers:
      if layer == "M":
        self.sow("intermediates", f"stage{stage}", x)
        stage += 1
        x = max_pool(x, 3, 2, ceil_mode=True)
      else:
        fire += 1
        x = FireModule(*layer, dtype=self.dtype, name=f"fire{fire + 1}")(x)
    self.sow("intermediates", f"stage{stage}", x)
    if self.dropout:   # on the map, whatever the head (torchvision: before the 1x1 classifier)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return attach_head(self, x, train)


# Auxiliary loss weights: GoogLeNet's two heads 0.3 each (Szegedy et al. 2014, sec. 5: "the losses of the
# auxiliary classifiers were weighted by 0.3"); Inception-v3's one head 0.4 (TF-slim's
# train_image_classifier.py, weights=0.4 on the AuxLogits loss; the paper gives no weight, and torchvision's
# reference training script adds no auxiliary loss).
register("googlenet", family="parallel", input_shape=(224, 224, 3), aux_loss_weight=0.3,
         description="GoogLeNet (Szegedy et al. 2014), torchvision layout.")(GoogLeNet)
register("inception_v3", family="parallel", input_shape=(299, 299, 3), aux_loss_weight=0.4,
         description="Inception-v3 (Szegedy et al. 2015), torchvision layout.")(InceptionV3)
register("inception_v4", family="parallel", input_shape=(299, 299, 3),
         description="Inception-v4 (Szegedy et al. 2016).")(InceptionV4)
register("squeezenet1_0", family="parallel", input_shape=(224, 224, 3), version="1_0",
         description="SqueezeNet 1.0 (Iandola et al. 2016).")(SqueezeNet)
register("squeezenet1_1", family="parallel", input_shape=(224, 224, 3), version="1_1",
         description="SqueezeNet 1.1 (2.4x fewer MACs than 1.0, same accuracy).")(SqueezeNet)
