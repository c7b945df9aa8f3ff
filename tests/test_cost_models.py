"""Totals of registered models against published figures and independent formulas.

Sources:
* torchvision model table ("GFLOPS" column, which is GMACs of conv + linear layers):
  https://pytorch.org/vision/stable/models.html  (values at 224x224, Inception v3 at 299x299)
* Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
  Distill 2019, and the table of google-research/receptive_field (TF-Slim models):
  alexnet_v2 195/32/64, vgg_16 212/32/90, inception_v3 1311/32/618, inception_v4 2071/32/998,
  inception_resnet_v2 3039/32/1482, mobilenet_v1 315/32/126, resnet_v1_50 483/32/239,
  resnet_v1_101 1027/32/511, resnet_v1_152 1507/32/751 (size / effective stride / effective padding).
* He et al. 2016 (CIFAR ResNets, sec. 4.2): 6n+2 layers, 3x3 convs, 16/32/64 filters, option-A shortcuts.

Models not registered yet are skipped (the CNN zoo is being filled in).
"""

import functools

import pytest

import xnn.models as M
from xnn.cost import analyze_model as _analyze_model

# inference reports are shared between tests (same model analysed for MACs and receptive field)
analyze_model = functools.lru_cache(maxsize=None)(_analyze_model)


def _need(name):
  if name not in M.names():
    pytest.skip(f"{name} not registered yet")


# torchvision's published GMACs (the "GFLOPS" column of the model table), rounded to 2 decimals.
TORCHVISION_GMACS = {
    "alexnet": 0.71, "vgg11": 7.61, "vgg11_bn": 7.61, "vgg13": 11.31, "vgg13_bn": 11.31,
    "vgg16": 15.47, "vgg16_bn": 15.47, "vgg19": 19.63, "vgg19_bn": 19.63,
    "resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51,
    "resnext50_32x4d": 4.23, "resnext101_32x8d": 16.41, "wide_resnet50_2": 11.40,
    "densenet121": 2.83, "densenet161": 7.73, "densenet169": 3.36, "densenet201": 4.29,
    "googlenet": 1.50, "inception_v3": 5.71, "mobilenet_v2": 0.30,
    "squeezenet1_0": 0.82, "squeezenet1_1": 0.35,
    "shufflenet_v2_x0_5": 0.04, "shufflenet_v2_x1_0": 0.14, "shufflenet_v2_x1_5": 0.30,
    "shufflenet_v2_x2_0": 0.58,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_torchvision_gmacs(name):
  _need(name)
  shape = (299, 299, 3) if name == "inception_v3" else (224, 224, 3)
  rep = analyze_model(name) if shape == tuple(M.info(name).input_shape) else analyze_model(name, input_shape=shape)
  assert not rep.unknown_primitives
  assert round(rep.macs / 1e9, 2) == pytest.approx(TORCHVISION_GMACS[name], abs=1e-9), rep.macs


# (size, effective stride, effective padding or None where the geometry differs from TF-Slim's).
# TF-Slim pads stride-2 "SAME" convolutions asymmetrically (0 before, 1 after on even inputs);
# the zoo pads symmetrically like the papers/PyTorch, which moves P but not r or the stride.
ARAUJO = {
    "alexnet_original": (195, 32, 64),   # alexnet_v2 geometry (VALID conv1, pad-free pools)
    "vgg16": (212, 32, 90),
    "inception_v3": (1311, 32, 618),
    "inception_v4": (2071, 32, 998),
    "inception_resnet_v2": (3039, 32, 1482),
    "mobilenet_v1": (315, 32, None),     # slim: 126 (asymmetric SAME)
    "resnet50_v1": (483, 32, None),      # slim: 239
    "resnet101_v1": (1027, 32, None),    # slim: 511
    "resnet152_v1": (1507, 32, None),    # slim: 751
}


@pytest.mark.parametrize("name", sorted(ARAUJO))
def test_araujo_receptive_fields(name):
  _need(name)
  size, stride, pad = ARAUJO[name]
  rf = analyze_model(name).receptive_field
  assert (rf["size"], rf["stride"]) == (size, stride)
  if pad is not None:
    assert rf["padding"] == pad
  else:   # symmetric padding keeps the field centred on the unit: P = (r - 1) / 2
    assert rf["padding"] == (size - 1) // 2


def _resnet_chain_rf(stem, blocks_per_stage, bottleneck):
  """Independent chain computation for torchvision ResNets (v1.5: stride on the 3x3)."""
  r, j = 1, 1
  for k, s in stem:
    r, j = r + (k - 1) * j, j * s
  for stage, n in enumerate(blocks_per_stage):
    for b in range(n):
      s = 2 if (stage > 0 and b == 0) else 1
      convs = [3] if bottleneck else [3, 3]
      for i, k in enumerate(convs):
        r, j = r + (k - 1) * j, j * (s if i == 0 else 1)
  return r, j


@pytest.mark.parametrize("name,blocks,bottleneck", [
    ("resnet18", (2, 2, 2, 2), False), ("resnet34", (3, 4, 6, 3), False),
    ("resnet50", (3, 4, 6, 3), True), ("resnet101", (3, 4, 23, 3), True),
    ("resnet152", (3, 8, 36, 3), True)])
def test_imagenet_resnet_receptive_field(name, blocks, bottleneck):
  # ResNet-50 v1.5: 427 (the design homework's "x2 - 1" shortcut gives 479; Araujo's
  # slim resnet_v1_50, stride on the 1x1, gives 483).
  _need(name)
  r, j = _resnet_chain_rf([(7, 2), (3, 2)], blocks, bottleneck)
  rf = analyze_model(name).receptive_field
  assert (rf["size"], rf["stride"]) == (r, j)
  if name == "resnet50":
    assert r == 427


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_macs_and_rf(depth):
  # He et al. 2016 sec. 4.2: n = (depth-2)/6 blocks per stage, two 3x3 convs per block.
  n = (depth - 2) // 6
  stem = 32 * 32 * 16 * 9 * 3
  full = [32 * 32 * 16 * 9 * 16, 16 * 16 * 32 * 9 * 32, 8 * 8 * 64 * 9 * 64]   # same-width 3x3 conv
  first = [full[0], 16 * 16 * 32 * 9 * 16, 8 * 8 * 64 * 9 * 32]              # stage's first conv
  macs = stem + sum(first[s] + (2 * n - 1) * full[s] for s in range(3)) + 64 * 10
  rep = analyze_model(f"resnet{depth}")
  assert rep.macs == macs   # resnet20: 40,551,040 (the "41M" usually quoted)
  # receptive field: stem 3; stage 1: 2n convs at j=1; stage 2: +2 (stride-2 conv at j=1), then
  # 2n-1 convs at j=2; stage 3: +4, then 2n-1 convs at j=4  ->  r = 28n - 3, j = 4, P = (r-1)/2
  r = 3 + 2 * 2 * n + 2 + 4 * (2 * n - 1) + 4 + 8 * (2 * n - 1)
  assert r == 28 * n - 3
  assert rep.receptive_field == {"size": r, "stride": 4, "padding": (r - 1) // 2}
  assert not rep.misaligned
  if depth == 20:
    assert rep.params == 269_722   # He et al. Table 6: 0.27M


def test_lenet_table_of_the_lenet5_homework():
  # The LeNet-5 homework: conv5x5x8 on 32x32x3 has 5*5*3*8 + 8 = 608 parameters (the homework wrote 208),
  # conv5x5x16 on 8 maps: 5*5*8*16 + 16 = 3,216; fc 400->120: 48,120; 120->84: 10,164; 84->10: 850.
  rep = analyze_model("lenet5")
  by_name = {L.name: L for L in rep.layers}
  assert [by_name[n].params for n in ("conv1", "conv2", "head/fc1", "head/fc2", "head/fc_out")] == \
      [608, 3_216, 48_120, 10_164, 850]
  assert rep.params == 62_958
  # activation sizes of the homework: 28*28*8 = 6,272; 14*14*8 = 1,568; 10*10*16 = 1,600; 5*5*16 = 400
  outs = [L.output_elements for L in rep.layers if L.type in ("conv", "maxpool")]
  assert outs == [6_272, 1_568, 1_600, 400]
  # MACs: 28*28*8*75 = 470,400; 10*10*16*200 = 320,000; 48,000; 10,080; 840
  assert rep.macs == 470_400 + 320_000 + 48_000 + 10_080 + 840
  assert rep.receptive_field == {"size": 16, "stride": 4, "padding": 0}   # 5, 6, 14, 16


def test_train_backward_macs_and_memory():
  # Backward of a conv = data gradient + weight gradient, each as many MACs as the forward,
  # except the first conv whose input needs no gradient: 2 * 40,551,040 - 442,368 (stem) = 80,659,712.
  inf = analyze_model("resnet20")
  tr = analyze_model("resnet20", train=True)
  assert tr.macs == inf.macs == 40_551_040
  assert tr.backward_macs == 2 * 40_551_040 - 32 * 32 * 16 * 27
  assert tr.saved_residual_bytes > 0
  assert tr.peak_bytes > inf.peak_bytes
  d = tr.to_dict()
  assert isinstance(d["backward_macs"], int) and isinstance(d["peak_bytes"], int)


def test_mobilenet_v2_28_of_the_design_homework():
  # The design homework: MobileNet V2 on 28x28: stride 4 at the head input (two stride-2 stages).
  _need("mobilenet_v2_28")
  rep = analyze_model("mobilenet_v2_28")
  assert rep.receptive_field["stride"] == 4 and not rep.unknown_primitives
  assert rep.macs > 0 and rep.params == sum(L.params for L in rep.layers)
