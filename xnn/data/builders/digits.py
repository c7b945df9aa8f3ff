"""The UCI optical handwritten digits (the data of `sklearn.datasets.load_digits`).

1,797 8x8 grey images with integer intensities 0..16, bundled with xnn
(`xnn/data/assets/optdigits.csv.gz`, CC BY 4.0, see its README), so this
dataset needs no network. Fixed split: index % 5 == 0 -> test (360), the rest
-> train (1,437).
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

from xnn.data.builders.common import image_features

NUM_EXAMPLES = 1797
PIXEL_MAX = 16


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 images (uint8, (N, 8, 8, 1), values 0..16) and labels (int64)."""
  ref = importlib.resources.files("xnn.data") / "assets" / "optdigits.csv.gz"
  with ref.open("rb") as f, gzip.open(f, "rt") as text:
    table = np.loadtxt(text, delimiter=",", dtype=np.int64)
  if table.shape != (NUM_EXAMPLES, 65):
    raise ValueError(f"bundled digits file has shape {table.shape}, expected ({NUM_EXAMPLES}, 65)")
  images = table[:, :64].reshape(-1, 8, 8, 1).astype(np.uint8)
  return images, table[:, 64]


class XnnDigits(tfds.core.GeneratorBasedBuilder):
  """UCI optdigits test part, 8x8x1, 10 classes, fixed 1,437/360 split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=image_features((8, 8, 1), 10),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation="Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten Digits. "
                 "UCI Machine Learning Repository. https://doi.org/10.24432/C50P49",
        license="CC BY 4.0",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(test=False), "test": self._generate_examples(test=True)}

  def _generate_examples(self, test: bool):
    images, labels = load_arrays()
    for i in range(NUM_EXAMPLES):
      if (i % 5 == 0) == test:
        yield i, {"image": images[i], "label": int(labels[i])}
