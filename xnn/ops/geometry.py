"""The static geometry of a channel-last convolution: what xnn's CPU convolutions accept.

``lax.conv_general_dilated`` takes many spellings of one convolution (string or
explicit padding, dimension-number strings or tuples, optional dilations).
``normalize`` reduces them to one: strides, explicit ``(lo, hi)`` pads, kernel
dilation and group count, for channel-last layouts (NWC/WIO, NHWC/HWIO,
NDHWC/DHWIO, i.e. Flax's) with non-negative padding, no input dilation and
``batch_group_count == 1`` -- or ``None``, meaning "leave it to XLA".
"""

from __future__ import annotations

from typing import NamedTuple

from jax import lax


class Geometry(NamedTuple):
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  dilation: tuple[int, ...]          # kernel (rhs) dilation
  groups: int


def channel_last_specs(nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """Normalised (lhs, rhs, out) dimension specs of channel-last layouts: NH..C, H..IO, NH..C."""
  sp = tuple(range(1, nd + 1))
  return ((0, nd + 1) + sp, (nd + 1, nd) + tuple(range(nd)), (0, nd + 1) + sp)


def output_spatial(in_sp, ksz, strides, pads, rdil) -> tuple[int, ...]:
  """Output spatial sizes with explicit pads: (n + lo + hi - (k - 1) d - 1) // s + 1."""
  return tuple((n + lo + hi - (k - 1) * d - 1) // s + 1
               for n, k, s, (lo, hi), d in zip(in_sp, ksz, strides, pads, rdil))


def _pads(lhs, ksz, strides, rdil, padding, nd):
  if isinstance(padding, str):
    eff = tuple((k - 1) * d + 1 for k, d in zip(ksz, rdil))
    return tuple(tuple(int(v) for v in p) for p in lax.padtype_to_pads(lhs.shape[1:nd + 1], eff, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def normalize(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, batch_group_count=1) -> Geometry | None:
  """The convolution's :class:`Geometry`, or None when xnn's CPU convolutions do not apply."""
  if lhs.ndim != rhs.ndim or lhs.ndim < 3 or batch_group_count != 1 or dimension_numbers is None:
    return None
  nd = lhs.ndim - 2
  try:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except Exception:  # noqa: BLE001 - lax raises its own error on the fallback path
    return None
  if (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)) != channel_last_specs(nd):
    return None
  if lhs_dilation is not None and any(int(d) != 1 for d in lhs_dilation):
    return None
  strides = tuple(int(s) for s in window_strides)
  rdil = tuple(int(d) for d in rhs_dilation) if rhs_dilation is not None else (1,) * nd
  if len(strides) != nd or len(rdil) != nd or min(strides + rdil) < 1:
    return None
  pads = _pads(lhs, rhs.shape[:nd], strides, rdil, padding, nd)
  if len(pads) != nd or any(v < 0 for p in pads for v in p):
    return None
  g = int(feature_group_count)
  cin, o = lhs.shape[-1], rhs.shape[-1]
  if g < 1 or cin % g or o % g or rhs.shape[-2] * g != cin:
    return None
  return Geometry(strides, pads, rdil, g)


def is_depthwise(lhs, rhs, groups: int) -> bool:
  """One input channel per group (kernel (*k, 1, C*m)): MobileNet's and Xception's layers."""
  return groups > 1 and rhs.shape[-2] == 1 and groups == lhs.shape[-1]
