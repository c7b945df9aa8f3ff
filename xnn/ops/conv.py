"""A drop-in ``lax.conv_general_dilated`` with a faster weight gradient on XLA:CPU.

XLA:CPU lowers the weight gradient of a convolution to another convolution whose
"kernel" is the whole output-gradient image and whose contraction runs over the
batch; Eigen's spatial-convolution kernel handles that shape poorly.  Here the
forward pass and the input gradient stay XLA's own, and the weight gradient is

    dW[a, b, c, o] = sum_{n, i, j} xpad[n, i*s + a*d, j*s + b*d, c] * dY[n, i, j, o]

evaluated as one matrix product per kernel tap (a, b): the shifted, strided slice of
the padded input, reshaped to (N*Ho*Wo, C), transposed against dY reshaped to
(N*Ho*Wo, O) -- or, when it measured faster, all taps at once (im2col).  The sum is
exact (same terms, float32 accumulation), only the summation order differs from
XLA's.

Measured on 2 CPU cores (benchmarks/conv_grad.py), this beats XLA's weight gradient
for 1x1 (6-8x), grouped (7-80x), depthwise (~1.3x) and strided 3x3 layers (~1.5x),
but not for dense stride-1 kxk layers or 3-channel stems, where XLA's gradient is
only ~2x its forward; with ``WGRAD_METHOD = "auto"`` (default) those layers keep
plain ``lax.conv_general_dilated`` (see ``_custom_wins``).

Supported by the fast path: channel-last layouts (NWC/WIO, NHWC/HWIO, NDHWC/DHWIO,
i.e. Flax's), any window strides, explicit (possibly asymmetric, non-negative)
padding or 'SAME'/'VALID', rhs (kernel) dilation and ``feature_group_count``
(grouped and depthwise).  Everything else (lhs dilation, ``batch_group_count`` > 1,
other layouts, negative padding) falls back to plain ``lax.conv_general_dilated``
and therefore to XLA's own gradients.

Use ``conv_general_dilated_for_backend()`` to pick: this function on the CPU
backend, ``lax.conv_general_dilated`` on GPU/TPU.  Setting the environment variable
``XNN_CPU_CONV=xla`` (or entering ``use_xla_conv()``) forces XLA's convolution
everywhere.

Differentiation: reverse mode of any order works (the backward pass is made of
differentiable JAX ops); forward mode (``jax.jvp``/``jacfwd``) raises JAX's
"can't apply forward-mode autodiff (jvp) to a custom_vjp function" error.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["conv_general_dilated", "conv_general_dilated_for_backend", "use_xla_conv",
           "weight_grad", "fast_path_supported"]

_ENV = "XNN_CPU_CONV"
_state = threading.local()

# Weight-gradient formulation: "auto" (tap products where they measured faster than
# XLA's gradient, XLA's convolution elsewhere -- see _custom_wins), or, always using the
# custom gradient, "taps" (one (M, C)^T (M, O) product per kernel tap), "taps_t"
# ((O, M) (M, C) per tap) or "im2col" (one product over all taps at once).
WGRAD_METHOD = "auto"


def _xla_forced() -> bool:
  """True when XLA's own convolution is requested (env var or ``use_xla_conv``)."""
  return getattr(_state, "force_xla", False) or os.environ.get(_ENV, "").lower() == "xla"


@contextlib.contextmanager
def use_xla_conv(enabled: bool = True):
  """Context manager: inside it, ``conv_general_dilated`` is plain XLA.

  Acts at trace time: functions already traced and cached by ``jax.jit`` keep the
  convolution they were traced with.
  """
  old = getattr(_state, "force_xla", False)
  _state.force_xla = enabled
  try:
    yield
  finally:
    _state.force_xla = old


def conv_general_dilated_for_backend(backend: str | None = None):
  """``conv_general_dilated`` on the CPU backend, ``lax.conv_general_dilated`` elsewhere.

  Also returns XLA's when ``XNN_CPU_CONV=xla`` is set.
  """
  backend = backend or jax.default_backend()
  if backend == "cpu" and not _xla_forced():
    return conv_general_dilated
  return lax.conv_general_dilated


def _channel_last_specs(nd: int):
  """Normalised (lhs, rhs, out) specs of channel-last layouts: NH..C, H..IO, NH..C."""
  sp = tuple(range(1, nd + 1))
  return ((0, nd + 1) + sp, (nd + 1, nd) + tuple(range(nd)), (0, nd + 1) + sp)


def _config(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count, batch_group_count):
  """The normalised static config of the fast path, or None when it does not apply."""
  if lhs.ndim != rhs.ndim or lhs.ndim < 3 or batch_group_count != 1:
    return None
  nd = lhs.ndim - 2
  if dimension_numbers is None:
    return None
  try:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except Exception:  # noqa: BLE001 - let lax raise its own error on the fallback path
    return None
  if (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)) != _channel_last_specs(nd):
    return None
  if lhs_dilation is not None and any(int(d) != 1 for d in lhs_dilation):
    return None
  strides = tuple(int(s) for s in window_strides)
  rdil = tuple(int(d) for d in rhs_dilation) if rhs_dilation is not None else (1,) * nd
  if len(strides) != nd or len(rdil) != nd or min(strides + rdil) < 1:
    return None
  ksz = rhs.shape[:nd]
  if isinstance(padding, str):
    eff = tuple((k - 1) * d + 1 for k, d in zip(ksz, rdil))
    pads = tuple(tuple(int(v) for v in p)
                 for p in lax.padtype_to_pads(lhs.shape[1:nd + 1], eff, strides, padding))
  else:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != nd or any(v < 0 for p in pads for v in p):
    return None
  g = int(feature_group_count)
  cin, o = lhs.shape[-1], rhs.shape[-1]
  if g < 1 or cin % g or o % g or rhs.shape[-2] * g != cin:
    return None
  return strides, pads, rdil, g


def fast_path_supported(lhs, rhs, window_strides, padding, lhs_dilation=None,
                        rhs_dilation=None, dimension_numbers=None,
                        feature_group_count=1, batch_group_count=1) -> bool:
  """Whether the custom weight gradient can handle these args (ignoring the auto rule)."""
  return _config(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, feature_group_count, batch_group_count) is not None


def _tap_slices(xp, out_sp, ksz, strides, rdil):
  """Yield, for each kernel tap in row-major order, xp's shifted strided slice of size out_sp."""
  nd = len(ksz)
  for tap in itertools.product(*(range(k) for k in ksz)):
    start = (0,) + tuple(t * d for t, d in zip(tap, rdil)) + (0,)
    limit = ((xp.shape[0],) + tuple(t * d + (n - 1) * s + 1
                                    for t, d, n, s in zip(tap, rdil, out_sp, strides))
             + (xp.shape[-1],))
    yield lax.slice(xp, start, limit, (1,) + strides + (1,)) if nd else xp


def _custom_wins(strides, groups, ksz, cin) -> bool:
  """Auto rule: whether the tap-product weight gradient beat XLA's for this layer kind.

  Measured with benchmarks/conv_grad.py --extra on 2 CPU cores (XLA:CPU, float32):
  grouped/depthwise (1.1-80x), 1x1 (6-8x) and strided layers with >= 8 input
  channels (1.5x) win; dense stride-1 kxk (k > 1) layers and 3-channel stems are
  faster with XLA's own gradient (0.35-0.8x), so those keep XLA's convolution.
  """
  if groups > 1 or int(np.prod(ksz)) == 1:
    return True
  return max(strides) > 1 and cin >= 8


def weight_grad(lhs, dy, kernel_shape, strides, pads, rdil, groups, dtype=None,
                method: str | None = None):
  """dW of a channel-last convolution: sum over (n, out pos) of input patch x dY.

  lhs: (N, *in_spatial, Cin); dy: (N, *out_spatial, O); kernel_shape: (*k, Cin/G, O).
  Returns an array of ``kernel_shape`` (dtype ``dtype``, default lhs.dtype),
  accumulated in float32 (or wider).
  """
  nd = lhs.ndim - 2
  ksz = tuple(kernel_shape[:nd])
  cg, o = kernel_shape[-2], kernel_shape[-1]
  og = o // groups
  out_sp = dy.shape[1:-1]
  dtype = dtype or lhs.dtype
  m = int(np.prod(dy.shape[:-1]))
  ntaps = int(np.prod(ksz))
  acc = jnp.promote_types(jnp.promote_types(lhs.dtype, dy.dtype), jnp.float32)
  if m == 0:
    return jnp.zeros(kernel_shape, dtype)
  xp = jnp.pad(lhs, ((0, 0),) + tuple(pads) + ((0, 0),)) if any(v for p in pads for v in p) else lhs
  method = method or (WGRAD_METHOD if WGRAD_METHOD != "auto" else "taps")
  slices = _tap_slices(xp, out_sp, ksz, strides, rdil)
  if groups == 1:
    g2 = dy.reshape(m, o)
    if method == "im2col":
      pt = jnp.concatenate(list(slices), axis=-1).reshape(m, ntaps * cg)
      r = lax.dot_general(pt, g2, (((0,), (0,)), ((), ())), preferred_element_type=acc)
      return r.reshape(kernel_shape).astype(dtype)
    if method == "taps_t":   # (O, M) @ (M, C) per tap, transposed back
      outs = [lax.dot_general(g2, xs.reshape(m, cg), (((0,), (0,)), ((), ())),
                              preferred_element_type=acc).T for xs in slices]
    else:
      outs = [lax.dot_general(xs.reshape(m, cg), g2, (((0,), (0,)), ((), ())),
                              preferred_element_type=acc) for xs in slices]
    return jnp.stack(outs).reshape(kernel_shape).astype(dtype)
  g3 = dy.reshape(m, groups, og)
  outs = []
  for xs in slices:
    x3 = xs.reshape(m, groups, cg)
    if cg == 1 and method != "taps_dot":   # depthwise: a fused multiply-reduce, no matrix product
      r = jnp.sum(x3.astype(acc) * g3.astype(acc), axis=0)[None]           # (1, G, Og)
    else:         # grouped: batched product over groups -> (G, Cg, Og) -> (Cg, G, Og)
      r = lax.dot_general(x3, g3, (((0,), (0,)), ((1,), (1,))),
                          preferred_element_type=acc).transpose(1, 0, 2)
    outs.append(r.reshape(cg, o))
  return jnp.stack(outs).reshape(kernel_shape).astype(dtype)


@functools.lru_cache(maxsize=None)
def _make_conv(strides, pads, rdil, groups, precision, preferred_element_type):
  """A custom-vjp conv (lhs, rhs) -> out for one static configuration."""
  nd = len(strides)
  dn = lax.ConvDimensionNumbers(*_channel_last_specs(nd))

  def xla(lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, strides, pads, None, rdil, dn, groups, 1,
                                    precision, preferred_element_type)

  @jax.custom_vjp
  def conv(lhs, rhs):
    return xla(lhs, rhs)

  def fwd(lhs, rhs):
    return xla(lhs, rhs), (lhs, rhs)

  def bwd(res, dy):
    lhs, rhs = res
    _, vjp_lhs = jax.vjp(lambda x: xla(x, rhs), lhs)     # XLA's input gradient
    (dx,) = vjp_lhs(dy)
    dw = weight_grad(lhs, dy, rhs.shape, strides, pads, rdil, groups, dtype=rhs.dtype)
    return dx, dw

  conv.defvjp(fwd, bwd)
  return conv


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None):
  """``lax.conv_general_dilated`` (same signature and value) with the tap-product dW.

  Falls back to ``lax.conv_general_dilated`` unchanged for unsupported arguments or
  when XLA's convolution is forced (``XNN_CPU_CONV=xla`` / ``use_xla_conv()``).
  """
  cfg = None if _xla_forced() else _config(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count)
  if cfg is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  strides, pads, rdil, groups = cfg
  if WGRAD_METHOD == "auto" and not _custom_wins(strides, groups, rhs.shape[:-2], lhs.shape[-1]):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  if isinstance(precision, list):
    precision = tuple(precision)
  pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
  return _make_conv(strides, pads, rdil, groups, precision, pet)(lhs, rhs)
