"""A folder of images with one sub-folder per class, TFDS ImageFolder layout.

    root/train/<class_name>/*.png|jpg|...
    root/test/<class_name>/*.png|jpg|...

Classes are the sorted sub-folder names of the train split. Images are decoded
with Pillow (no TensorFlow), converted to RGB (or L with `channels=1`) and
resized to `image_size` when given (else they must all share one size).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from xnn.data.builders.common import image_features

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")


def scan(root: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
  """Class names and, per split, the (path, label) pairs under `root`."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  splits = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if "train" not in splits:
    raise ValueError(f"image folder {root!r} needs a 'train' sub-folder (found {splits})")
  classes = sorted(d for d in os.listdir(os.path.join(root, "train"))
                   if os.path.isdir(os.path.join(root, "train", d)))
  if not classes:
    raise ValueError(f"{root}/train has no class sub-folders")
  files: dict[str, list[tuple[str, int]]] = {}
  for split in splits:
    pairs = []
    for label, cls in enumerate(classes):
      cdir = os.path.join(root, split, cls)
      if os.path.isdir(cdir):
        pairs += [(os.path.join(cdir, f), label) for f in sorted(os.listdir(cdir))
                  if f.lower().endswith(IMAGE_SUFFIXES)]
    files[split] = pairs
  return classes, files


def load_image(path: str, channels: int, size: tuple[int, int] | None) -> np.ndarray:
  with Image.open(path) as im:
    im = im.convert("L" if channels == 1 else "RGB")
    if size is not None and im.size != (size[1], size[0]):
      im = im.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(im, np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


class XnnImageFolderConfig(tfds.core.BuilderConfig):
  def __init__(self, *, root: str, image_size: tuple[int, int] | None, channels: int, **kw):
    super().__init__(**kw)
    self.root, self.image_size, self.channels = root, image_size, channels


class XnnImageFolder(tfds.core.GeneratorBasedBuilder):
  """Images in class sub-folders (train/ and optionally test/)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: list = []

  @classmethod
  def for_folder(cls, root: str, image_size: tuple[int, int] | None = None, channels: int = 3,
                 **kw) -> "XnnImageFolder":
    root = os.path.abspath(root)
    tag = "".join(c if c.isalnum() else "_" for c in root.strip("/"))[-80:]
    size_tag = "native" if image_size is None else f"{image_size[0]}x{image_size[1]}"
    cfg = XnnImageFolderConfig(name=f"{tag}_{size_tag}_c{channels}", root=root,
                               image_size=image_size, channels=channels)
    return cls(config=cfg, **kw)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    classes, files = scan(cfg.root)
    if cfg.image_size is not None:
      h, w = cfg.image_size
    else:
      first = load_image(files["train"][0][0], cfg.channels, None)
      h, w = first.shape[:2]
    return tfds.core.DatasetInfo(builder=self, description=f"Image folder {cfg.root}",
                                 features=image_features((h, w, cfg.channels), len(classes), classes),
                                 supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    _, files = scan(self.builder_config.root)
    return {split: self._generate_examples(pairs) for split, pairs in files.items() if pairs}

  def _generate_examples(self, pairs):
    cfg = self.builder_config
    shape = self.info.features["image"].shape
    for path, label in pairs:
      img = load_image(path, cfg.channels, cfg.image_size)
      if img.shape != shape:
        raise ValueError(f"{path} has shape {img.shape}, expected {shape}; "
                         "set data.image_size to resize every image")
      yield path, {"image": img, "label": label}
