"""CIFAR-10 and CIFAR-100 from the original binary archives (Krizhevsky 2009).

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): each
record is the label byte(s) followed by 3,072 bytes of a 32x32 image stored
channel-major (1,024 red, 1,024 green, 1,024 blue, rows top to bottom).
CIFAR-10 has one label byte; CIFAR-100 a coarse then a fine label byte.
"""

from __future__ import annotations

import tarfile
import zlib

import numpy as np
import tensorflow_datasets as tfds

from xnn.data.builders.common import (MANUAL_DOWNLOAD_INSTRUCTIONS, DataError, check_archives, check_label_range, fetch,
                                      image_features)

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def parse_records(data: bytes, label_bytes: int, label_index: int,
                  where: str = "CIFAR batch") -> tuple[np.ndarray, np.ndarray]:
  """Images (N, 32, 32, 3) uint8 and labels from a CIFAR binary batch file."""
  rec = label_bytes + 3072
  if len(data) % rec:
    raise DataError(f"{where} of {len(data)} bytes is not a multiple of the {rec}-byte record")
  arr = np.frombuffer(data, np.uint8).reshape(-1, rec)
  labels = arr[:, label_index].astype(np.int64)
  images = arr[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


def _read_members(archive: str, suffixes: list[str], url: str) -> dict[str, bytes]:
  """The contents of the archive's members ending in ``suffixes``; a damaged archive is a :class:`DataError`."""
  out = {}
  try:
    with tarfile.open(archive, "r:*") as tar:
      for m in tar.getmembers():
        for s in suffixes:
          if m.isfile() and m.name.endswith("/" + s):
            out[s] = tar.extractfile(m).read()
  except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
    why = " ".join(str(e).split())      # tarfile lists every compression it tried, one per line
    raise DataError(f"{archive} is not a readable tar.gz archive ({type(e).__name__}: {why}); expected the "
                    f"original {url.rsplit('/', 1)[-1]} from {url}: delete it and download it again") from None
  missing = [s for s in suffixes if s not in out]
  if missing:
    raise DataError(f"{archive} lacks {missing}; expected the CIFAR *binary* archive {url}")
  return out


class _CifarBase(tfds.core.GeneratorBasedBuilder):
  """A CIFAR binary archive (``ARCHIVES``: file name -> URL) as a TFDS dataset."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  _url: str
  _train_files: list[str]
  _test_files: list[str]
  _label_bytes: int
  _label_index: int
  _num_classes: int
  _names: list[str] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=image_features((32, 32, 3), self._num_classes, self._names),
        supervised_keys=("image", "label"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation="Krizhevsky, A. (2009). Learning Multiple Layers of Features from Tiny Images.")

  def _split_generators(self, dl_manager):
    check_archives(self, dl_manager)
    archive = fetch(dl_manager, self._url)
    return {"train": self._generate_examples(archive, self._train_files),
            "test": self._generate_examples(archive, self._test_files)}

  def _generate_examples(self, archive: str, files: list[str]):
    members = _read_members(archive, files, self._url)
    for name in files:
      where = f"{archive}: {name}"
      images, labels = parse_records(members[name], self._label_bytes, self._label_index, where)
      check_label_range(labels, self._num_classes, where)
      for i, (img, lab) in enumerate(zip(images, labels)):
        yield f"{name}_{i:05d}", {"image": img, "label": int(lab)}


class XnnCifar10(_CifarBase):
  """CIFAR-10: 50,000 train and 10,000 test 32x32x3 images, 10 classes."""
  _url = _CIFAR10_URL
  ARCHIVES = {"cifar-10-binary.tar.gz": _CIFAR10_URL}
  _train_files = [f"data_batch_{i}.bin" for i in range(1, 6)]
  _test_files = ["test_batch.bin"]
  _label_bytes, _label_index, _num_classes, _names = 1, 0, 10, CIFAR10_NAMES


class XnnCifar100(_CifarBase):
  """CIFAR-100 (fine labels): 50,000 train and 10,000 test images, 100 classes."""
  _url = _CIFAR100_URL
  ARCHIVES = {"cifar-100-binary.tar.gz": _CIFAR100_URL}
  _train_files = ["train.bin"]
  _test_files = ["test.bin"]
  _label_bytes, _label_index, _num_classes = 2, 1, 100
