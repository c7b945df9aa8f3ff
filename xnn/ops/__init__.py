"""Numerical kernels that replace XLA defaults where those are slow on a backend."""

from xnn.ops.conv import (  # noqa: F401
    backend_conv,
    conv_general_dilated,
    conv_general_dilated_for_backend,
    cpu_conv_mode,
    use_cpu_conv,
    use_xla_conv,
)
