"""Numerical kernels that replace XLA defaults where those are slow on a backend."""

from xnn.ops.conv import (  # noqa: F401
    backend_conv,
    conv_general_dilated,
    conv_general_dilated_for_backend,
    use_xla_conv,
)
