"""xnn.ops (backend, conv, onednn): value and both gradients equal XLA's (``jax.vjp`` of lax's conv).

Tolerance (float32): |ours - xla| <= 1e-4 * max|xla| + 1e-4 * |xla| elementwise, i.e.
rtol 1e-4 and atol 1e-4 relative to the gradient's scale; the sums hold the same
terms as XLA's, only in another order.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from xnn.ops import backend, conv_for_backend, conv_general_dilated, conv_setting, geometry
from xnn.ops import conv as xconv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(params=["onednn", "taps", "conv"])
def always_custom(request):
  """Each test three times: oneDNN's kernels (2-D layers; the JAX formulations for 1-D/3-D),
  and the pure-JAX formulations with one weight-gradient method each (no auto rule)."""
  setting = dict(cpu="onednn") if request.param == "onednn" else dict(cpu="xnn", wgrad=request.param)
  with conv_setting(**setting):
    yield request.param


def _close(ours, ref, what):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  scale = max(float(np.max(np.abs(ref))), 1e-30)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def _check(x_shape, k_shape, strides, padding, groups=1, rhs_dilation=None, dn=NHWC, seed=0, **kw):
  """Compares out, dx, dw of conv_general_dilated with lax's (returns ours' jaxpr text)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
  args = dict(window_strides=strides, padding=padding, rhs_dilation=rhs_dilation,
              dimension_numbers=dn, feature_group_count=groups, **kw)
  ref_out, ref_vjp = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, **args), x, w)
  out, vjp = jax.vjp(lambda a, b: conv_general_dilated(a, b, **args), x, w)
  g = jnp.asarray(rng.standard_normal(ref_out.shape), jnp.float32)
  _close(out, ref_out, "value")
  for name, a, b in zip(("dx", "dw"), vjp(g), ref_vjp(g)):
    _close(a, b, name)
  return str(jax.make_jaxpr(lambda a, b: conv_general_dilated(a, b, **args))(x, w))


# (x NHWC, kernel HWIO, strides, padding, groups, rhs dilation)
CASES = [
    ((2, 9, 9, 4), (3, 3, 4, 5), (1, 1), ((1, 1), (1, 1)), 1, (1, 1)),
    ((2, 9, 10, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1)), 1, (1, 1)),
    ((2, 10, 9, 4), (3, 3, 4, 6), (2, 1), ((0, 1), (2, 0)), 1, (1, 1)),       # asymmetric
    ((2, 8, 8, 4), (3, 3, 4, 4), (1, 1), ((0, 0), (0, 0)), 1, (1, 1)),        # zero padding
    ((2, 8, 8, 4), (3, 2, 4, 4), (2, 2), ((0, 0), (0, 0)), 1, (1, 1)),        # non-square kernel
    ((2, 9, 9, 4), (3, 3, 2, 6), (1, 1), ((1, 1), (1, 1)), 2, (1, 1)),        # groups 2
    ((2, 9, 9, 4), (3, 3, 2, 6), (2, 2), ((1, 2), (0, 1)), 2, (1, 1)),        # groups 2, strided
    ((2, 9, 9, 6), (3, 3, 1, 6), (1, 1), ((1, 1), (1, 1)), 6, (1, 1)),        # depthwise
    ((2, 9, 9, 4), (3, 3, 1, 8), (2, 2), ((1, 1), (1, 1)), 4, (1, 1)),        # depthwise x2
    ((2, 11, 10, 4), (3, 3, 1, 4), (2, 1), ((2, 1), (1, 2)), 4, (2, 1)),      # depthwise, dilated
    ((2, 11, 11, 3), (3, 3, 3, 4), (1, 1), ((2, 2), (2, 2)), 1, (2, 2)),      # dilation 2
    ((2, 12, 12, 4), (3, 3, 2, 4), (2, 2), ((2, 2), (1, 2)), 2, (2, 2)),      # dil 2, groups, s2
    ((2, 7, 7, 5), (1, 1, 5, 7), (1, 1), ((0, 0), (0, 0)), 1, (1, 1)),        # 1x1
    ((2, 7, 8, 5), (1, 1, 5, 7), (2, 2), ((0, 0), (0, 0)), 1, (1, 1)),        # 1x1 stride 2
    ((2, 13, 13, 3), (5, 5, 3, 4), (2, 2), ((2, 2), (2, 2)), 1, (1, 1)),      # 5x5 s2
    ((2, 16, 16, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), 1, (1, 1)),      # ResNet stem 7x7 s2
    ((3, 6, 6, 2), (3, 3, 2, 3), (3, 3), ((1, 0), (0, 1)), 1, (1, 2)),        # stride 3, mixed dil
]


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,groups,dil", CASES)
def test_value_and_grads_match_xla(always_custom, x_shape, k_shape, strides, padding, groups, dil):
  jaxpr = _check(x_shape, k_shape, strides, padding, groups, dil, seed=len(x_shape) + sum(k_shape))
  if always_custom == "onednn":                     # every 2-D case: oneDNN's three primitives
    assert "ffi_call" in jaxpr and "custom_vjp_call" in jaxpr and "conv_general_dilated" not in jaxpr
  elif k_shape[-2] == 1 and groups == x_shape[-1]:  # depthwise: tap products, JAX's own gradient
    assert "conv_general_dilated" not in jaxpr and "custom_vjp_call" not in jaxpr
  else:
    assert "custom_vjp_call" in jaxpr          # the custom gradient really ran


@pytest.mark.parametrize("method", ["im2col", "taps_t"])
def test_other_formulations_match_xla(method):
  with conv_setting(cpu="xnn", wgrad=method):
    _check((2, 9, 9, 4), (3, 3, 4, 5), (2, 2), ((1, 0), (1, 1)), 1, (2, 1))
    _check((2, 8, 8, 3), (1, 1, 3, 5), (1, 1), ((0, 0), (0, 0)))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_string_padding(always_custom, padding):
  assert "custom_vjp_call" in _check((2, 9, 8, 3), (4, 3, 3, 4), (2, 2), padding)


def test_1d_and_3d_channel_last(always_custom):
  assert "custom_vjp_call" in _check((2, 11, 3), (3, 3, 4), (2,), ((1, 1),), dn=("NWC", "WIO", "NWC"))
  assert "custom_vjp_call" in _check((2, 5, 6, 5, 2), (3, 2, 3, 2, 4), (1, 2, 1),
                                     ((1, 1), (0, 1), (1, 0)), dn=("NDHWC", "DHWIO", "NDHWC"))


def test_flax_dimension_numbers(always_custom):
  """Flax passes ConvDimensionNumbers tuples, not strings: those take the fast path too."""
  dn = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  assert "custom_vjp_call" in _check((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1)), dn=dn)


@pytest.mark.parametrize("kw", [
    dict(dn=("NCHW", "OIHW", "NCHW")),
    dict(lhs_dilation=(2, 2)),
    dict(padding=((-1, 1), (1, 1))),
])
def test_unsupported_falls_back_to_xla(always_custom, kw):
  kw = dict(kw)   # (the parametrised dict is shared by both formulations)
  dn = kw.pop("dn", NHWC)
  padding = kw.pop("padding", ((1, 1), (1, 1)))
  x_shape, k_shape = ((2, 4, 8, 8), (5, 4, 3, 3)) if dn[0] == "NCHW" else ((2, 8, 8, 4), (3, 3, 4, 5))
  assert "custom_vjp_call" not in _check(x_shape, k_shape, (1, 1), padding, dn=dn, **kw)


def test_batch_group_count_falls_back(always_custom):
  x = jnp.ones((4, 6, 6, 2))
  w = jnp.ones((3, 3, 2, 4))
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=NHWC, batch_group_count=2)
  assert geometry.normalize(x, w, **args) is None
  np.testing.assert_array_equal(conv_general_dilated(x, w, **args),
                                lax.conv_general_dilated(x, w, **args))


def test_auto_rule(monkeypatch):
  """Tap products where they measured faster (benchmarks/RESULTS.md), the canonical conv elsewhere."""
  monkeypatch.setenv("XNN_CPU_CONV", "xnn")
  assert xconv._auto_method((1, 1), 1, (3, 3), 16) == "conv"      # dense stride-1 3x3
  assert xconv._auto_method((1, 1), 1, (7, 7), 3) == "conv"       # stem
  assert xconv._auto_method((2, 2), 1, (3, 3), 3) == "conv"       # strided 3-channel stem
  assert xconv._auto_method((2, 2), 1, (3, 3), 16) == "taps"      # strided
  assert xconv._auto_method((1, 1), 1, (1, 1), 64) == "taps"      # 1x1
  assert xconv._auto_method((1, 1), 32, (3, 3), 128) == "taps"    # grouped / depthwise
  _check((2, 9, 9, 16), (3, 3, 16, 8), (1, 1), ((1, 1), (1, 1)))   # auto, both methods in one net
  _check((2, 9, 9, 16), (3, 3, 16, 8), (2, 2), ((1, 1), (1, 1)))


def _hlo_conv_labels(fn, *args):
  """dim_labels of every convolution in the optimised HLO of jit(fn)."""
  import re
  txt = jax.jit(fn).lower(*args).compile().as_text()
  return re.findall(r"convolution\(.*?dim_labels=([\w>-]+)", txt)


def _scanned_steps(conv, stride):
  """3 SGD steps on (w, x) in a lax.scan: both gradients of one convolution in a loop body."""
  def loss(w, x):
    return jnp.sum(jnp.tanh(conv(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=NHWC)))
  def run(w, x):
    def body(c, _):
      gw, gx = jax.grad(loss, argnums=(0, 1))(*c)
      return (c[0] - 0.01 * gw, c[1] - 0.01 * gx), None
    return lax.scan(body, (w, x), None, length=3)[0]
  return run


def test_gradients_stay_canonical_inside_scan(monkeypatch):
  """Regression guard for the 64-151x in-loop slowdown (jax-ml/jax#12868).

  Inside a loop body XLA:CPU leaves the gradient convolutions JAX emits in their
  non-canonical forms (weight gradient ``f01b_i01o->01bf``, input gradient with a
  ``01oi`` kernel) and runs them as naive loops; ours are written in the canonical
  ``b01f_01io->b01f`` form, which it runs with its convolution kernel.
  """
  monkeypatch.setenv("XNN_CPU_CONV", "xnn")
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((4, 10, 10, 8)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 8, 8)), jnp.float32) / 8
  steps = _scanned_steps
  for stride in (1, 2):   # stride 2: tap-product weight gradient, lhs-dilated input gradient
    ours = _hlo_conv_labels(steps(conv_general_dilated, stride), w, x)
    ref = _hlo_conv_labels(steps(lax.conv_general_dilated, stride), w, x)
    assert len(ours) == 3 - (stride == 2) and set(ours) == {"b01f_01io->b01f"}, ours
    assert set(ref) != {"b01f_01io->b01f"}, ref    # what the custom gradients avoid
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 jax.jit(steps(conv_general_dilated, stride))(w, x),
                 jax.jit(steps(lax.conv_general_dilated, stride))(w, x))


def test_onednn_inside_scan_is_custom_calls_only(monkeypatch):
  """oneDNN's kernels run in loop bodies: no XLA convolution left, same three steps."""
  monkeypatch.setenv("XNN_CPU_CONV", "onednn")
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.standard_normal((4, 10, 10, 8)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 8, 8)), jnp.float32) / 8
  for stride in (1, 2):
    txt = jax.jit(_scanned_steps(conv_general_dilated, stride)).lower(w, x).compile().as_text()
    assert "convolution(" not in txt
    assert {"xnn_onednn_conv_fwd", "xnn_onednn_conv_bwd_data", "xnn_onednn_conv_bwd_weights"} <= set(
        __import__("re").findall(r'custom_call_target="(\w+)"', txt))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 jax.jit(_scanned_steps(conv_general_dilated, stride))(w, x),
                 jax.jit(_scanned_steps(lax.conv_general_dilated, stride))(w, x))


def test_onednn_available_where_xnn_installs_it():
  """pyproject installs oneDNN on Linux x86-64: there the fast path must build and load."""
  import platform
  import sys
  from xnn.ops import onednn
  if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
    pytest.skip("oneDNN is installed with xnn on Linux x86-64 only")
  assert onednn.available(), onednn.unavailable_reason()
  assert onednn.version().startswith("3.")
  assert onednn.library_path().is_file()


def test_onednn_bf16_and_vmap(monkeypatch):
  monkeypatch.setenv("XNN_CPU_CONV", "onednn")
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.standard_normal((3, 2, 8, 8, 4)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.bfloat16)
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=NHWC)
  f = lambda a, b: conv_general_dilated(a, b, **args)
  ref = lambda a, b: lax.conv_general_dilated(a, b, **args)
  out, vjp = jax.vjp(f, x[0], w)
  rout, rvjp = jax.vjp(ref, x[0], w)
  assert out.dtype == jnp.bfloat16
  tol = lambda r: dict(rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(r.astype(jnp.float32)))))
  np.testing.assert_allclose(np.float32(out), np.float32(rout), **tol(rout))
  for a, b in zip(vjp(out), rvjp(out)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(a), np.float32(b), **tol(b))
  # vmap over an extra leading axis (one oneDNN call per element)
  np.testing.assert_allclose(np.float32(jax.vmap(f, (0, None))(x, w)),
                             np.float32(jax.vmap(ref, (0, None))(x, w)), **tol(rout))


def test_bad_mode_is_named(monkeypatch):
  monkeypatch.setenv("XNN_CPU_CONV", "fast")
  with pytest.raises(ValueError, match="XNN_CPU_CONV='fast'.*auto, onednn, xnn, xla"):
    conv_general_dilated(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), (1, 1), "SAME",
                         dimension_numbers=NHWC)


def test_backend_selection_and_switches(monkeypatch):
  assert conv_for_backend("cpu") is conv_general_dilated
  assert conv_for_backend("gpu") is lax.conv_general_dilated
  assert conv_for_backend("tpu") is lax.conv_general_dilated
  assert conv_for_backend() is conv_general_dilated   # tests run on CPU
  x, w = jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 8))
  # a fresh function per trace: the switches act at trace time (cached traces keep theirs)
  jaxpr = lambda: str(jax.make_jaxpr(
      lambda a: backend.backend_conv(a, w, (2, 2), "SAME", dimension_numbers=NHWC))(x))
  assert "custom_vjp_call" in jaxpr()
  with conv_setting(cpu="xla"):
    assert conv_for_backend("cpu") is lax.conv_general_dilated
    assert "custom_vjp_call" not in jaxpr()
  assert "custom_vjp_call" in jaxpr()
  with conv_setting(cpu="onednn"):
    assert "ffi_call" in jaxpr()
  with conv_setting(cpu="xnn"):
    assert "custom_vjp_call" in jaxpr() and "ffi_call" not in jaxpr()
  with pytest.raises(ValueError, match="CPU convolution 'fast': expected one of auto, onednn, xnn, xla"):
    with conv_setting(cpu="fast"):
      pass
  monkeypatch.setenv("XNN_CPU_CONV", "xla")
  assert conv_for_backend("cpu") is lax.conv_general_dilated
  assert "custom_vjp_call" not in jaxpr()
  with conv_setting(cpu="onednn"):        # the setting wins over the environment
    assert "ffi_call" in jaxpr()


def test_weight_grad_direct_depthwise_and_grouped():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 10, 9, 6)), jnp.float32)
  for groups, ks in ((6, (3, 3, 1, 12)), (3, (2, 3, 2, 6)), (1, (3, 3, 6, 4))):
    w = jnp.zeros(ks)
    pads = ((1, 2), (0, 1))
    y, vjp = jax.vjp(lambda w, p=pads, n=groups: lax.conv_general_dilated(x, w, (2, 1), p, None, (1, 2), NHWC, n), w)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for method in ("taps", "taps_dot", "conv"):
      got = xconv.weight_grad(x, g, ks, (2, 1), pads, (1, 2), groups, method=method)
      _close(got, vjp(g)[0], f"weight_grad groups={groups} {method}")


def test_preferred_element_type_bf16_inputs(always_custom):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 4)), jnp.bfloat16)
  args = dict(window_strides=(2, 2), padding="SAME", dimension_numbers=NHWC,
              preferred_element_type=jnp.float32)
  out, vjp = jax.vjp(lambda a, b: conv_general_dilated(a, b, **args), x, w)
  ref, rvjp = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, **args), x, w)
  assert out.dtype == ref.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  g = jnp.ones_like(out)
  for a, b in zip(vjp(g), rvjp(g)):
    assert a.dtype == b.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(b))))


def test_second_order_reverse_works_forward_mode_raises(always_custom):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((2, 7, 7, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)

  def loss(conv):
    def f(w):
      y = conv(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC)
      return jnp.sum(jnp.tanh(y))
    return lambda w: jnp.sum(jax.grad(f)(w) ** 2)

  _close(jax.grad(loss(conv_general_dilated))(w), jax.grad(loss(lax.conv_general_dilated))(w),
         "grad of grad")
  f = lambda w: conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(f, (w,), (w,))


class SmallCNN(nn.Module):
  conv: object

  @nn.compact
  def __call__(self, x):
    c = lambda *a, **k: nn.Conv(*a, conv_general_dilated=self.conv, **k)
    x = nn.relu(c(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))(x))
    x = nn.relu(c(8, (3, 3), feature_group_count=8, padding="SAME")(x))       # depthwise
    x = nn.relu(c(16, (1, 1), use_bias=False)(x))
    x = nn.relu(c(16, (3, 3), strides=(2, 2), kernel_dilation=(2, 2), padding=((2, 1), (2, 1)),
                  feature_group_count=2)(x))
    x = nn.relu(c(16, (3, 3), padding="SAME")(x))                             # auto: "conv"
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


@pytest.mark.parametrize("method", ["onednn", "auto", "taps", "conv"])
def test_flax_model_jit_grad_matches_xla(method):
  setting = dict(cpu="onednn") if method == "onednn" else dict(cpu="xnn", wgrad=method)
  with conv_setting(**setting):
    _flax_model_jit_grad_matches_xla()


def _flax_model_jit_grad_matches_xla():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.standard_normal((4, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 4))
  ours, ref = SmallCNN(conv_general_dilated), SmallCNN(lax.conv_general_dilated)
  params = ref.init(jax.random.key(0), x)

  def loss_fn(model):
    def loss(p):
      logits = model.apply(p, x)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
    return jax.jit(jax.value_and_grad(loss))

  (lo, go), (lr, gr) = loss_fn(ours)(params), loss_fn(ref)(params)
  _close(lo, lr, "loss")
  jax.tree.map(lambda a, b: _close(a, b, "param grad"), go, gr)
  assert "custom_vjp_call" in str(jax.make_jaxpr(lambda p: ours.apply(p, x))(params))
