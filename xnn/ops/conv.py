"""Convolutions with gradients XLA:CPU runs fast, in loop bodies too: the pure-JAX formulations.

JAX differentiates a convolution into two more: the weight gradient, a convolution
whose "kernel" is the whole output-gradient image and whose contraction runs over
the batch (dimension labels ``f01b_i01o->01bf``), and the input gradient, a
convolution of the stride-dilated output gradient with the flipped kernel read with
its input and output channels exchanged (kernel labels ``01oi``).  At the top level
of a program XLA:CPU rewrites both into the canonical ``b01f_01io->b01f`` form
(transposing operands) and runs them with its fast convolution kernel.  Inside a
loop body (``lax.scan``/``fori_loop``, e.g. several training steps per dispatch) it
does not: they stay non-canonical and are emitted as naive loops (jax-ml/jax#12868;
the slowdown is measured in benchmarks/RESULTS.md).  Here the forward pass stays
XLA's own and both gradients are written out explicitly:

* the input gradient (``input_grad``): the same convolution JAX's transpose rule
  emits, with the kernel flipped and transposed to (*k, O/G, C) by explicit ops, so
  that the convolution itself is canonical;
* the weight gradient (``weight_grad``)

      dW[a, b, c, o] = sum_{n, i, j} xpad[n, i*s + a*d, j*s + b*d, c] * dY[n, i, j, o]

  in one of several forms (``method``).  ``"conv"``: the canonical convolution
  XLA:CPU itself would use at the top level -- the input transposed to
  (C, H, W, N) convolved with dY transposed to (Ho, Wo, N, O) as the kernel, window
  stride d and kernel dilation s, and the (C, kh, kw, O) result transposed back;
  bit-identical to XLA's gradient at the top level, and just as fast inside loops.
  ``"taps"``: one matrix product per kernel tap (a, b): the shifted, strided slice
  of the padded input, reshaped to (N*Ho*Wo, C), transposed against dY reshaped to
  (N*Ho*Wo, O) (``"taps_t"``: the transposed product; ``"im2col"``: all taps in one
  product); exact up to summation order.  ``"auto"`` picks per layer the form that
  measured fastest (``_auto_method``).

Depthwise layers (one input channel per group) are computed whole by
``depthwise_taps``, a sum of per-tap products that JAX differentiates itself.

Which convolution a model actually runs (these, oneDNN's, or XLA's) is chosen in
``xnn.ops.backend``; this module only provides the formulations.

Differentiation: reverse mode of any order works (the backward pass is made of
differentiable JAX ops); forward mode (``jax.jvp``/``jacfwd``) raises JAX's
"can't apply forward-mode autodiff (jvp) to a custom_vjp function" error.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from xnn.ops.geometry import Geometry, channel_last_specs, output_spatial

__all__ = ["WGRAD_METHODS", "conv_with_xnn_grads", "weight_grad", "input_grad", "depthwise_taps"]

# Weight-gradient formulations (see the module docstring); "auto" chooses per layer.
WGRAD_METHODS = ("auto", "conv", "taps", "taps_t", "im2col")


def _tap_slices(xp, out_sp, ksz, strides, rdil):
  """Yield, for each kernel tap in row-major order, xp's shifted strided slice of size out_sp."""
  nd = len(ksz)
  for tap in itertools.product(*(range(k) for k in ksz)):
    start = (0,) + tuple(t * d for t, d in zip(tap, rdil)) + (0,)
    limit = ((xp.shape[0],) + tuple(t * d + (n - 1) * s + 1
                                    for t, d, n, s in zip(tap, rdil, out_sp, strides))
             + (xp.shape[-1],))
    yield lax.slice(xp, start, limit, (1,) + strides + (1,)) if nd else xp




def _auto_method(strides, groups, ksz, cin) -> str:
  """The weight-gradient formulation that measured fastest for this kind of layer.

  Tap products for grouped, depthwise and 1x1 layers and for strided layers with at
  least 8 input channels; the canonical convolution (XLA's own top-level
  formulation, which stays fast in loops) for dense stride-1 kxk layers and
  3-channel stems (benchmarks/conv_grad.py --extra; benchmarks/RESULTS.md).
  """
  if groups > 1 or int(np.prod(ksz)) == 1:
    return "taps"
  return "taps" if max(strides) > 1 and cin >= 8 else "conv"




def _weight_grad_conv(lhs, dy, kernel_shape, strides, pads, rdil, acc):
  """dW (groups 1) as the canonical convolution: (C, *sp, N) * (*out_sp, N, O) -> (C, *k, O).

  Output position a, window position i read input a*d + i*s: window stride d, kernel
  dilation s.  The high padding is trimmed (or the input cut) so that exactly k
  output positions are computed.
  """
  nd = lhs.ndim - 2
  ksz = kernel_shape[:nd]
  out_sp = dy.shape[1:-1]
  cut, pad2 = [], []
  for n_in, (lo, _hi), k, d, n_out, s in zip(lhs.shape[1:-1], pads, ksz, rdil, out_sp, strides):
    extent = (k - 1) * d + (n_out - 1) * s + 1       # padded input rows the k outputs read
    hi2 = extent - n_in - lo
    cut.append(n_in + min(hi2, 0))
    pad2.append((lo, max(hi2, 0)))
  common = jnp.promote_types(lhs.dtype, dy.dtype)     # (conv operands share one dtype)
  x = lhs[(slice(None),) + tuple(slice(0, c) for c in cut)].astype(common)
  dy = dy.astype(common)
  x = jnp.moveaxis(x, (0, nd + 1), (nd + 1, 0))        # (C, *sp, N): batch C, features N
  g = jnp.moveaxis(dy, 0, nd)                          # (*out_sp, N, O): kernel, in N, out O
  sp = tuple(range(1, nd + 1))
  dn = lax.ConvDimensionNumbers((0, nd + 1) + sp, (nd + 1, nd) + tuple(range(nd)), (0, nd + 1) + sp)
  r = lax.conv_general_dilated(x, g, tuple(rdil), pad2, None, tuple(strides), dn,
                               preferred_element_type=acc)   # (C, *k, O)
  return jnp.moveaxis(r, 0, nd)




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
  if method in (None, "auto"):
    method = _auto_method(strides, groups, ksz, lhs.shape[-1])
  if method == "conv" and groups == 1:
    return _weight_grad_conv(lhs, dy, kernel_shape, strides, pads, rdil, acc).astype(dtype)
  xp = jnp.pad(lhs, ((0, 0),) + tuple(pads) + ((0, 0),)) if any(v for p in pads for v in p) else lhs
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




def input_grad(dy, rhs, in_shape, strides, pads, rdil, groups, dtype=None, precision=None):
  """dX of a channel-last convolution, as a convolution in XLA:CPU's canonical form.

  dX = conv(dY dilated by the strides, the kernel flipped in space with its input and
  output channels exchanged (per group)), padded so that every input position is
  covered -- the transpose JAX's own rule emits, except that the kernel is
  transposed explicitly to (*k, O/G, C) instead of being read with exchanged
  dimension labels, which XLA:CPU runs slowly inside loop bodies.
  """
  nd = dy.ndim - 2
  ksz = rhs.shape[:nd]
  cg, o = rhs.shape[-2], rhs.shape[-1]
  og = o // groups
  w = lax.rev(rhs, tuple(range(nd)))
  w = w.reshape(*ksz, cg, groups, og)
  w = w.transpose(*range(nd), nd + 2, nd + 1, nd).reshape(*ksz, og, groups * cg)   # (*k, O/G, C)
  pad_t = []
  for n_in, (lo, _hi), k, d, n_out, s in zip(in_shape[1:-1], pads, ksz, rdil, dy.shape[1:-1], strides):
    eff = (k - 1) * d + 1
    before = eff - lo - 1
    pad_t.append((before, n_in + eff - 1 - ((n_out - 1) * s + 1) - before))
  common = jnp.promote_types(dy.dtype, w.dtype)
  dn = lax.ConvDimensionNumbers(*channel_last_specs(nd))
  dx = lax.conv_general_dilated(dy.astype(common), w.astype(common), (1,) * nd, pad_t, tuple(strides),
                                tuple(rdil), dn, groups, 1, precision)
  return dx.astype(dtype or dy.dtype)




def depthwise_taps(lhs, rhs, strides, pads, rdil, out_dtype):
  """A depthwise convolution (groups = C, kernel (*k, 1, C*m)) as a sum over kernel taps.

  out[n, i, j, c*m + q] = sum_{a, b} xpad[n, i*s + a*d, j*s + b*d, c] * w[a, b, 0, c*m + q]:
  one shifted, strided slice times a per-channel weight per tap, accumulated in
  float32 (or wider).  XLA:CPU emits grouped convolutions as plain loops; this is
  faster forward and backward (benchmarks/RESULTS.md), and its gradient is JAX's
  own (slices, pads, products: no convolution, fast in loop bodies too).
  """
  nd = lhs.ndim - 2
  ksz = rhs.shape[:nd]
  mult = rhs.shape[-1] // lhs.shape[-1]
  acc = jnp.promote_types(jnp.promote_types(lhs.dtype, rhs.dtype), jnp.float32)
  x = lhs.astype(acc)
  if mult > 1:
    x = jnp.repeat(x, mult, axis=-1)      # output channel c*m + q reads input channel c
  xp = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),)) if any(v for p in pads for v in p) else x
  out_sp = output_spatial(lhs.shape[1:-1], ksz, strides, pads, rdil)
  w = rhs.astype(acc).reshape(-1, rhs.shape[-1])          # (taps, C*m)
  out = None
  for t, xs in enumerate(_tap_slices(xp, out_sp, ksz, strides, rdil)):
    term = xs * w[t]
    out = term if out is None else out + term
  return out.astype(out_dtype)




@functools.lru_cache(maxsize=None)
def _make_conv(strides, pads, rdil, groups, precision, preferred_element_type, wgrad):
  """A custom-vjp conv (lhs, rhs) -> out for one static configuration and weight-gradient method."""
  nd = len(strides)
  dn = lax.ConvDimensionNumbers(*channel_last_specs(nd))

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
    dx = input_grad(dy, rhs, lhs.shape, strides, pads, rdil, groups, dtype=lhs.dtype,
                    precision=precision)
    dw = weight_grad(lhs, dy, rhs.shape, strides, pads, rdil, groups, dtype=rhs.dtype, method=wgrad)
    return dx, dw

  conv.defvjp(fwd, bwd)
  return conv


def conv_with_xnn_grads(lhs, rhs, geometry: Geometry, precision=None, preferred_element_type=None,
                        wgrad: str = "auto"):
  """XLA's forward convolution with this module's gradients (depthwise: ``depthwise_taps``).

  ``geometry`` comes from ``xnn.ops.geometry.normalize``; ``wgrad`` is one of
  ``WGRAD_METHODS``.
  """
  strides, pads, rdil, groups = geometry
  if groups > 1 and rhs.shape[-2] == 1 and groups == lhs.shape[-1]:     # depthwise
    out_dtype = preferred_element_type or jnp.promote_types(lhs.dtype, rhs.dtype)
    return depthwise_taps(lhs, rhs, strides, pads, rdil, out_dtype)
  if isinstance(precision, list):
    precision = tuple(precision)
  pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
  return _make_conv(strides, pads, rdil, groups, precision, pet, None if wgrad == "auto" else wgrad)(lhs, rhs)
