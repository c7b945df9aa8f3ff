"""Shared pieces of the TF-free builders."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds


def image_features(shape: tuple[int, int, int], num_classes: int,
                   names: list[str] | None = None) -> tfds.features.FeaturesDict:
  """uint8 image tensor + class label, encoded without TensorFlow."""
  label = tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(num_classes=num_classes)
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
      "label": label,
  })


def fetch(dl_manager: tfds.download.DownloadManager, url: str) -> str:
  """The archive at `url`: from the manual dir when it is there, else downloaded.

  Machines without internet put the original file (same name as the URL's last
  part) in `manual_dir` (`--config.data.manual_dir`, or TFDS's default
  `<data_dir>/downloads/manual`).
  """
  fname = url.rsplit("/", 1)[-1]
  try:
    manual = dl_manager.manual_dir
  except (AssertionError, ValueError, OSError):   # no manual dir configured or present
    manual = None
  if manual is not None:
    path = os.path.join(os.fspath(manual), fname)
    if os.path.exists(path):
      return path
  return os.fspath(dl_manager.download(url))


MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Without network, put the dataset's original files (named as in its download URLs) in "
    "the manual dir: --config.data.manual_dir=DIR (or <data_dir>/downloads/manual).")
