"""Serial, parallel and dense CNN families: parameter counts, stage shapes, training.

Parameter counts and full-size shapes use `jax.eval_shape` (no memory, no
compute). Every network also runs its train- and inference-mode forward passes at
the smallest input its architecture allows (batch 2, 10 classes; traced with
`jax.eval_shape`), and one network of each architecture takes a real step of
``xnn train``'s train step there (``train_steps.one_step``, compiled). Every model's
train step at its default input is traced in ``test_every_model_trains.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xnn.models as M
from train_steps import one_step, run_compiled, task_and_batch
from xnn.train.step import variables_of
from xnn.models.inception import InceptionV1
from xnn.models.layers import LRN
from xnn.models.pooling import adaptive_avg_pool, max_pool

RNGS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}

# name -> exact parameter count at 1000 classes (10 for vgg11_cifar), default input.
PARAM_COUNTS = {
    "alexnet": 61_100_840,            # torchvision.models.alexnet
    "alexnet_original": 60_965_224,   # Caffe bvlc_alexnet deploy.prototxt (paper sec. 1: "60 million", -1.6%)
    "caffenet": 60_965_224,           # Caffe bvlc_reference_caffenet deploy.prototxt (same layers, LRN moved)
    "vgg11": 132_863_336,             # torchvision.models.vgg11
    "vgg11_bn": 132_868_840,          # torchvision.models.vgg11_bn
    "vgg13": 133_047_848,             # torchvision.models.vgg13
    "vgg13_bn": 133_053_736,          # torchvision.models.vgg13_bn
    "vgg16": 138_357_544,             # torchvision.models.vgg16 (paper Table 2: 138M)
    "vgg16_bn": 138_365_992,          # torchvision.models.vgg16_bn
    "vgg19": 143_667_240,             # torchvision.models.vgg19 (paper Table 2: 144M)
    "vgg19_bn": 143_678_248,          # torchvision.models.vgg19_bn
    # the "Week2 CNN Architectures" tutorial's VGG-11 at 32x32: VGG-11 convs (9,220,480 = torchvision vgg11 minus its
    # classifier) + 512*2048+2048 + 2048*2048+2048 + 2048*10+10; computed by hand.
    "vgg11_cifar": 14_487_946,
    # MobileNet v1: Keras applications MobileNet(alpha=1.0) "Trainable params: 4,231,976"
    # (also osmr/imgclsmob mobilenet_w1); paper Table 8 "4.2 million" (+0.8%, BN gammas/betas
    # and the fc bias are counted here).
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_075": 2_585_560,    # osmr/imgclsmob mobilenet_w3d4 (paper Table 6: 2.6M)
    "mobilenet_v1_050": 1_331_592,    # osmr/imgclsmob mobilenet_wd2 (paper Table 6: 1.3M)
    "mobilenet_v1_025": 470_072,      # osmr/imgclsmob mobilenet_wd4 (paper Table 6: 0.5M)
    "googlenet": 6_624_904,           # torchvision.models.googlenet, without aux heads
    "inception_v3": 23_834_568,       # torchvision inception_v3 without the AuxLogits head (eval init)
    "inception_v4": 42_679_816,       # timm inception_v4 / Cadene pretrainedmodels (paper: none given)
    "squeezenet1_0": 1_248_424,       # torchvision.models.squeezenet1_0
    "squeezenet1_1": 1_235_496,       # torchvision.models.squeezenet1_1
    "densenet121": 7_978_856,         # torchvision.models.densenet121 (paper: 8.0M, Table 2 "DenseNet-121")
    "densenet161": 28_681_000,        # torchvision.models.densenet161
    "densenet169": 14_149_480,        # torchvision.models.densenet169
    "densenet201": 20_013_928,        # torchvision.models.densenet201
    # DenseNet-264 (k=32, blocks 6/12/64/48): no torchvision model; computed here and equal to
    # the DenseNet-264 preset of lucid-dl ("Total Parameters: 33,337,704"). Paper: none given.
    "densenet264": 33_337_704,
}

OURS = sorted(n for n in M.names() if M.info(n).family in ("serial", "parallel", "dense") and n != "lenet5")


def n_params(tree) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def abstract_init(model, shape, train=False, **kw):
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  return jax.eval_shape(lambda x: model.init(RNGS, x, train=train, **kw), x)


def test_every_model_has_a_count():
  assert sorted(PARAM_COUNTS) == OURS


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count(name):
  info = M.info(name)
  variables = abstract_init(M.build(name), info.input_shape)
  assert n_params(variables["params"]) == PARAM_COUNTS[name]


def test_aux_head_param_counts():
  # torchvision googlenet(aux_logits=True, init_weights=True): 13,004,888.
  v = abstract_init(M.build("googlenet", aux_logits=True), (224, 224, 3), train=True)
  assert n_params(v["params"]) == 13_004_888
  # torchvision inception_v3() (aux_logits=True): 27,161,264; the aux head is built with train=True.
  v = abstract_init(M.build("inception_v3"), (299, 299, 3), train=True)
  assert n_params(v["params"]) == 27_161_264
  # Paper-faithful 5x5 branch in GoogLeNet costs more than torchvision's 3x3.
  v = abstract_init(M.build("googlenet", kernel5=5), (224, 224, 3))
  assert n_params(v["params"]) > 6_624_904


@pytest.mark.parametrize("name,shape", [("alexnet", (96, 96, 3)), ("vgg11", (64, 64, 3)),
                                        ("vgg16_bn", (320, 320, 3))])
def test_adaptive_pool_keeps_counts_at_other_resolutions(name, shape):
  assert n_params(abstract_init(M.build(name), shape)["params"]) == PARAM_COUNTS[name]


def test_densenet_growth_and_compression_are_parameters():
  # DenseNet-BC-121 with k=12, theta=1 (no compression): more maps reach block 4.
  a = abstract_init(M.build("densenet121", growth_rate=12), (224, 224, 3))
  b = abstract_init(M.build("densenet121", growth_rate=12, compression=1.0), (224, 224, 3))
  assert n_params(a["params"]) < n_params(b["params"]) < PARAM_COUNTS["densenet121"]


# ----------------------------------------------------------------------------- stage shapes


def stage_shapes(name, hw, **kw):
  info = M.info(name)
  v = abstract_init(M.build(name, **kw), (*hw, info.input_shape[-1]), mutable=True)
  return {k: tuple(val[0].shape[1:]) for k, val in v["intermediates"].items()}


def test_vgg11_stages_of_the_tutorial():
  # the tutorial's VGG-11 table, 224 column: pools to 112x64, 56x128, 28x256, 14x512, 7x512.
  assert stage_shapes("vgg11", (224, 224)) == {
      "stage1": (112, 112, 64), "stage2": (56, 56, 128), "stage3": (28, 28, 256),
      "stage4": (14, 14, 512), "stage5": (7, 7, 512)}
  # the tutorial's 32 column: 16x64, 8x128, 4x256, 2x512, 1x512 -> FC 512 (no adaptive pooling).
  assert stage_shapes("vgg11_cifar", (32, 32)) == {
      "stage1": (16, 16, 64), "stage2": (8, 8, 128), "stage3": (4, 4, 256),
      "stage4": (2, 2, 512), "stage5": (1, 1, 512)}
  v = abstract_init(M.build("vgg11_cifar"), (32, 32, 3))
  assert v["params"]["head"]["fc1"]["kernel"].shape == (512, 2048)       # the tutorial: FC In 512
  assert v["params"]["head"]["fc_out"]["kernel"].shape == (2048, 10)     # the tutorial: Out 10


def test_alexnet_original_stages():
  # the tutorial and the lecture notes "Design": 227 -> conv1 55x55x96 -> pool 27 -> conv2 27,
  # pool 13 -> conv3-5 13 -> pool 6 (flatten 256*6*6 = 9216).
  for name in ("alexnet_original", "caffenet"):
    assert stage_shapes(name, (227, 227)) == {
        "stage0": (55, 55, 96), "stage1": (27, 27, 96), "stage2": (13, 13, 256),
        "stage3": (13, 13, 384), "stage4": (6, 6, 256)}
  v = abstract_init(M.build("alexnet_original"), (227, 227, 3))
  assert v["params"]["head"]["fc1"]["kernel"].shape == (9216, 4096)
  assert v["params"]["conv2"]["kernel"].shape == (5, 5, 48, 256)         # 2 groups (paper Fig. 2)


def test_googlenet_stages_table1():
  # Szegedy et al. 2014, Table 1: conv1 112x112x64, conv2 56x56x192, 3b 28x28x480,
  # 4e 14x14x832, 5b 7x7x1024.
  assert stage_shapes("googlenet", (224, 224)) == {
      "stage1": (112, 112, 64), "stage2": (56, 56, 192), "stage3": (28, 28, 480),
      "stage4": (14, 14, 832), "stage5": (7, 7, 1024)}
  # Every inception module's output, Table 1 "output size" column.
  model = M.build("googlenet")
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  _, st = jax.eval_shape(lambda x: model.init_with_output(
      RNGS, x, capture_intermediates=lambda m, _: isinstance(m, InceptionV1), mutable=True), x)
  out = {k: st["intermediates"][k]["__call__"][0].shape[1:] for k in st["intermediates"]
         if k.startswith("inception")}
  assert out == {
      "inception3a": (28, 28, 256), "inception3b": (28, 28, 480),
      "inception4a": (14, 14, 512), "inception4b": (14, 14, 512), "inception4c": (14, 14, 512),
      "inception4d": (14, 14, 528), "inception4e": (14, 14, 832),
      "inception5a": (7, 7, 832), "inception5b": (7, 7, 1024)}


def test_densenet_stages_table1():
  # Huang et al. 2017, Table 1: dense blocks on 56, 28, 14, 7; channels 64+6k, then
  # theta*m + n*k (k=32): 256, 128+384=512, 256+768=1024, 512+512=1024.
  assert stage_shapes("densenet121", (224, 224)) == {
      "stem": (112, 112, 64), "stage1": (56, 56, 256), "stage2": (28, 28, 512),
      "stage3": (14, 14, 1024), "stage4": (7, 7, 1024)}
  # DenseNet-264: 64+6*32=256; 128+12*32=512; 256+64*32=2304; 1152+48*32=2688.
  s = stage_shapes("densenet264", (224, 224))
  assert [s[f"stage{i}"] for i in range(1, 5)] == [(56, 56, 256), (28, 28, 512), (14, 14, 2304), (7, 7, 2688)]


def test_squeezenet_stages_table1():
  # Iandola et al. 2016, Table 1 (its sizes follow a 227 input): conv1 111x111x96,
  # fire4 55x55x256, fire8 27x27x512, fire9 13x13x512.
  assert stage_shapes("squeezenet1_0", (227, 227)) == {
      "stage1": (111, 111, 96), "stage2": (55, 55, 256), "stage3": (27, 27, 512), "stage4": (13, 13, 512)}
  # At 224 (torchvision), conv1 gives 109 and ceil-mode pools 54, 27, 13.
  assert stage_shapes("squeezenet1_0", (224, 224))["stage2"] == (54, 54, 256)
  # SqueezeNet 1.1 (3x3/2 conv of 64, earlier pools): 111, 55, 27, 13 at 224.
  assert stage_shapes("squeezenet1_1", (224, 224)) == {
      "stage1": (111, 111, 64), "stage2": (55, 55, 128), "stage3": (27, 27, 256), "stage4": (13, 13, 512)}


def test_mobilenet_v1_stages_table1():
  # Howard et al. 2017, Table 1: 112x112x64, 56x56x128, 28x28x256, 14x14x512, 7x7x1024.
  assert stage_shapes("mobilenet_v1", (224, 224)) == {
      "stage1": (112, 112, 64), "stage2": (56, 56, 128), "stage3": (28, 28, 256),
      "stage4": (14, 14, 512), "stage5": (7, 7, 1024)}
  # Width multiplier alpha=0.5 halves every width (sec. 3.3).
  assert stage_shapes("mobilenet_v1_050", (224, 224))["stage5"] == (7, 7, 512)


def test_inception_stages():
  # Szegedy et al. 2015, Table 1: 35x35x288, 17x17x768, 8x8x2048 grids (torchvision: 192 before 5b).
  s = stage_shapes("inception_v3", (299, 299))
  assert (s["stage2"], s["stage3"], s["stage4"], s["stage5"]) == (
      (35, 35, 192), (35, 35, 288), (17, 17, 768), (8, 8, 2048))
  # Szegedy et al. 2016, Figs. 3, 7, 8: stem 35x35x384, Reduction-A 17x17x1024, Reduction-B 8x8x1536.
  s = stage_shapes("inception_v4", (299, 299))
  assert (s["stem"], s["stage2"], s["stage3"]) == ((35, 35, 384), (17, 17, 1024), (8, 8, 1536))


# ----------------------------------------------------------------------------- blocks


def test_adaptive_avg_pool_matches_pytorch_bins():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 1, 5, 1))
  y = adaptive_avg_pool(x, 3)
  # PyTorch bins for 5 -> 3: [0,2), [1,4), [3,5) -> means 0.5, 2, 3.5.
  np.testing.assert_allclose(np.asarray(y[0, :, 0, 0]), [0.5, 2.0, 3.5])
  # 1 -> 7 replicates; 14 -> 7 is a 2x2 average.
  assert adaptive_avg_pool(jnp.ones((2, 1, 1, 4)), 7).shape == (2, 7, 7, 4)
  z = jax.random.normal(jax.random.key(0), (1, 14, 14, 2))
  np.testing.assert_allclose(adaptive_avg_pool(z, 7), z.reshape(1, 7, 2, 7, 2, 2).mean((2, 4)), rtol=1e-5, atol=1e-6)


def test_lrn_matches_formula():
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 7))
  lrn = LRN(size=5, alpha=0.1, beta=0.75, k=2.0)
  y = np.asarray(lrn(x))
  xn = np.asarray(x)
  for c in range(7):
    s = (xn[..., max(0, c - 2):min(7, c + 3)] ** 2).sum(-1)
    np.testing.assert_allclose(y[..., c], xn[..., c] / (2.0 + 0.1 * s) ** 0.75, rtol=1e-5)


def test_ceil_mode_max_pool():
  # PyTorch MaxPool2d(3, 2, ceil_mode=True): 112 -> 56, 109 -> 54, 13 -> 6; floor mode 112 -> 55.
  for size, out in ((112, 56), (109, 54), (13, 6), (14, 7)):
    assert max_pool(jnp.zeros((1, size, size, 1)), 3, 2, ceil_mode=True).shape[1] == out
  assert max_pool(jnp.zeros((1, 112, 112, 1)), 3, 2).shape[1] == 55


# ----------------------------------------------------------------------------- training


# Every network, at the smallest convenient input (side), batch 2, 10 classes:
# (name, side, kwargs, real). real=True: one step of xnn train's train step, compiled and run, for one
# representative of each architecture; real=False: the train- and inference-mode forward passes
# through jax.eval_shape (every shape at the smallest input; the train step of every model is traced at
# its default input in test_every_model_trains.py). XLA:CPU compile time, not compute, dominates the real
# steps (~10-60 s per network on a 2-core machine), hence the split.
SMOKE = [
    ("alexnet", 63, {}, False),                 # 63: smallest side the three 3x3/2 pools allow
    ("alexnet_original", 67, {}, False),       # same layers as caffenet, LRN/pool order swapped
    ("caffenet", 67, {}, True),                # LRN + grouped convolutions
    ("vgg11", 32, {}, False), ("vgg11_bn", 32, {}, False), ("vgg11_cifar", 32, {}, False),
    ("vgg13", 32, {}, False), ("vgg13_bn", 32, {}, False), ("vgg16", 32, {}, False),
    ("vgg16_bn", 32, {}, False), ("vgg19", 32, {}, False), ("vgg19_bn", 32, {}, False),
    ("mobilenet_v1", 32, {}, False), ("mobilenet_v1_075", 32, {}, False),
    ("mobilenet_v1_050", 32, {}, False), ("mobilenet_v1_025", 32, {}, True),
    ("googlenet", 32, {"aux_logits": True}, True),           # both auxiliary heads, weighted 0.3 each
    ("inception_v3", 75, {"aux_logits": False}, False),   # 75: torchvision's minimum (no aux at 75)
    ("inception_v3", 299, {}, False),                     # with the auxiliary head (needs 17x17)
    ("inception_v4", 75, {}, False),
    ("squeezenet1_0", 32, {}, False), ("squeezenet1_1", 32, {}, True),
    ("densenet121", 32, {}, False),
    # The DenseNet code path run for real at reduced depth (2 layers per block): a real
    # densenet121 step alone costs ~50 s of XLA:CPU compile on this machine.
    ("densenet121", 32, {"block_config": (2, 2, 2, 2)}, True), ("densenet161", 32, {}, False),
    ("densenet169", 32, {}, False),
    ("densenet201", 32, {}, False), ("densenet264", 32, {}, False),
]


def test_smoke_list_covers_every_model():
  assert {n for n, _, _, _ in SMOKE} == set(OURS)


def forward_passes(model, x):
  """Train-mode outputs (every head) and inference-mode logits of a train-mode init."""
  variables = M.init_variables(model, (x,), jax.random.key(0))
  outs, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
  return outs if isinstance(outs, tuple) else (outs,), model.apply(variables, x, train=False)


@pytest.mark.parametrize("name,side,kw,real", SMOKE, ids=[f"{n}@{s}" for n, s, _, _ in SMOKE])
def test_forward_and_sgd_step(name, side, kw, real):
  model = M.build(name, num_classes=10, **kw)
  x = jax.random.normal(jax.random.key(2), (2, side, side, 3))
  n_heads = 3 if kw.get("aux_logits") and name == "googlenet" else 2 if name == "inception_v3" and side == 299 else 1
  if not real:
    outs, logits = jax.eval_shape(lambda x: forward_passes(model, x), x)
    assert logits.shape == (2, 10)
    assert [o.shape for o in outs] == [(2, 10)] * n_heads          # main head (+ auxiliary heads)
    return
  _, task, _ = task_and_batch(name, model=model)
  batch = {"inputs": x, "label": jnp.array([1, 7])}

  def fn(b):     # one compilation: the initial state's inference forward pass and the step
    state, after, metrics = one_step(model, task, b)
    return state, after, metrics, model.apply(variables_of(state), b["inputs"], train=False)

  state, after, metrics, logits = run_compiled(fn, batch)
  assert metrics["loss"].shape == () and float(metrics["loss"]) > 0 and np.isfinite(float(metrics["loss"]))
  assert ("aux_loss" in metrics) == (n_heads > 1)                 # auxiliary heads enter the loss
  gnorm = float(metrics["grad_norm"])
  assert np.isfinite(gnorm) and gnorm > 0
  same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, after.params, state.params)
  assert all(jax.tree_util.tree_leaves(same))
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), after.params, state.params)
  assert any(jax.tree_util.tree_leaves(changed))
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  if state.batch_stats is not None:   # BatchNorm running statistics moved in train mode
    diff = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), after.batch_stats, state.batch_stats)
    assert max(jax.tree_util.tree_leaves(diff)) > 0
