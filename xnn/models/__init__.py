"""Model zoo. Importing this package registers every model.

    >>> import xnn.models
    >>> model = xnn.models.build("resnet20", num_classes=10)
"""

from xnn.models.registry import MODELS, ModelInfo, build, info, init_variables, names, register

# Families register themselves on import.
from xnn.models import serial as _serial  # noqa: F401
from xnn.models import residual as _residual  # noqa: F401
from xnn.models import resnet9 as _resnet9  # noqa: F401
from xnn.models import attention as _attention  # noqa: F401
from xnn.models import seq2seq as _seq2seq  # noqa: F401
from xnn.models import parallel as _parallel  # noqa: F401
from xnn.models import dense as _dense  # noqa: F401

__all__ = ["MODELS", "ModelInfo", "build", "info", "init_variables", "names", "register"]
