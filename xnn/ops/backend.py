"""Which convolution the model zoo runs: one process-wide setting, chosen by the config.

Every convolution of the zoo is ``backend_conv`` (``xnn.models.layers.Conv``). On
GPUs and TPUs it is ``lax.conv_general_dilated``: their compilers keep their own
kernels. On the CPU it follows the setting ``cpu``:

* ``auto``   oneDNN's kernels (``xnn.ops.onednn``) where they can be built, else ``xnn``;
* ``onednn`` oneDNN's kernels, an error saying why where they cannot be built;
* ``xnn``    XLA's forward convolution with the pure-JAX gradients of ``xnn.ops.conv``;
* ``xla``    XLA's own convolution and gradients -- the one that supports forward-mode
             differentiation (``jax.jvp``) of a zoo model on the CPU, and the one
             XLA:CPU runs slowly inside loop bodies (jax-ml/jax#12868).

1-D and 3-D layers (oneDNN's path is 2-D) and geometries the CPU formulations do not
cover (``xnn.ops.geometry.normalize``) use ``xnn`` or XLA's. ``wgrad`` picks the
weight-gradient formulation of ``xnn`` (``xnn.ops.conv.WGRAD_METHODS``).

The setting is read when a function is traced. ``xnn train`` applies
``config.train.cpu_conv`` for the duration of a run (``conv_setting``) and records
it, with what it resolved to, in ``config.json`` and the ``compile`` record. Outside
a run the default is ``$XNN_CPU_CONV`` (else ``auto``). The cost analysis traces
with ``xla``: it counts the mathematics, not the CPU formulation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
from jax import lax

from xnn.ops import conv as xconv
from xnn.ops import onednn
from xnn.ops.geometry import normalize

__all__ = ["CPU_CONV_MODES", "ConvSetting", "default_cpu_conv", "current", "conv_setting", "resolved_cpu_conv",
           "conv_general_dilated", "conv_for_backend", "backend_conv"]

CPU_CONV_MODES = ("auto", "onednn", "xnn", "xla")
ENV = "XNN_CPU_CONV"


@dataclasses.dataclass(frozen=True)
class ConvSetting:
  cpu: str = "auto"           # one of CPU_CONV_MODES
  wgrad: str = "auto"         # one of xnn.ops.conv.WGRAD_METHODS (the "xnn" formulation)

  def __post_init__(self):
    if self.cpu not in CPU_CONV_MODES:
      raise ValueError(f"CPU convolution {self.cpu!r}: expected one of {', '.join(CPU_CONV_MODES)}")
    if self.wgrad not in xconv.WGRAD_METHODS:
      raise ValueError(f"weight-gradient method {self.wgrad!r}: expected one of {', '.join(xconv.WGRAD_METHODS)}")


_configured: list[ConvSetting] = []      # the innermost conv_setting() in effect, if any


def default_cpu_conv() -> str:
  """``$XNN_CPU_CONV`` (validated), else ``auto``: the default of ``train.cpu_conv``."""
  mode = os.environ.get(ENV, "").strip().lower() or "auto"
  if mode not in CPU_CONV_MODES:
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(CPU_CONV_MODES)}")
  return mode


def current() -> ConvSetting:
  """The setting in effect: the innermost ``conv_setting``, else the environment's default."""
  return _configured[-1] if _configured else ConvSetting(default_cpu_conv())


@contextlib.contextmanager
def conv_setting(cpu: str | None = None, wgrad: str | None = None):
  """Within the block, functions traced use this convolution (unset fields: as outside)."""
  outer = current()
  _configured.append(ConvSetting(cpu or outer.cpu, wgrad or outer.wgrad))
  try:
    yield _configured[-1]
  finally:
    _configured.pop()


def resolved_cpu_conv(setting: ConvSetting | None = None) -> str:
  """What the zoo's 2-D convolutions run as on this machine's CPU: onednn, xnn or xla."""
  mode = (setting or current()).cpu
  if mode == "auto":
    return "onednn" if onednn.available() else "xnn"
  if mode == "onednn" and not onednn.available():
    raise RuntimeError(f"{ENV}=onednn but oneDNN convolutions are unavailable: {onednn.unavailable_reason()}")
  return mode


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated`` (same signature and value) as the CPU setting asks.

  oneDNN's kernels or ``xnn.ops.conv``'s gradients where the geometry allows;
  ``lax.conv_general_dilated`` unchanged otherwise and when the setting is ``xla``.
  """
  setting = current()
  geometry = None if setting.cpu == "xla" else normalize(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count)
  if geometry is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  strides, pads, rdil, groups = geometry
  if (len(strides) == 2 and setting.cpu in ("auto", "onednn")
      and onednn.supports(lhs, rhs, strides, pads, rdil, preferred_element_type)
      and resolved_cpu_conv(setting) == "onednn"):
    return onednn.conv2d(lhs, rhs, strides, pads, rdil, groups)
  return xconv.conv_with_xnn_grads(lhs, rhs, geometry, precision, preferred_element_type, setting.wgrad)


def conv_for_backend(backend: str | None = None):
  """``conv_general_dilated`` on the CPU (unless the setting is ``xla``), ``lax``'s elsewhere."""
  backend = backend or jax.default_backend()
  if backend == "cpu" and current().cpu != "xla":
    return conv_general_dilated
  return lax.conv_general_dilated


def backend_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                 precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated``'s signature; the convolution for the default backend, chosen
  when traced. Pass it as ``flax.linen.Conv(conv_general_dilated=backend_conv)``."""
  fn = conv_for_backend()
  return fn(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
