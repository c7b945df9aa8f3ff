"""Building blocks shared by the serial, parallel and dense CNN families.

* Pooling with PyTorch semantics: `max_pool` (explicit padding, optional
  ``ceil_mode`` as used by GoogLeNet and SqueezeNet), `avg_pool`
  (``count_include_pad`` switch) and `adaptive_avg_pool` (the adaptive pool
  torchvision's AlexNet/VGG put before their classifier).
* `LRN`: local response normalisation across channels (Krizhevsky et al. 2012,
  section 3.3).
* `FireModule` (Iandola et al. 2016, SqueezeNet, section 3.1).
* GoogLeNet's `InceptionV1` module (Szegedy et al. 2014, Fig. 2b / Table 1) and
  its auxiliary classifier `InceptionV1Aux`.
* Inception-v3's factorised modules `InceptionA`..`InceptionE` and `InceptionV3Aux`
  (Szegedy et al. 2015, "Rethinking the Inception Architecture", Figs. 5-7 and
  Table 1, in torchvision's layout).
* Inception-v4's stem, `InceptionV4A/B/C` and `ReductionV4A/B`
  (Szegedy et al. 2016, "Inception-v4, Inception-ResNet ...", Figs. 3-8).
* DenseNet's `DenseLayer`, `DenseBlock` and `Transition`
  (Huang et al. 2017, section 3 and Table 1).

A grouped convolution is `layers.conv(..., groups=g)`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xnn.models.layers import ConvBN, batch_norm, conv

Dtype = Any


# ----------------------------------------------------------------------------- pooling


def _pool_pad(size: int, k: int, s: int, p: int, ceil_mode: bool) -> tuple[int, int]:
  """(left, right) padding reproducing PyTorch's output size, ceil_mode included."""
  if not ceil_mode:
    return (p, p)
  out = -(-(size + 2 * p - k) // s) + 1
  if (out - 1) * s >= size + p:   # PyTorch: the last window must start inside the input
    out -= 1
  return (p, max(p, (out - 1) * s + k - size - p))


def max_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
  """Max pooling over NHWC with PyTorch's padding and ``ceil_mode`` semantics."""
  pads = tuple(_pool_pad(x.shape[a], kernel, stride, padding, ceil_mode) for a in (1, 2))
  return nn.max_pool(x, (kernel, kernel), (stride, stride), padding=pads)


def avg_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0,
             count_include_pad: bool = True) -> jnp.ndarray:
  """Average pooling over NHWC (PyTorch's ``count_include_pad`` switch)."""
  return nn.avg_pool(x, (kernel, kernel), (stride, stride),
                     padding=((padding, padding), (padding, padding)),
                     count_include_pad=count_include_pad)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging matrix: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
  m = np.zeros((out, size), np.float32)
  for i in range(out):
    lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x: jnp.ndarray, output_size: int | tuple[int, int]) -> jnp.ndarray:
  """PyTorch's ``AdaptiveAvgPool2d``: any H x W -> output_size, bins as in PyTorch.

  Smaller inputs are spread over several bins (a 1x1 map becomes a constant
  7x7 map), so AlexNet/VGG's flatten head sees the same size at any resolution.
  """
  oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
  h, w = x.shape[1], x.shape[2]
  if (h, w) == (oh, ow):
    return x
  ph = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
  pw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
  return jnp.einsum("oh,nhwc,pw->nopc", ph, x, pw)


class LRN(nn.Module):
  """Local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3).

  b_i = a_i / (k + alpha' * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, where alpha' is
  ``alpha`` (the paper's formula) or ``alpha / size`` when ``alpha_over_size``
  (Caffe's and PyTorch's convention). The paper uses k=2, n=5, alpha=1e-4,
  beta=0.75; Caffe's reference prototxt uses k=1 with alpha/n.
  """
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0
  alpha_over_size: bool = False

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    half = self.size // 2
    sq = jnp.square(x.astype(jnp.float32))
    s = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, 1, 1, self.size), (1, 1, 1, 1),
                              ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)))
    alpha = self.alpha / self.size if self.alpha_over_size else self.alpha
    return (x / jnp.power(self.k + alpha * s, self.beta).astype(x.dtype)).astype(x.dtype)


def dropout_then_head(module: nn.Module, x: jnp.ndarray, rate: float, train: bool) -> jnp.ndarray:
  """Classifier of the GAP networks (GoogLeNet, Inception, DenseNet, MobileNet).

  With the default ``gap_linear`` head the map is averaged first and dropout acts
  on the pooled vector, exactly as in the references (pool -> dropout -> fc);
  any other head receives the (dropped-out) feature map.
  """
  from xnn.models.heads import Head
  if module.head == "gap_linear":
    x = jnp.mean(x, axis=(1, 2), keepdims=True)
  if rate:
    x = nn.Dropout(rate, deterministic=not train)(x)
  return Head(module.num_classes, module.head, dtype=module.dtype, name="head",
              **(module.head_kwargs or {}))(x, train)


# ----------------------------------------------------------------------------- SqueezeNet


class FireModule(nn.Module):
  """SqueezeNet fire module (Iandola et al. 2016, sec. 3.1, Fig. 1).

  squeeze 1x1 (s1x1 filters) -> ReLU -> concat(expand 1x1 (e1x1), expand 3x3
  (e3x3)) -> ReLU. Convolutions carry biases and no BatchNorm, as in the paper.
  """
  squeeze: int
  expand1x1: int
  expand3x3: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = nn.relu(conv(self.squeeze, 1, use_bias=True, dtype=self.dtype, name="squeeze")(x))
    e1 = conv(self.expand1x1, 1, use_bias=True, dtype=self.dtype, name="expand1x1")(s)
    e3 = conv(self.expand3x3, 3, use_bias=True, dtype=self.dtype, name="expand3x3")(s)
    return nn.relu(jnp.concatenate([e1, e3], axis=-1))


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


def _cbn(f: int, k: Any, s: int = 1, p: Any = None, dtype: Dtype = jnp.float32,
         name: str | None = None) -> ConvBN:
  return ConvBN(f, k, s, p, dtype=dtype, name=name)


class InceptionA(nn.Module):
  """Inception-v3 35x35 module (Szegedy et al. 2015, Fig. 5): 5x5 as two 3x3."""
  pool_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b1 = _cbn(64, 1, dtype=d, name="b1x1")(x, train)
    b5 = _cbn(48, 1, dtype=d, name="b5x5_1")(x, train)
    b5 = _cbn(64, 5, dtype=d, name="b5x5_2")(b5, train)
    b3 = _cbn(64, 1, dtype=d, name="b3x3dbl_1")(x, train)
    b3 = _cbn(96, 3, dtype=d, name="b3x3dbl_2")(b3, train)
    b3 = _cbn(96, 3, dtype=d, name="b3x3dbl_3")(b3, train)
    bp = _cbn(self.pool_features, 1, dtype=d, name="bpool")(avg_pool(x, 3, 1, 1), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Inception-v3 grid reduction 35 -> 17 (Szegedy et al. 2015, Fig. 10)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b3 = _cbn(384, 3, 2, 0, dtype=d, name="b3x3")(x, train)
    bd = _cbn(64, 1, dtype=d, name="b3x3dbl_1")(x, train)
    bd = _cbn(96, 3, dtype=d, name="b3x3dbl_2")(bd, train)
    bd = _cbn(96, 3, 2, 0, dtype=d, name="b3x3dbl_3")(bd, train)
    return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
  """Inception-v3 17x17 module (Szegedy et al. 2015, Fig. 6): 7x7 as 1x7 and 7x1."""
  c7: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d, c7 = self.dtype, self.c7
    b1 = _cbn(192, 1, dtype=d, name="b1x1")(x, train)
    b7 = x
    for i, (f, k) in enumerate([(c7, 1), (c7, (1, 7)), (192, (7, 1))]):
      b7 = _cbn(f, k, dtype=d, name=f"b7x7_{i + 1}")(b7, train)
    bd = x
    for i, (f, k) in enumerate([(c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))]):
      bd = _cbn(f, k, dtype=d, name=f"b7x7dbl_{i + 1}")(bd, train)
    bp = _cbn(192, 1, dtype=d, name="bpool")(avg_pool(x, 3, 1, 1), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Inception-v3 grid reduction 17 -> 8 (torchvision's Mixed_7a)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b3 = _cbn(192, 1, dtype=d, name="b3x3_1")(x, train)
    b3 = _cbn(320, 3, 2, 0, dtype=d, name="b3x3_2")(b3, train)
    b7 = x
    for i, (f, k, s, p) in enumerate([(192, 1, 1, None), (192, (1, 7), 1, None),
                                      (192, (7, 1), 1, None), (192, 3, 2, 0)]):
      b7 = _cbn(f, k, s, p, dtype=d, name=f"b7x7x3_{i + 1}")(b7, train)
    return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class _SplitConv(nn.Module):
  """1x3 and 3x1 convolutions of one input, concatenated (Szegedy et al. 2015, Fig. 7)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    a = _cbn(self.features, (1, 3), dtype=self.dtype, name="a")(x, train)
    b = _cbn(self.features, (3, 1), dtype=self.dtype, name="b")(x, train)
    return jnp.concatenate([a, b], axis=-1)


class InceptionE(nn.Module):
  """Inception-v3 8x8 module with expanded filter banks (Szegedy et al. 2015, Fig. 7)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b1 = _cbn(320, 1, dtype=d, name="b1x1")(x, train)
    b3 = _SplitConv(384, d, name="b3x3_2")(_cbn(384, 1, dtype=d, name="b3x3_1")(x, train), train)
    bd = _cbn(448, 1, dtype=d, name="b3x3dbl_1")(x, train)
    bd = _cbn(384, 3, dtype=d, name="b3x3dbl_2")(bd, train)
    bd = _SplitConv(384, d, name="b3x3dbl_3")(bd, train)
    bp = _cbn(192, 1, dtype=d, name="bpool")(avg_pool(x, 3, 1, 1), train)
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
    x = avg_pool(x, 5, 3)
    x = _cbn(128, 1, dtype=self.dtype, name="conv0")(x, train)
    x = _cbn(768, 5, 1, 0, dtype=self.dtype, name="conv1")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


# ----------------------------------------------------------------------------- Inception-v4


def _chain(x: jnp.ndarray, spec: Sequence[tuple], train: bool, dtype: Dtype, prefix: str) -> jnp.ndarray:
  """Applies conv-BN-ReLU layers given as (features, kernel[, stride, padding])."""
  for i, layer in enumerate(spec):
    f, k = layer[0], layer[1]
    s = layer[2] if len(layer) > 2 else 1
    p = layer[3] if len(layer) > 3 else None
    x = _cbn(f, k, s, p, dtype=dtype, name=f"{prefix}_{i}")(x, train)
  return x


class InceptionV4Stem(nn.Module):
  """Inception-v4 / Inception-ResNet-v2 stem (Szegedy et al. 2016, Fig. 3): 299 -> 35x35x384."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    x = _chain(x, [(32, 3, 2, 0), (32, 3, 1, 0), (64, 3)], train, d, "conv")
    x = jnp.concatenate([max_pool(x, 3, 2), _cbn(96, 3, 2, 0, dtype=d, name="mixed3a")(x, train)], -1)
    a = _chain(x, [(64, 1), (96, 3, 1, 0)], train, d, "mixed4a_b0")
    b = _chain(x, [(64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, 0)], train, d, "mixed4a_b1")
    x = jnp.concatenate([a, b], -1)
    return jnp.concatenate([_cbn(192, 3, 2, 0, dtype=d, name="mixed5a")(x, train), max_pool(x, 3, 2)], -1)


class InceptionV4A(nn.Module):
  """Inception-v4 35x35 block (Szegedy et al. 2016, Fig. 4): 384 -> 384 channels."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = _chain(x, [(96, 1)], train, d, "b0")
    b1 = _chain(x, [(64, 1), (96, 3)], train, d, "b1")
    b2 = _chain(x, [(64, 1), (96, 3), (96, 3)], train, d, "b2")
    b3 = _chain(avg_pool(x, 3, 1, 1, count_include_pad=False), [(96, 1)], train, d, "b3")
    return jnp.concatenate([b0, b1, b2, b3], -1)


class ReductionV4A(nn.Module):
  """Reduction-A, 35 -> 17 (Szegedy et al. 2016, Fig. 7; k, l, m, n = 192, 224, 256, 384)."""
  k: int = 192
  l: int = 224
  m: int = 256
  n: int = 384
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = _chain(x, [(self.n, 3, 2, 0)], train, d, "b0")
    b1 = _chain(x, [(self.k, 1), (self.l, 3), (self.m, 3, 2, 0)], train, d, "b1")
    return jnp.concatenate([b0, b1, max_pool(x, 3, 2)], -1)


class InceptionV4B(nn.Module):
  """Inception-v4 17x17 block (Szegedy et al. 2016, Fig. 5): 1024 -> 1024 channels."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = _chain(x, [(384, 1)], train, d, "b0")
    b1 = _chain(x, [(192, 1), (224, (1, 7)), (256, (7, 1))], train, d, "b1")
    b2 = _chain(x, [(192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))], train, d, "b2")
    b3 = _chain(avg_pool(x, 3, 1, 1, count_include_pad=False), [(128, 1)], train, d, "b3")
    return jnp.concatenate([b0, b1, b2, b3], -1)


class ReductionV4B(nn.Module):
  """Reduction-B, 17 -> 8 (Szegedy et al. 2016, Fig. 8): 1024 -> 1536 channels."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = _chain(x, [(192, 1), (192, 3, 2, 0)], train, d, "b0")
    b1 = _chain(x, [(256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, 0)], train, d, "b1")
    return jnp.concatenate([b0, b1, max_pool(x, 3, 2)], -1)


class InceptionV4C(nn.Module):
  """Inception-v4 8x8 block (Szegedy et al. 2016, Fig. 6): 1536 -> 1536 channels."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    d = self.dtype
    b0 = _chain(x, [(256, 1)], train, d, "b0")
    b1 = _SplitConv(256, d, name="b1_split")(_chain(x, [(384, 1)], train, d, "b1"), train)
    b2 = _chain(x, [(384, 1), (448, (3, 1)), (512, (1, 3))], train, d, "b2")
    b2 = _SplitConv(256, d, name="b2_split")(b2, train)
    b3 = _chain(avg_pool(x, 3, 1, 1, count_include_pad=False), [(256, 1)], train, d, "b3")
    return jnp.concatenate([b0, b1, b2, b3], -1)


# ----------------------------------------------------------------------------- DenseNet


class BNReLUConv(nn.Module):
  """Pre-activation composite function H_l: BN -> ReLU -> conv (Huang et al. 2017, sec. 3)."""
  features: int
  kernel: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.relu(batch_norm(train, self.dtype, name="bn")(x))
    return conv(self.features, self.kernel, dtype=self.dtype, name="conv")(x)


class DenseLayer(nn.Module):
  """DenseNet-B bottleneck layer: BN-ReLU-conv1x1 (bn_size*k) -> BN-ReLU-conv3x3 (k)."""
  growth_rate: int
  bn_size: int = 4
  drop_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = BNReLUConv(self.bn_size * self.growth_rate, 1, self.dtype, name="bottleneck")(x, train)
    y = BNReLUConv(self.growth_rate, 3, self.dtype, name="conv")(y, train)
    if self.drop_rate:
      y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    return y


class DenseBlock(nn.Module):
  """`num_layers` dense layers, each fed the concatenation of all earlier maps (eq. 2)."""
  num_layers: int
  growth_rate: int
  bn_size: int = 4
  drop_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i in range(self.num_layers):
      y = DenseLayer(self.growth_rate, self.bn_size, self.drop_rate, self.dtype,
                     name=f"layer{i + 1}")(x, train)
      x = jnp.concatenate([x, y], axis=-1)
    return x


class Transition(nn.Module):
  """Transition layer: BN-ReLU-conv1x1 to floor(theta*m) maps, 2x2 average pool (sec. 3)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = BNReLUConv(self.features, 1, self.dtype, name="conv")(x, train)
    return avg_pool(x, 2, 2)


def transition_features(channels: int, compression: float) -> int:
  """Output channels of a transition: floor(theta * m) (Huang et al. 2017, sec. 3)."""
  return int(math.floor(channels * compression))
