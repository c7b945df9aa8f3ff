"""The library of ``xnn inspect`` (xnn/inspect/): saliency, effective receptive field, feature visualisation's
regularisers, attention maps, on small networks with random weights (no training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from xnn.cost.receptive_field import erf_map, erf_numbers
from xnn.inspect import feature_vis as V, saliency as S
from xnn.inspect.stages import attention_paths, sown, sown_order, stage_paths


def _random_weights(model, *inputs, seed=0, scale=0.3):
  """The model's variables drawn by NumPy (no compiled initialiser): normal parameters, BatchNorm statistics
  mean 0 and variance 1."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "var":
      return np.ones(leaf.shape, leaf.dtype)
    if name == "mean":
      return np.zeros(leaf.shape, leaf.dtype)
    return (scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def _tiny_cnn():
  """A CIFAR ResNet-20 of widths 4/8/8 (BatchNorm in inference mode) with random weights, and two 8x8x3 inputs."""
  import xnn.models as M
  model = M.build("resnet20", widths=(4, 8, 8))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = _random_weights(model, x)
  logits = jax.jit(lambda x: model.apply(variables, x, train=False))
  return jax.jit(S.class_score(logits, np.argmax(logits(x), axis=-1))), x


def test_saliency_equals_finite_differences():
  """d S_c / d x (Simonyan et al. 2014) against central differences (S(x + h e) - S(x - h e)) / 2h on the
  pixels where it is largest (a ReLU network is piecewise linear: exact away from its kinks)."""
  score, x = _tiny_cnn()
  grad = S.gradient(score, x)
  h = 1e-3
  checked = 0
  for n in range(len(x)):
    for flat in np.argsort(-np.abs(grad[n]).ravel())[:4]:
      e = np.zeros(x.shape, np.float32)
      e[(n, *np.unravel_index(flat, x.shape[1:]))] = h
      fd = (score(x + e)[n] - score(x - e)[n]) / (2 * h)
      assert fd == pytest.approx(grad[n].ravel()[flat], rel=2e-2, abs=1e-3)
      checked += abs(fd) > 1e-2
  assert checked == 8                                        # none of them is a trivial zero


def test_integrated_gradients_complete_and_smoothgrad_without_noise():
  """Integrated gradients sum to S(x) - S(baseline) (Sundararajan et al. 2017, Proposition 1), up to the error
  of the Riemann sum; SmoothGrad with zero noise is the gradient."""
  score, x = _tiny_cnn()
  ig = S.integrated_gradients(score, x, steps=64)
  np.testing.assert_allclose(ig.reshape(2, -1).sum(1), score(x) - score(jnp.zeros_like(x)), rtol=2e-2, atol=1e-3)
  np.testing.assert_allclose(S.smoothgrad(score, x, jax.random.key(0), samples=2, noise=0.0), S.gradient(score, x),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_erf_of_uniform_convolutions_is_the_n_fold_box(n):
  """Luo et al. 2016, sec. 2.2: n uniform 3x3 convolutions without nonlinearity have the ERF of the n-fold
  convolution of the 3x3 box (computed here by scipy), whose variance per axis is n x 2/3 (the box's is 2/3):
  the fitted Gaussian's sigma is sqrt(2n/3)."""
  w = jnp.ones((3, 3, 1, 1))

  def features(_, x):
    for _ in range(n):
      x = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return x

  size = 21
  m = erf_map(features, jax.random.normal(jax.random.key(0), (3, size, size, 1)))
  box = np.ones((3, 3))
  reference = box
  for _ in range(n - 1):
    reference = scipy.signal.convolve2d(reference, box)
  expected = np.zeros((size, size))
  c, r = size // 2, n                                      # the reference is (2n + 1) x (2n + 1)
  expected[c - r:c + r + 1, c - r:c + r + 1] = reference
  np.testing.assert_allclose(m, expected, rtol=1e-6)
  numbers = erf_numbers(m)
  assert numbers["sigma"] == pytest.approx(np.sqrt(2 * n / 3), rel=1e-6)
  assert numbers["centre"] == (c, c)
  inside = [reference[r - k:r + k + 1, r - k:r + k + 1].sum() for k in range(r + 1)]
  assert numbers["radius"] == next(k for k, mass in enumerate(inside) if mass >= 0.95 * reference.sum())
  assert numbers["radius50"] == next(k for k, mass in enumerate(inside) if mass >= 0.5 * reference.sum())
  assert numbers["half_max_area"] == (reference >= reference.max() / 2).sum()


def test_blur_and_jitter():
  x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 2))
  assert V.blur(x, 0.0) is x
  blurred = V.blur(x, 1.0)
  np.testing.assert_allclose(blurred.mean(), x.mean(), rtol=1e-5)   # a blur keeps the mean (gain 1 at f = 0)
  assert blurred.std() < 0.6 * x.std()
  x, shifted = np.asarray(x), np.asarray(V.jitter(x, jax.random.key(3), 2))
  assert any(np.array_equal(shifted, np.roll(x, (dy, dx), axis=(1, 2))) for dy in range(-2, 3) for dx in range(-2, 3))


def test_colour_decorrelation_is_a_square_root():
  """colour_sqrt(C) = U sqrt(S), so colour_sqrt(C) colour_sqrt(C)^T is C up to the normalising scale."""
  c = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.7], [0.6, 0.7, 1.0]])
  root = V.colour_sqrt(c)
  product = root @ root.T
  np.testing.assert_allclose(product / product[0, 0], c / c[0, 0], rtol=1e-5)
  assert np.linalg.norm(root, axis=0).max() == pytest.approx(1.0, rel=1e-6)


def test_attention_weights_per_layer_and_head():
  """The Transformer's sown attention weights, found in the order the model computed them (jit sorts dict
  keys): softmax rows, no attention to padding, causal decoder self-attention."""
  import xnn.models as M
  from xnn.inspect.attention import attention_png
  model = M.build("transformer_seq2seq", num_layers=2, num_heads=2, d_model=16, d_ff=32)
  tokens = jnp.array([[3, 4, 5, 6, 0], [7, 8, 9, 2, 2]])
  variables = _random_weights(model, tokens, tokens)
  _, values = jax.jit(lambda v, t: sown(model, v, t, t))(variables, tokens)
  order = sown_order(model, variables, tokens, tokens)
  assert sorted(order) == sorted(values)
  paths = attention_paths(order)
  stacks = (("encoder", ("self_attention",)), ("decoder", ("self_attention", "cross_attention")))
  assert paths == [f"{stack}/layer{i}/{kind}/attention_weights" for stack, kinds in stacks
                   for i in range(2) for kind in kinds]
  assert stage_paths(order) == ["encoder/output0", "encoder/output1"]
  maps = {p: np.asarray(values[p]) for p in paths}
  for w in maps.values():
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)              # softmax rows
  assert np.all(maps[paths[0]][0, :, :, 4] < 1e-6)                     # the padding token is never attended to
  assert np.all(np.triu(maps[paths[2]][0, 0], 1) == 0)                 # causal decoder self-attention
  assert attention_png(maps, 0, "t")[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_order_follows_the_model():
  """A CIFAR ResNet sows stage1..3 and an ImageNet one stem first: the order is the model's, not sorted."""
  import xnn.models as M
  model = M.build("resnet18", num_classes=4)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  assert stage_paths(sown_order(model, variables, x)) == ["stem", "stage1", "stage2", "stage3", "stage4"]


def test_first_convolution_in_creation_order():
  """The stem's kernel, not the alphabetically first one (``stage1_block1`` sorts before ``stem``)."""
  import xnn.models as M
  from xnn.inspect.filters import first_conv
  model = M.build("resnet20", widths=(4, 8, 8))
  assert first_conv(model, jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)) == ("stem", "conv", "kernel")
  assert first_conv(M.build("transformer_classifier"), jax.ShapeDtypeStruct((1, 8, 8), jnp.float32)) is None
