"""A folder of images with one sub-folder per class, TFDS ImageFolder layout.

    root/train/<class_name>/*.png|jpg|...
    root/test/<class_name>/*.png|jpg|...

Classes are the sorted sub-folder names of the train split; a split other than
train may lack a class, but a class folder without images and a class found only
outside train/ are errors. Images are decoded with Pillow (no TensorFlow),
converted to RGB (or L with `channels=1`) and resized to `image_size` when given
(else they must all share one size).

A preparation is named after a digest of the folder's contents (every image's
relative path, size and modification time) with the image settings, so adding,
removing or changing an image prepares the data again instead of reading a stale copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from xnn.data.builders.common import DataError, image_features

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """What an image folder holds: class names, (path, label) pairs per split, a digest of it all."""
  classes: list[str]
  files: dict[str, list[tuple[str, int]]]
  digest: str


def _class_dirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _images(cdir: str) -> list[str]:
  return sorted(f for f in os.listdir(cdir) if f.lower().endswith(IMAGE_SUFFIXES)
                and os.path.isfile(os.path.join(cdir, f)))


def scan(root: str) -> FolderScan:
  """The classes, the files of every split and their digest; one line naming what is wrong otherwise."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  splits = _class_dirs(root)
  if "train" not in splits:
    raise DataError(f"image folder {root!r} needs a 'train' sub-folder (found {splits})")
  classes = _class_dirs(os.path.join(root, "train"))
  if not classes:
    raise DataError(f"{root}/train has no class sub-folders (expected train/<class>/*.png ...)")
  per_split = {split: _class_dirs(os.path.join(root, split)) for split in splits}
  extra = {split: sorted(set(names) - set(classes)) for split, names in per_split.items()}
  extra = {split: names for split, names in extra.items() if names}
  if extra:
    listed = "; ".join(f"{split}/: {names}" for split, names in extra.items())
    raise DataError(f"image folder {root!r} has classes missing from train/ ({listed}); the classes are "
                    f"train/'s {classes}: add them there or remove them")
  files: dict[str, list[tuple[str, int]]] = {}
  empty, h = [], hashlib.sha256()
  for split in splits:
    pairs = []
    for label, cls in enumerate(classes):
      cdir = os.path.join(root, split, cls)
      if not os.path.isdir(cdir):
        continue
      names = _images(cdir)
      if not names:
        empty.append(f"{split}/{cls}")
      for f in names:
        st = os.stat(os.path.join(cdir, f))
        h.update(f"{split}/{cls}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        pairs.append((os.path.join(cdir, f), label))
    files[split] = pairs
  if empty:
    raise DataError(f"image folder {root!r}: class folder(s) {empty} hold no images "
                    f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})")
  return FolderScan(classes, files, h.hexdigest())


def load_image(path: str, channels: int, size: tuple[int, int] | None) -> np.ndarray:
  """The image at ``path`` as uint8 (H, W, channels); an unreadable file is a :class:`DataError` naming it."""
  try:
    with Image.open(path) as im:
      im = im.convert("L" if channels == 1 else "RGB")
      if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
      arr = np.asarray(im, np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise DataError(f"{path} is not a readable image ({type(e).__name__}: {e}); expected a complete "
                    f"{os.path.splitext(path)[1] or 'image'} file: replace or remove it") from None
  return arr[..., None] if arr.ndim == 2 else arr


class XnnImageFolderConfig(tfds.core.BuilderConfig):
  def __init__(self, *, root: str, image_size: tuple[int, int] | None, channels: int, contents: FolderScan, **kw):
    super().__init__(**kw)
    self.root, self.image_size, self.channels, self.contents = root, image_size, channels, contents


class XnnImageFolder(tfds.core.GeneratorBasedBuilder):
  """Images in class sub-folders (train/ and optionally test/)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: list = []

  @classmethod
  def for_folder(cls, root: str, image_size: tuple[int, int] | None = None, channels: int = 3,
                 **kw) -> "XnnImageFolder":
    """The builder of ``root`` as it is now: scanned once, named by its contents' digest."""
    root = os.path.abspath(root)
    contents = scan(root)
    tag = "".join(c if c.isalnum() else "_" for c in root.strip("/"))[-80:]
    size_tag = "native" if image_size is None else f"{image_size[0]}x{image_size[1]}"
    cfg = XnnImageFolderConfig(name=f"{tag}_{size_tag}_c{channels}_{contents.digest[:16]}", root=root,
                               image_size=image_size, channels=channels, contents=contents)
    return cls(config=cfg, **kw)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    classes, files = cfg.contents.classes, cfg.contents.files
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
    files = self.builder_config.contents.files
    return {split: self._generate_examples(pairs) for split, pairs in files.items() if pairs}

  def _generate_examples(self, pairs):
    cfg = self.builder_config
    shape = self.info.features["image"].shape
    for path, label in pairs:
      img = load_image(path, cfg.channels, cfg.image_size)
      if img.shape != shape:
        raise DataError(f"{path} has shape {img.shape}, expected {shape}; "
                        "set data.image_size to resize every image")
      yield path, {"image": img, "label": label}
