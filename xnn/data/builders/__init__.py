"""TensorFlow-free TFDS builders (ArrayRecord output, NumPy features).

TFDS's stock builders for these datasets encode images as PNG through
TensorFlow. These builders parse the original archives with NumPy and store
`tfds.features.Tensor` uint8 images, so preparing and reading needs no
TensorFlow. Importing this package registers them with TFDS.
"""

from xnn.data.builders.cifar import XnnCifar10, XnnCifar100
from xnn.data.builders.digits import XnnDigits
from xnn.data.builders.image_folder import XnnImageFolder
from xnn.data.builders.mnist import XnnFashionMnist, XnnMnist

__all__ = ["XnnCifar10", "XnnCifar100", "XnnDigits", "XnnFashionMnist", "XnnImageFolder", "XnnMnist"]
