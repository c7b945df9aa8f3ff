"""Numerical kernels that replace XLA's defaults where those are slow on a backend.

``geometry``: the static shape of a convolution; ``conv``: pure-JAX gradient
formulations; ``onednn``: oneDNN's CPU kernels as XLA FFI calls; ``backend``: which of
them the model zoo runs (one setting, ``train.cpu_conv``).
"""

from xnn.ops.backend import (
    CPU_CONV_MODES,
    ConvSetting,
    backend_conv,
    conv_for_backend,
    conv_general_dilated,
    conv_setting,
    current,
    default_cpu_conv,
    resolved_cpu_conv,
)

__all__ = ["CPU_CONV_MODES", "ConvSetting", "backend_conv", "conv_for_backend", "conv_general_dilated",
           "conv_setting", "current", "default_cpu_conv", "resolved_cpu_conv"]
