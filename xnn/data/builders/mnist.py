"""MNIST and Fashion-MNIST from the original IDX files (LeCun et al. 1998; Xiao et al. 2017).

IDX format (http://yann.lecun.com/exdb/mnist/): big-endian magic number
(0x00000803 for images, 0x00000801 for labels), the dimension sizes as
big-endian int32, then the uint8 data; the four files are gzipped.
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import tensorflow_datasets as tfds

from xnn.data.builders.common import (MANUAL_DOWNLOAD_INSTRUCTIONS, DataError, check_archives, check_label_range, fetch,
                                      image_features)

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_NAMES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "ankle boot"]


def read_idx(path: str) -> np.ndarray:
  """Reads a (gzipped) IDX file into a uint8 array of its stated shape."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path} is not a readable gzip file ({type(e).__name__}: {e}); expected a gzipped "
                    "IDX file: delete it and download it again") from None
  magic = int.from_bytes(data[:4], "big")
  if magic >> 8 != 0x08:
    raise DataError(f"{path}: magic {magic:#010x} is not an unsigned-byte IDX file (0x000008NN)")
  ndim = magic & 0xFF
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise DataError(f"{path}: {body.size} data bytes, header says {dims}")
  return body.reshape(dims)


class _IdxBase(tfds.core.GeneratorBasedBuilder):
  """Four gzipped IDX files (``ARCHIVES``: file name -> URL) as a TFDS dataset."""
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  _url: str
  _names: list[str] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=image_features((28, 28, 1), 10, self._names),
                                 supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    check_archives(self, dl_manager)
    return {split: self._generate_examples(fetch(dl_manager, self._url + img),
                                           fetch(dl_manager, self._url + lab))
            for split, (img, lab) in _FILES.items()}

  def _generate_examples(self, images_path: str, labels_path: str):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
      raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    check_label_range(labels, 10, labels_path)
    for i in range(len(images)):
      yield i, {"image": images[i][..., None], "label": int(labels[i])}


class XnnMnist(_IdxBase):
  """MNIST: 60,000 train and 10,000 test 28x28 grey digits."""
  _url = _MNIST_URL
  ARCHIVES = {f: _MNIST_URL + f for pair in _FILES.values() for f in pair}


class XnnFashionMnist(_IdxBase):
  """Fashion-MNIST: 60,000 train and 10,000 test 28x28 grey clothing images."""
  _url = _FASHION_URL
  _names = FASHION_NAMES
  ARCHIVES = {f: _FASHION_URL + f for pair in _FILES.values() for f in pair}
