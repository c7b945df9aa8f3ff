"""Tests of the residual CNN family (xnn/models/residual.py, residual_blocks.py).

Parameter counts are computed abstractly (`jax.eval_shape`, no memory or compute)
at each model's default input and compared with the exact count of the
reference implementation named next to each number. Stage shapes are checked
against the seed/paper tables. Every registered network runs its train- and
inference-mode forward passes at its smallest input (`jax.eval_shape`); one
reduced-depth instance per block type takes a real step of ``xnn train``'s train
step (``train_steps``; see `REAL_STEP`), which keeps the file fast on two CPU cores.
Every model's train step at its default input is traced in ``test_every_model_trains.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import xnn.models as models
from train_steps import run_compiled, state_from, train_step
from xnn.models import residual as R
from xnn.models import residual_blocks as rb
from xnn.train import tasks
from xnn.train.step import variables_of


def n_params(model: nn.Module, shape: tuple[int, ...]) -> int:
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x),
                     jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  return sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(v["params"]))


def count(name: str, **kw) -> int:
  return n_params(models.build(name, **kw), models.info(name).input_shape)


def shapes(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
  """Shapes (without batch) of the sown stage outputs, abstractly."""
  def run(x):
    v = model.init(jax.random.PRNGKey(0), x)
    _, st = model.apply(v, x, mutable=["intermediates"])
    return st["intermediates"]
  inter = jax.eval_shape(run, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(inter)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path[:-1]): tuple(l.shape[1:]) for path, l in flat}


# ------------------------------------------------------------------ parameter counts

EXACT = {
    # torchvision.models (torchvision docs "num_params")
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240, "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "mobilenet_v2": 3_504_872,
    "shufflenet_v2_x0_5": 1_366_792, "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624, "shufflenet_v2_x2_0": 7_393_996,
    # Pre-activation ResNets (He et al. 2016): imgclsmob (osmr) PreResNet-18/34/50/101/152.
    "preact_resnet18": 11_687_848, "preact_resnet34": 21_796_008, "preact_resnet50": 25_549_480,
    "preact_resnet101": 44_541_608, "preact_resnet152": 60_185_256,
    # He et al. 2015 placement of the stride (first 1x1): same weights as torchvision v1.5.
    "resnet50_v1": 25_557_032, "resnet101_v1": 44_549_160, "resnet152_v1": 60_192_808,
    # SENet authors' models as ported in Cadene's pretrainedmodels (imgclsmob table, "Cadene's repo").
    "se_resnet50": 28_088_024, "se_resnext50_32x4d": 27_559_896,
    # Keras applications Xception: "Trainable params: 22,855,952" (total 22,910,480 with the
    # 54,528 BN moving statistics, which live in batch_stats here); Cadene's port has the same.
    "xception": 22_855_952,
    # timm / imgclsmob inceptionresnetv2 (affine BN; imgclsmob's test asserts 55843464);
    # Keras drops the BN scale: see test below.
    "inception_resnet_v2": 55_843_464,
    # Cadene pretrainedmodels / timm dpn92, dpn98 (ports of the authors' MXNet models;
    # dpn98 = 61,570,728 in the imgclsmob table "from Cadene's repo"); see test_dpn_paper.
    "dpn92": 37_668_392, "dpn98": 61_570_728,
    # CIFAR ResNets, option A (He et al. 2015 Table 6: 0.27M, 1.7M; exact counts of the
    # standard option-A implementation, e.g. akamaster/pytorch_resnet_cifar10).
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet1202": 19_421_274,
    "plain20": 269_722, "plain32": 464_154, "plain44": 658_586, "plain56": 853_018, "plain110": 1_727_962,
    # Page's ResNet-9 (davidcpage/cifar10-fast, net(): prep 64, layer1 128 + residual,
    # layer2 256, layer3 512 + residual, Linear(512, 10, bias=False)): conv weights
    # 1,728 + 73,728 + 2 x 147,456 + 294,912 + 1,179,648 + 2 x 2,359,296 = 6,563,520,
    # BN weight + bias 2 x (64 + 3 x 128 + 256 + 3 x 512) = 4,480, linear 5,120.
    "resnet9": 6_573_120,
    "resnet9_tiny": (27 * 8 + 72 * 16 + 2 * 144 * 16 + 144 * 16 + 144 * 32 + 2 * 288 * 32
                     + 2 * (8 + 3 * 16 + 16 + 3 * 32) + 32 * 10),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_parameter_count(name):
  assert count(name) == EXACT[name]


def test_inception_resnet_v2_keras_count():
  # Keras InceptionResNetV2: BatchNormalization(scale=False), trainable params 55,813,192
  # (total 55,873,736 with the 60,544 moving statistics).
  assert count("inception_resnet_v2", bn_scale=False) == 55_813_192


def test_cifar_option_b_adds_projections():
  # Option B: 1x1 conv + BN at the two stage transitions: 16*32 + 2*32 + 32*64 + 2*64 more.
  assert count("resnet20", shortcut="B") == 269_722 + 16 * 32 + 64 + 32 * 64 + 128


# --- analytic counts where no reference implementation publishes one --------------

def _bn(c):
  return 2 * c


def preact_resnet_count(depth: int, classes: int = 1000) -> int:
  """He et al. 2016 pre-activation ResNet from the Table 1 widths: conv-BN-ReLU stem, blocks of
  BN-ReLU-conv units (projection without BN), final BN."""
  block, sizes = R._DEPTHS[depth]
  total = 7 * 7 * 3 * 64 + _bn(64)
  cin = 64
  for s, (n, p) in enumerate(zip(sizes, (64, 128, 256, 512))):
    for b in range(n):
      out = p if block == "basic" else 4 * p
      pre = _bn(cin)
      if block == "basic":
        total += pre + 9 * cin * p + _bn(p) + 9 * p * p
      else:
        total += pre + cin * p + _bn(p) + 9 * p * p + _bn(p) + p * out
      if cin != out or (s > 0 and b == 0):
        total += cin * out
      cin = out
  return total + _bn(cin) + cin * classes + classes


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_preact_resnet_count(depth):
  # Independent analytic count, equal to the imgclsmob reference (EXACT).
  assert count(f"preact_resnet{depth}") == preact_resnet_count(depth) == EXACT[f"preact_resnet{depth}"]
  # Pre-activation only moves/removes BatchNorms: within 0.1% of the v1 count.
  assert abs(count(f"preact_resnet{depth}") - EXACT[f"resnet{depth}"]) < 1e-3 * EXACT[f"resnet{depth}"]


def _ir(cin: int, expand: int, cout: int) -> int:
  """Inverted residual weights: 1x1 expand (+BN), 3x3 depthwise (+BN), 1x1 project (+BN)."""
  e = (cin * expand + _bn(expand)) if expand != cin else 0
  return e + 9 * expand + _bn(expand) + expand * cout + _bn(cout)


def test_mobilenet_v2_28_count():
  # Seed 000 filter-coefficient table: tail 3x3x3x16; level 1: 1x1x16x64, 3x3x64, 1x1x64x16 (x4);
  # level 2: 1x1x64x128, 3x3x128, 1x1x128x64 (x6, the first block reads 16 channels);
  # level 3: 1x1x128x256, 3x3x256, 1x1x256x128 (x3, the first reads 64); 1x1x128x256; dense 256 x classes.
  # (The seed's "3x3x3x16 : 12544" is a copy of the feature-map size; the weights are 432.)
  expected = 3 * 3 * 3 * 16 + _bn(16)
  expected += 4 * _ir(16, 64, 16)
  expected += _ir(16, 128, 64) + 5 * _ir(64, 128, 64)
  expected += _ir(64, 256, 128) + 2 * _ir(128, 256, 128)
  expected += 128 * 256 + _bn(256)
  assert count("mobilenet_v2_28") == expected + 256 * 10 + 10
  assert count("mobilenet_v2_28", num_classes=200) == expected + 256 * 200 + 200   # the seed's head


def test_resnet_v2b_count():
  # Course network: 3x3x3x32 tail; levels (4, 6, 3) of pre-activation bottlenecks (BN-ReLU-1x1,
  # BN-ReLU-3x3, BN-ReLU-1x1) with widths 32/64/128 and outputs 128/256/512, 1x1 projection on
  # each level's first block, final BN, dense.
  total, cin = 3 * 3 * 3 * 32, 32
  for n, w, o in zip((4, 6, 3), (32, 64, 128), (128, 256, 512)):
    for b in range(n):
      total += _bn(cin) + cin * w + _bn(w) + 9 * w * w + _bn(w) + w * o + (cin * o if b == 0 else 0)
      cin = o
  assert count("resnet_v2b") == total + _bn(512) + 512 * 10 + 10


def shufflenet_v1_count(g: int, classes: int = 1000) -> int:
  """Zhang et al. 2017 Table 1 widths, unit of Fig. 2 with bottleneck = output / 4 (Sec. 3.2)."""
  total, cin = 3 * 3 * 3 * 24 + _bn(24), 24
  for s, (n, c) in enumerate(zip((4, 8, 4), R.SHUFFLENET_V1_CHANNELS[g])):
    for b in range(n):
      mid, out = c // 4, (c - cin if b == 0 else c)
      g1 = 1 if (s == 0 and b == 0) else g
      total += cin * mid // g1 + _bn(mid) + 9 * mid + _bn(mid) + mid * out // g + _bn(out)
      cin = c
  return total + cin * classes + classes


@pytest.mark.parametrize("g", [1, 2, 3, 4, 8])
def test_shufflenet_v1_count(g):
  assert count(f"shufflenet_v1_g{g}") == shufflenet_v1_count(g)
  assert count("shufflenet_v1") == count("shufflenet_v1_g3")


def test_shufflenet_v1_reference_rounding():
  # mmpretrain ShuffleNetV1 1.0x (group=3): 1.87M (classifier with bias, as here).
  assert round(count("shufflenet_v1_g3") / 1e4) / 100 == 1.87
  # megvii ShuffleNet-Series (official; bias-free classifier, 1000 fewer), thop counts:
  # 1.0x group=3 1.86M, group=8 2.43M.
  assert round((count("shufflenet_v1_g3") - 1000) / 1e4) / 100 == 1.86
  assert round((count("shufflenet_v1_g8") - 1000) / 1e4) / 100 == 2.43


def test_shiftnet_count():
  # ShiftNet-A per the lecture notes "Design" / Wu et al. 2018: module = 1x1 (C_in -> E*C_in) + BN, shift,
  # 1x1 (-> C_out) + BN, 1x1/2 conv + BN projection on each group's first module.
  total, cin = 7 * 7 * 3 * 32 + _bn(32), 32
  for c, _k, e_down, e, n in R.SHIFTNET_A:
    for b in range(n + 1):
      mid = (e_down if b == 0 else e) * cin
      total += cin * mid + _bn(mid) + mid * c + _bn(c) + ((cin * c + _bn(c)) if b == 0 else 0)
      cin = c
  head = 512 * 1000 + 1000
  assert count("shiftnet") == total + head == 4_565_384
  # The paper lists 4.1M for ShiftNet-A: our body without the 513,000-weight classifier is
  # 4,052,384 (4.05M); with it 4.57M. The paper does not specify the projection shortcut;
  # ours (1x1/2 conv + BN on each group's first module) has 176,000 weights.
  assert abs((total) - 4.1e6) < 0.05e6


def test_sknet50_count():
  # Li et al. 2019, Table 1: SKNet-50 27.5M. Exact: ResNeXt-50 32x4d (torchvision 25,028,904)
  # plus, per block of 3x3 width w, a second grouped 3x3 branch (dilation 2) with BN, the
  # fuse fc (w -> d, no bias) with BN, d = max(w/16, 32), and two select fcs (d -> w, bias).
  extra = 0
  for n, p in zip((3, 4, 6, 3), (64, 128, 256, 512)):
    w = 2 * p
    d = max(w // 16, 32)
    extra += n * (9 * w * w // 32 + _bn(w) + w * d + _bn(d) + 2 * (d * w + w))
  assert count("sknet50") == 25_028_904 + extra == 27_494_888
  assert abs(27_494_888 - 27.5e6) < 0.05e6   # the paper's rounded figure


def test_se_counts_are_resnet_plus_excitation():
  # Hu et al. 2018: SE adds 2*C^2/r + C/r + C (fc biases) per block of output C (r = 16).
  se = sum(n * (2 * c * c // 16 + c // 16 + c) for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
  assert EXACT["se_resnet50"] == EXACT["resnet50"] + se
  assert EXACT["se_resnext50_32x4d"] == EXACT["resnext50_32x4d"] + se


def test_dpn_paper():
  # Chen et al. 2017 (architecture table): DPN-92 37.7M, DPN-98 61.6M: the exact counts round to them.
  assert round(count("dpn92") / 1e5) / 10 == 37.7
  assert round(count("dpn98") / 1e5) / 10 == 61.6


def test_mobilenet_v2_width_multiplier():
  # Sandler et al. 2018 Sec. 6.1: widths scale by the multiplier, rounded to multiples of 8;
  # the last 1x1 conv keeps 1280 below 1.0 and grows above (1.4 -> 1792).
  half = shapes(models.build("mobilenet_v2", width=0.5), (224, 224, 3))
  assert (half["stem"][-1], half["stage1"][-1], half["stage7"][-1], half["stage8"][-1]) == (16, 8, 160, 1280)
  wide = shapes(models.build("mobilenet_v2", width=1.4), (224, 224, 3))
  assert (wide["stem"][-1], wide["stage7"][-1], wide["stage8"][-1]) == (48, 448, 1792)
  assert count("mobilenet_v2", width=0.5) < EXACT["mobilenet_v2"] < count("mobilenet_v2", width=1.4)


def test_every_registered_residual_model_is_counted():
  counted = set(EXACT) | {
      "mobilenet_v2_28", "resnet_v2b", "shiftnet", "sknet50", "shufflenet_v1"} | {
      f"shufflenet_v1_g{g}" for g in (1, 2, 3, 4, 8)}
  assert set(models.names("residual")) == counted


# ------------------------------------------------------------------ stage shapes

@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("prefix", ["resnet", "preact_resnet"])
def test_resnet_stage_shapes(prefix, depth):
  # Seed 004 (He et al. 2015, Table 1): conv1 112x112x64, conv2_x 56, conv3_x 28, conv4_x 14,
  # conv5_x 7; outputs 64/128/256/512 (x4 for the bottleneck networks).
  e = 1 if depth < 50 else 4
  got = shapes(models.build(f"{prefix}{depth}"), (224, 224, 3))
  assert got["stem"] == (112, 112, 64)
  assert [got[f"stage{s}"] for s in range(1, 5)] == [
      (56, 56, 64 * e), (28, 28, 128 * e), (14, 14, 256 * e), (7, 7, 512 * e)]


def test_mobilenet_v2_table2_shapes():
  # Sandler et al. 2018 Table 2: 112^2x32 after conv2d, bottleneck rows 112^2x16, 56^2x24,
  # 28^2x32, 14^2x64, 14^2x96, 7^2x160, 7^2x320, conv2d 1x1 7^2x1280.
  got = shapes(models.build("mobilenet_v2"), (224, 224, 3))
  assert got["stem"] == (112, 112, 32)
  assert [got[f"stage{i}"] for i in range(1, 9)] == [
      (112, 112, 16), (56, 56, 24), (28, 28, 32), (14, 14, 64), (14, 14, 96), (7, 7, 160), (7, 7, 320),
      (7, 7, 1280)]


def test_mobilenet_v2_28_seed_shapes():
  # Seed 000 "Feature map size": tail 28x28x16; level 1 expansion 28x28x64 and output 28x28x16;
  # level 2 expansion 14x14x128 and output 14x14x64; level 3 expansion 7x7x256 and output
  # 7x7x128; conv 1x1 7x7x256. The first block of levels 2/3 expands before its stride-2
  # depthwise (seed's MAC table: DConv on (14+2)^2), so its expansion is 28x28x128 / 14x14x256.
  got = shapes(models.build("mobilenet_v2_28"), (28, 28, 3))
  assert got["stem"] == (28, 28, 16)
  assert got["stage1_block1/expand"] == (28, 28, 64) and got["stage1"] == (28, 28, 16)
  assert got["stage2_block2/expand"] == (14, 14, 128) and got["stage2"] == (14, 14, 64)
  assert got["stage2_block1/expand"] == (28, 28, 128)
  assert got["stage3_block2/expand"] == (7, 7, 256) and got["stage3"] == (7, 7, 128)
  assert got["stage4"] == (7, 7, 256)
  # The seed concludes the largest map is the level-1 expansion (28x28x64 = 50,176 values);
  # that is a mistake of the seed: level 2's first block expands 16 -> 128 channels before its
  # stride-2 depthwise, so the largest map is 28x28x128 = 100,352 values.
  sizes = {k: int(np.prod(s)) for k, s in got.items()}
  assert max(sizes, key=sizes.get) == "stage2_block1/expand" and sizes["stage2_block1/expand"] == 100_352


@pytest.mark.parametrize("g", [1, 2, 3, 4, 8])
def test_shufflenet_v1_table1_shapes(g):
  # Zhang et al. 2017 Table 1: Conv1 112x112x24, Stage2 28x28, Stage3 14x14, Stage4 7x7.
  got = shapes(models.build(f"shufflenet_v1_g{g}"), (224, 224, 3))
  c2, c3, c4 = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                4: (272, 544, 1088), 8: (384, 768, 1536)}[g]
  assert got["stem"] == (112, 112, 24)
  assert (got["stage2"], got["stage3"], got["stage4"]) == ((28, 28, c2), (14, 14, c3), (7, 7, c4))


def test_shufflenet_v2_table5_shapes():
  # Ma et al. 2018 Table 5 (1x): Conv1 112x112x24, Stage2 28x28x116, Stage3 14x14x232,
  # Stage4 7x7x464, Conv5 7x7x1024.
  got = shapes(models.build("shufflenet_v2_x1_0"), (224, 224, 3))
  assert [got[k] for k in ("stem", "stage2", "stage3", "stage4", "conv5")] == [
      (112, 112, 24), (28, 28, 116), (14, 14, 232), (7, 7, 464), (7, 7, 1024)]


def test_shiftnet_shapes():
  # Lecture 002 ShiftNet table: conv 7x7/2 32, groups of 64/128/256/512 each opened by a
  # stride-2 module, 7x7 average pool at the end (224 -> 112 -> 56 -> 28 -> 14 -> 7).
  got = shapes(models.build("shiftnet"), (224, 224, 3))
  assert [got[k] for k in ("stem", "stage1", "stage2", "stage3", "stage4")] == [
      (112, 112, 32), (56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]


def test_xception_shapes():
  # Chollet 2017 Fig. 5: 299 -> entry flow 19x19x728 -> middle 19x19x728 -> exit 10x10x2048.
  got = shapes(models.build("xception"), (299, 299, 3))
  assert (got["stem"], got["entry"], got["middle"], got["exit"]) == (
      (147, 147, 64), (19, 19, 728), (19, 19, 728), (10, 10, 2048))


def test_inception_resnet_v2_shapes():
  # Szegedy et al. 2016 Fig. 15 with the reference stem: 35x35x320 -> blocks A 35x35x320 ->
  # reduction A + blocks B 17x17x1088 -> reduction B + blocks C + 1x1 conv 8x8x1536.
  got = shapes(models.build("inception_resnet_v2"), (299, 299, 3))
  assert [got[k] for k in ("stem", "stage1", "stage2", "stage3")] == [
      (35, 35, 320), (35, 35, 320), (17, 17, 1088), (8, 8, 1536)]


@pytest.mark.parametrize("name,chans", [
    # Chen et al. 2017: residual 256/512/1024/2048 plus dense inc*(blocks+2): DPN-92 ends at 2688.
    ("dpn92", (256 + 16 * 5, 512 + 32 * 6, 1024 + 24 * 22, 2048 + 128 * 5)),
    ("dpn98", (256 + 16 * 5, 512 + 32 * 8, 1024 + 32 * 22, 2048 + 128 * 5))])
def test_dpn_shapes(name, chans):
  got = shapes(models.build(name), (224, 224, 3))
  assert [got[f"stage{s}"] for s in range(1, 5)] == [
      (56, 56, chans[0]), (28, 28, chans[1]), (14, 14, chans[2]), (7, 7, chans[3])]


def test_resnet9_shapes():
  # Page's network: prep at 32x32, each layer's max-pool halves the map: 16, 8, 4.
  got = shapes(models.build("resnet9"), (32, 32, 3))
  assert got == {"stem": (32, 32, 64), "stage1": (16, 16, 128), "stage2": (8, 8, 256), "stage3": (4, 4, 512)}


def test_resnet_v2b_shapes():
  got = shapes(models.build("resnet_v2b"), (28, 28, 3))
  assert [got[k] for k in ("stem", "stage1", "stage2", "stage3")] == [
      (28, 28, 32), (28, 28, 128), (14, 14, 256), (7, 7, 512)]


# ------------------------------------------------------------------ stride placement

def _conv_outputs(name: str) -> dict[str, tuple[int, ...]]:
  model = models.build(name)

  def run(x):
    v = model.init(jax.random.PRNGKey(0), x)
    _, st = model.apply(v, x, capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
                        mutable=["intermediates"])
    return st["intermediates"]
  inter = jax.eval_shape(run, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  block = inter["stage2_block1"]
  return {k: block[k]["conv"]["__call__"][0].shape[1:3] for k in ("conv_bn1", "conv_bn2", "conv_bn3")}


def test_resnet50_v1_vs_v15_stride_placement():
  assert count("resnet50") == count("resnet50_v1")
  # torchvision v1.5: the 1x1 keeps 56x56, the 3x3 strides to 28x28.
  assert _conv_outputs("resnet50") == {"conv_bn1": (56, 56), "conv_bn2": (28, 28), "conv_bn3": (28, 28)}
  # He et al. 2015: the first 1x1 strides.
  assert _conv_outputs("resnet50_v1") == {"conv_bn1": (28, 28), "conv_bn2": (28, 28), "conv_bn3": (28, 28)}
  m = models.build("resnet50_v1")
  assert m.stride_on_1x1 and not models.build("resnet50").stride_on_1x1


# ------------------------------------------------------------------ blocks

def test_shift_moves_channel_groups():
  x = jnp.arange(1 * 5 * 5 * 9, dtype=jnp.float32).reshape(1, 5, 5, 9)
  y = rb.shift(x, 3)
  # Channel i is shifted by offset (i // 3 - 1, i % 3 - 1): y[h, w] = x[h + dy, w + dx].
  for i in range(9):
    dy, dx = i // 3 - 1, i % 3 - 1
    assert y[0, 2, 2, i] == x[0, 2 + dy, 2 + dx, i]
  assert y[0, 0, 0, 0] == 0   # zero fill at the border
  assert jnp.all(y[..., 4] == x[..., 4])   # centre group unmoved


def test_channel_shuffle():
  x = jnp.arange(6, dtype=jnp.float32).reshape(1, 1, 1, 6)
  np.testing.assert_array_equal(rb.channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])


# ------------------------------------------------------------------ training steps

SMALL = {"inception_resnet_v2": (75, 75, 3), "resnet_v2b": (28, 28, 3), "mobilenet_v2_28": (28, 28, 3)}


# resnet1202 is resnet110's code with n=200 instead of 18 (45 s to trace on this machine); its
# init is traced by the parameter-count test and resnet110 takes the forward passes.
SMALL_INPUT = sorted(set(models.names("residual")) - {"resnet1202"})


@pytest.mark.parametrize("name", SMALL_INPUT)
def test_forward_passes_at_the_smallest_input(name):
  """Every network: train-mode init, train-mode forward (batch statistics updated), inference forward
  (traced only)."""
  shape = SMALL.get(name, (32, 32, 3))
  model = models.build(name, num_classes=10)

  def passes(x):
    v = models.init_variables(model, (x,), jax.random.PRNGKey(0))
    logits, new = model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)})
    return logits, new, model.apply(v, x, train=False), v

  logits, new, eval_logits, v = jax.eval_shape(passes, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
  assert logits.shape == eval_logits.shape == (2, 10)
  assert jax.tree_util.tree_structure(new["batch_stats"]) == jax.tree_util.tree_structure(v["batch_stats"])


def host_init(model: nn.Module, x: jnp.ndarray, seed: int = 0):
  """Variables with the structure of `model.init` (taken abstractly) filled on the host:
  kernels ~ N(0, 1/fan_in), BN scales and running variances 1, biases and means 0.

  On this two-core machine compiling the Flax initialisers costs more than the training
  step itself (4-15 s per network); the initialisers are exercised once, in
  `test_real_init_matches_abstract_structure`.
  """
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), jnp.float32)
    return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_real_init_matches_abstract_structure():
  model = R.CifarResNet(depth=8, shortcut="B", num_classes=10)
  x = jnp.zeros((2, 32, 32, 3))
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  h = host_init(model, x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(h)
  assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(jnp.shape, h)
  assert float(jnp.std(v["params"]["stage2_block1"]["conv_bn2"]["conv"]["kernel"])) > 0
  assert float(jnp.min(v["batch_stats"]["stage2_block1"]["proj_bn"]["var"])) == 1.0


# Reduced-depth instances, one per block type, run for real (forward, SGD step, eval forward).
REAL_STEP = {
    "cifar_basic": (lambda: R.CifarResNet(depth=8, shortcut="B", num_classes=10), (32, 32, 3)),
    "basic": (lambda: R.ResNet((1, 1, 1, 1), "basic", num_classes=10), (32, 32, 3)),
    "bottleneck_v1_se_resnext": (lambda: R.ResNet((1, 2, 1, 1), "bottleneck", groups=32, width_per_group=4,
                                                  stride_on_1x1=True, se_reduction=16, num_classes=10), (32, 32, 3)),
    "sk": (lambda: R.ResNet((1, 1, 1, 1), "bottleneck", groups=32, width_per_group=4, selective_kernel=True,
                            num_classes=10), (32, 32, 3)),
    "preact_basic": (lambda: R.ResNet((1, 2, 1, 1), "preact_basic", num_classes=10), (32, 32, 3)),
    "preact_bottleneck": (lambda: R.ResNetV2b(stage_sizes=(1, 2, 1), num_classes=10), (28, 28, 3)),
    "inverted_residual": (lambda: R.MobileNetV2_28(stage_sizes=(1, 2, 1), num_classes=10), (28, 28, 3)),
    "shufflenet_v1": (lambda: R.ShuffleNetV1(3, (2, 1, 1), num_classes=10), (32, 32, 3)),
    "shufflenet_v2": (lambda: R.ShuffleNetV2(R.SHUFFLENET_V2_CHANNELS["x0_5"], (2, 1, 1), num_classes=10),
                      (32, 32, 3)),
    "shift": (lambda: R.ShiftNet(((16, 5, 4, 4, 1), (32, 3, 2, 1, 1)), 8, num_classes=10), (32, 32, 3)),
    "xception": (lambda: R.Xception(middle_repeats=1, num_classes=10), (32, 32, 3)),
    # 139 (not the smallest input, 75) so block C sees 3x3 maps: BatchNorm over batch 2 x 1x1
    # values makes the gradient explode (|g| ~ 5e4) and the SGD step overflow.
    "inception_resnet": (lambda: R.InceptionResNetV2((1, 1, 1), num_classes=10), (139, 139, 3)),
    "dual_path": (lambda: R.DPN(16, 16, 4, (2, 1, 1, 1), (8, 8, 8, 8), num_classes=10), (32, 32, 3)),
    "resnet9": (lambda: models.build("resnet9_tiny"), (32, 32, 3)),
}


@pytest.mark.parametrize("kind", sorted(REAL_STEP))
def test_real_train_step(kind):
  """One step of xnn train's train step (plain SGD, lr 0.1) from host-filled weights, compiled."""
  make, shape = REAL_STEP[kind]
  model = make()
  x = jax.random.normal(jax.random.PRNGKey(3), (2, *shape))
  batch = {"inputs": x, "label": jnp.array([1, 7])}
  task = tasks.ImageClassification(("inputs",), "label")
  state = state_from(host_init(model, x), optax.sgd(0.1))
  step = train_step(model, task)

  def run(state, batch):   # everything in one compilation: eager per-leaf ops compile one kernel per shape
    new, metrics = step(state, batch, jax.random.PRNGKey(2))
    changed = lambda a, b: jnp.stack([jnp.any(p != q) for p, q in zip(jax.tree_util.tree_leaves(a),
                                                                     jax.tree_util.tree_leaves(b))])
    logits = model.apply(variables_of(state), batch["inputs"], train=True, mutable=["batch_stats"])[0]
    return dict(loss=metrics["loss"], logits=logits, gnorm=metrics["grad_norm"],
                stats_moved=changed(new.batch_stats, state.batch_stats),
                params_moved=changed(new.params, state.params),
                eval_logits=model.apply(variables_of(new), batch["inputs"], train=False))

  out = jax.device_get(run_compiled(run, state, batch))
  assert out["logits"].shape == out["eval_logits"].shape == (2, 10)
  assert np.isfinite(out["loss"]) and out["loss"] > 0
  assert np.isfinite(out["gnorm"]) and out["gnorm"] > 0
  # Running statistics moved in training mode; the SGD step moved the parameters.
  assert out["stats_moved"].any() and out["params_moved"].mean() > 0.5
  assert np.all(np.isfinite(out["eval_logits"]))


def test_heads_are_selectable():
  for head in ("gap_linear", "spatial_gap", "pixel"):
    m = models.build("mobilenet_v2_28", num_classes=10, head=head)
    out = jax.eval_shape(lambda x, m=m: m.init_with_output(jax.random.PRNGKey(0), x)[0],
                         jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32))
    assert out.shape == (2, 10)


def test_bfloat16_compute():
  m = models.build("resnet18", num_classes=10, dtype=jnp.bfloat16)
  out, v = jax.eval_shape(lambda x: m.init_with_output(jax.random.PRNGKey(0), x),
                          jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert out.dtype == jnp.bfloat16
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(v["params"]))
