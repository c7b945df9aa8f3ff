"""Data: TF-free TFDS builders, the dataset registry and grain pipelines.

    >>> from xnn.data import from_arrays
    >>> ds = from_arrays(x_train, y_train, x_test, y_test)   # bring your own
"""

from xnn.data.datasets import DATASETS, ArraySource, Dataset, from_arrays, load_dataset, register_dataset
from xnn.data.errors import DataError

__all__ = ["DATASETS", "ArraySource", "DataError", "Dataset", "from_arrays", "load_dataset", "register_dataset"]
