"""A drop-in ``lax.conv_general_dilated`` whose gradients XLA:CPU runs fast, in loops too.

JAX differentiates a convolution into two more: the weight gradient, a convolution
whose "kernel" is the whole output-gradient image and whose contraction runs over
the batch (dimension labels ``f01b_i01o->01bf``), and the input gradient, a
convolution of the stride-dilated output gradient with the flipped kernel read with
its input and output channels exchanged (kernel labels ``01oi``).  At the top level
of a program XLA:CPU rewrites both into the canonical ``b01f_01io->b01f`` form
(transposing operands) and runs them with its fast convolution kernel.  Inside a
loop body (``lax.scan``/``fori_loop``, e.g. several training steps per dispatch) it
does not: they stay non-canonical and are emitted as naive loops (jax-ml/jax#12868):
the weight gradients measured 64-151x slower (ResNet-20's 3x3 32x32x16 at batch
128: 814 ms against 13 ms, jax 0.10.2, 2 cores).  Here the forward pass stays XLA's own and
both gradients are written out explicitly:

* the input gradient (``input_grad``): the same convolution JAX's transpose rule
  emits, with the kernel flipped and transposed to (*k, O/G, C) by explicit ops, so
  that the convolution itself is canonical;
* the weight gradient (``weight_grad``)

      dW[a, b, c, o] = sum_{n, i, j} xpad[n, i*s + a*d, j*s + b*d, c] * dY[n, i, j, o]

  in one of two forms.  ``"conv"``: the canonical convolution XLA:CPU itself would
  use at the top level: the input transposed to (C, H, W, N) convolved with dY
  transposed to (Ho, Wo, N, O) as the kernel, window stride d and kernel dilation
  s, and the (C, kh, kw, O) result transposed back; bit-identical to XLA's gradient
  at the top level, and just as fast inside loops.  ``"taps"``: one matrix product
  per kernel tap (a, b): the shifted, strided slice of the padded input, reshaped to
  (N*Ho*Wo, C), transposed against dY reshaped to (N*Ho*Wo, O) (``"taps_t"``: the
  transposed product; ``"im2col"``: all taps in one product); exact up to
  summation order.  Measured on 2 CPU cores (benchmarks/conv_grad.py) the tap
  products beat XLA's top-level weight gradient for 1x1 (6-8x), grouped (7-80x),
  depthwise (~1.3x) and strided 3x3 layers (~1.5x).  ``WGRAD_METHOD = "auto"``
  (default) takes ``"taps"`` for those layers and ``"conv"`` for the rest (dense
  stride-1 kxk layers, 3-channel stems).

Supported by the fast path: channel-last layouts (NWC/WIO, NHWC/HWIO, NDHWC/DHWIO,
i.e. Flax's), any window strides, explicit (possibly asymmetric, non-negative)
padding or 'SAME'/'VALID', rhs (kernel) dilation and ``feature_group_count``
(grouped: always ``"taps"``; depthwise layers -- one input channel per group --
are computed whole by ``depthwise_taps``, a sum of per-tap products that JAX
differentiates itself).  Everything else (lhs dilation,
``batch_group_count`` > 1, other layouts, negative padding) falls back to plain
``lax.conv_general_dilated`` and therefore to XLA's own gradients.

On the CPU, 2-D convolutions (f32 or bf16) go first to oneDNN's kernels
(``xnn.ops.onednn``: forward, input and weight gradient as XLA FFI custom calls,
2-3x faster than XLA:CPU's own and on par with PyTorch's, benchmarks/RESULTS.md);
the formulations above serve 1-D/3-D layers and machines where oneDNN cannot be
built.  ``XNN_CPU_CONV`` chooses: ``auto`` (default: oneDNN when available),
``onednn`` (an error says why when it is not), ``xnn`` (the pure-JAX formulations
above) or ``xla``.

``backend_conv`` picks at trace time: this function when the default backend is
the CPU, ``lax.conv_general_dilated`` on GPU/TPU (their compilers keep their own
kernels).  ``XNN_CPU_CONV=xla`` (or entering ``use_xla_conv()``) forces XLA's
convolution everywhere.  Every convolution of the model zoo goes through
``backend_conv`` (``xnn.models.layers.Conv``).

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

__all__ = ["conv_general_dilated", "conv_general_dilated_for_backend", "backend_conv",
           "use_xla_conv", "use_cpu_conv", "cpu_conv_mode", "weight_grad", "input_grad", "depthwise_taps", "fast_path_supported"]

_ENV = "XNN_CPU_CONV"
_state = threading.local()

# Weight-gradient formulation: "auto" (tap products where they measured faster than
# XLA's gradient, the canonical convolution elsewhere -- see _auto_method), or for every
# layer: "conv" (the canonical convolution; grouped layers use "taps"), "taps" (one
# (M, C)^T (M, O) product per kernel tap), "taps_t" ((O, M) (M, C) per tap) or
# "im2col" (one product over all taps at once).
WGRAD_METHOD = "auto"


_MODES = ("auto", "onednn", "xnn", "xla")


def cpu_conv_mode() -> str:
  """"auto" (default), "onednn", "xnn" or "xla": ``use_cpu_conv``'s/``use_xla_conv``'s, else ``XNN_CPU_CONV``."""
  if getattr(_state, "mode", None):
    return _state.mode
  mode = os.environ.get(_ENV, "").strip().lower() or "auto"
  if mode not in _MODES:
    raise ValueError(f"{_ENV}={os.environ[_ENV]!r}: expected one of {', '.join(_MODES)}")
  return mode


def _xla_forced() -> bool:
  """True when XLA's own convolution is requested (env var or ``use_xla_conv``)."""
  return cpu_conv_mode() == "xla"


def _use_onednn(lhs, rhs, strides, pads, rdil, preferred_element_type) -> bool:
  """Whether this 2-D convolution goes to oneDNN (mode "auto" when available, or "onednn")."""
  mode = cpu_conv_mode()
  if mode not in ("auto", "onednn") or jax.default_backend() != "cpu":
    return False
  from xnn.ops import onednn
  if not onednn.supports(lhs, rhs, strides, pads, rdil, preferred_element_type):
    return False
  if mode == "onednn" and not onednn.available():
    raise RuntimeError(f"{_ENV}=onednn but oneDNN convolutions are unavailable: "
                       f"{onednn.unavailable_reason()}")
  return onednn.available()


@contextlib.contextmanager
def _override(mode: str | None):
  """Sets (None: clears) this thread's trace-time override of ``XNN_CPU_CONV``."""
  old = getattr(_state, "mode", None)
  _state.mode = mode
  try:
    yield
  finally:
    _state.mode = old


def use_cpu_conv(mode: str):
  """Context manager: inside it, the CPU convolution is ``mode`` (as ``XNN_CPU_CONV``).

  Acts at trace time, like ``use_xla_conv``.
  """
  if mode not in _MODES:
    raise ValueError(f"use_cpu_conv({mode!r}): expected one of {', '.join(_MODES)}")
  return _override(mode)


def use_xla_conv(enabled: bool = True):
  """Context manager: inside it, ``conv_general_dilated`` is plain XLA (``enabled=False``: as configured).

  Acts at trace time: functions already traced and cached by ``jax.jit`` keep the
  convolution they were traced with.
  """
  return _override("xla" if enabled else None)


def conv_general_dilated_for_backend(backend: str | None = None):
  """``conv_general_dilated`` on the CPU backend, ``lax.conv_general_dilated`` elsewhere.

  Also returns XLA's when ``XNN_CPU_CONV=xla`` is set.
  """
  backend = backend or jax.default_backend()
  if backend == "cpu" and not _xla_forced():
    return conv_general_dilated
  return lax.conv_general_dilated


def backend_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                 precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated``'s signature; the convolution for the default backend.

  Chooses when traced: ``conv_general_dilated`` (this module's gradients) if
  ``jax.default_backend()`` is the CPU and XLA's is not forced, else lax's.  Pass it
  as ``flax.linen.Conv(conv_general_dilated=backend_conv)``.
  """
  fn = conv_general_dilated_for_backend()
  return fn(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)


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


def output_spatial(in_sp, ksz, strides, pads, rdil) -> tuple[int, ...]:
  """Output spatial sizes of a convolution with explicit pads: (n + lo + hi - eff) // s + 1."""
  return tuple((n + lo + hi - (k - 1) * d - 1) // s + 1
               for n, k, s, (lo, hi), d in zip(in_sp, ksz, strides, pads, rdil))


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
  """Auto rule: the weight-gradient formulation that measured fastest for this layer kind.

  Measured with benchmarks/conv_grad.py --extra on 2 CPU cores (XLA:CPU, float32):
  tap products beat XLA's top-level gradient for grouped/depthwise (1.1-80x), 1x1
  (6-8x) and strided layers with >= 8 input channels (1.5x); for dense stride-1 kxk
  (k > 1) layers and 3-channel stems they are slower (0.35-0.8x), and those take the
  canonical convolution (XLA's own top-level formulation, which stays fast in loops).
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
  for n_in, (lo, hi), k, d, n_out, s in zip(lhs.shape[1:-1], pads, ksz, rdil, out_sp, strides):
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
  if method is None:
    method = (_auto_method(strides, groups, ksz, lhs.shape[-1]) if WGRAD_METHOD == "auto"
              else WGRAD_METHOD)
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
  for n_in, (lo, hi), k, d, n_out, s in zip(in_shape[1:-1], pads, ksz, rdil, dy.shape[1:-1], strides):
    eff = (k - 1) * d + 1
    before = eff - lo - 1
    pad_t.append((before, n_in + eff - 1 - ((n_out - 1) * s + 1) - before))
  common = jnp.promote_types(dy.dtype, w.dtype)
  dn = lax.ConvDimensionNumbers(*_channel_last_specs(nd))
  dx = lax.conv_general_dilated(dy.astype(common), w.astype(common), (1,) * nd, pad_t, tuple(strides),
                                tuple(rdil), dn, groups, 1, precision)
  return dx.astype(dtype or dy.dtype)


def depthwise_taps(lhs, rhs, strides, pads, rdil, out_dtype):
  """A depthwise convolution (groups = C, kernel (*k, 1, C*m)) as a sum over kernel taps.

  out[n, i, j, c*m + q] = sum_{a, b} xpad[n, i*s + a*d, j*s + b*d, c] * w[a, b, 0, c*m + q]:
  one shifted, strided slice times a per-channel weight per tap, accumulated in
  float32 (or wider).  XLA:CPU emits grouped convolutions as plain loops; this
  measured 15-35x faster forward and 5-24x faster forward + both gradients (3x3
  layers, 2 CPU cores; benchmarks/RESULTS.md),
  and its gradient is JAX's own (slices, pads, products: no convolution, fast in
  loop bodies too).
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
def _make_conv(strides, pads, rdil, groups, precision, preferred_element_type):
  """A custom-vjp conv (lhs, rhs) -> out for one static configuration.

  The weight-gradient formulation is chosen when the backward pass is traced
  (``WGRAD_METHOD``, per layer under "auto").
  """
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
    dx = input_grad(dy, rhs, lhs.shape, strides, pads, rdil, groups, dtype=lhs.dtype,
                    precision=precision)
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
  """``lax.conv_general_dilated`` (same signature and value) with xnn's gradients.

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
  if len(strides) == 2 and _use_onednn(lhs, rhs, strides, pads, rdil, preferred_element_type):
    from xnn.ops import onednn
    return onednn.conv2d(lhs, rhs, strides, pads, rdil, groups)
  if groups > 1 and rhs.shape[-2] == 1 and groups == lhs.shape[-1]:     # depthwise
    out_dtype = preferred_element_type or jnp.promote_types(lhs.dtype, rhs.dtype)
    return depthwise_taps(lhs, rhs, strides, pads, rdil, out_dtype)
  if isinstance(precision, list):
    precision = tuple(precision)
  pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
  return _make_conv(strides, pads, rdil, groups, precision, pet)(lhs, rhs)
