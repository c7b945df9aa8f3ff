"""Dataset registry: a config names its data (``config.data.name``).

Each dataset resolves to a :class:`Dataset`: two random-access sources
(``tfds.data_source`` ArrayRecord readers, or in-memory arrays) and what the
pipeline needs to know to preprocess them. TFDS datasets are prepared on first
use into ``data.data_dir`` (TFDS's default, ``~/tensorflow_datasets`` or
``$TFDS_DATA_DIR``, when empty); the original archives are downloaded, or taken
from ``data.manual_dir`` on machines without network.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from xnn.registry import Registry

# Evaluation batches carry, besides the dataset's keys, this (N,) flag: 1 for a real
# example, 0 for the padding that fills the last batch (xnn.data.pipeline.eval_batches).
EVAL_PAD_KEY = "mask"


@dataclasses.dataclass
class Dataset:
  """Train/test sources and their description."""
  name: str
  train: Any                       # len() + __getitem__ -> dict record
  test: Any
  num_classes: int
  pixel_max: float = 255.0         # raw value of full intensity (digits: 16)
  mean: tuple[float, ...] | None = None   # per-channel, on the [0, 1] scale; None = compute
  std: tuple[float, ...] | None = None
  kind: str = "image"              # "image" | "sequence"
  input_keys: tuple[str, ...] = ("image",)
  label_key: str = "label"
  mask_key: str | None = None

  @property
  def element_shape(self) -> tuple[int, ...]:
    return tuple(np.shape(self.train[0][self.input_keys[0]]))


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  name: str
  load: Callable[[Any], Dataset]   # data config -> Dataset
  description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, description: str = ""):
  def deco(fn: Callable[[Any], Dataset]) -> Callable[[Any], Dataset]:
    DATASETS.add(name, DatasetEntry(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0]))
    return fn
  return deco


def load_dataset(data_config: Any) -> Dataset:
  """The dataset ``data_config.name`` (unknown names list the registered ones)."""
  return DATASETS.get(data_config.name).load(data_config)


def _tfds_data_dir(data_config: Any) -> str:
  import tensorflow_datasets as tfds
  return os.path.expanduser(data_config.get("data_dir") or os.environ.get("TFDS_DATA_DIR")
                            or tfds.core.constants.DATA_DIR)


def tfds_sources(builder_name: str, data_config: Any, splits: tuple[str, str] = ("train", "test"),
                 builder: Any = None) -> tuple[Any, Any]:
  """Prepares (if needed) and opens a TF-free TFDS builder as ArrayRecord sources.

  Preparation holds a file lock in the data directory: processes that start together
  (the runs of a sweep, the hosts of a job sharing a filesystem) prepare a dataset
  once, the others wait and read it.
  """
  import filelock
  import tensorflow_datasets as tfds

  import xnn.data.builders  # noqa: F401  (registers the builders)

  tfds.disable_progress_bar()
  data_dir = _tfds_data_dir(data_config)
  manual_dir = data_config.get("manual_dir") or None
  dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  os.makedirs(data_dir, exist_ok=True)
  with filelock.FileLock(os.path.join(data_dir, f".{builder_name}.prepare.lock"), timeout=3600):
    if builder is not None:   # a configured builder instance (image folders)
      builder.download_and_prepare(download_config=dl_config)
      return tuple(builder.as_data_source(split=s) for s in splits)
    return tuple(tfds.data_source(builder_name, split=s, data_dir=data_dir,
                                  builder_kwargs={"file_format": "array_record"},
                                  download_and_prepare_kwargs={"download_config": dl_config})
                 for s in splits)


@register_dataset("digits")
def _digits(cfg) -> Dataset:
  """UCI optical digits, 8x8x1, 10 classes, bundled (no network)."""
  train, test = tfds_sources("xnn_digits", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("digits", train, test, num_classes=10, pixel_max=16.0)


@register_dataset("cifar10")
def _cifar10(cfg) -> Dataset:
  """CIFAR-10, 32x32x3, 10 classes (Krizhevsky 2009)."""
  train, test = tfds_sources("xnn_cifar10", cfg, (cfg.train_split, cfg.test_split))
  # Per-channel statistics of the 50,000 training images (population std).
  return Dataset("cifar10", train, test, num_classes=10,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset("cifar100")
def _cifar100(cfg) -> Dataset:
  """CIFAR-100 fine labels, 32x32x3, 100 classes."""
  train, test = tfds_sources("xnn_cifar100", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("cifar100", train, test, num_classes=100,
                 mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("mnist")
def _mnist(cfg) -> Dataset:
  """MNIST, 28x28x1, 10 classes (LeCun et al. 1998)."""
  train, test = tfds_sources("xnn_mnist", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("mnist", train, test, num_classes=10, mean=(0.1307,), std=(0.3081,))


@register_dataset("fashion_mnist")
def _fashion_mnist(cfg) -> Dataset:
  """Fashion-MNIST, 28x28x1, 10 classes (Xiao et al. 2017)."""
  train, test = tfds_sources("xnn_fashion_mnist", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("fashion_mnist", train, test, num_classes=10, mean=(0.2860,), std=(0.3530,))


@register_dataset("image_folder")
def _image_folder(cfg) -> Dataset:
  """Your images: ``data.root``/{train,test}/<class>/*.png (TFDS ImageFolder layout)."""
  from xnn.data.builders.image_folder import XnnImageFolder
  if not cfg.get("root"):
    raise ValueError("data.name='image_folder' needs data.root, the folder holding train/ and test/")
  size = (cfg.image_size, cfg.image_size) if cfg.get("image_size") else None
  builder = XnnImageFolder.for_folder(cfg.root, image_size=size, channels=cfg.get("channels") or 3,
                                      data_dir=cfg.get("data_dir") or None, file_format="array_record")
  train, test = tfds_sources("xnn_image_folder", cfg, (cfg.train_split, cfg.test_split), builder=builder)
  return Dataset(f"image_folder:{cfg.root}", train, test,
                 num_classes=builder.info.features["label"].num_classes)


def _sequence_task(name: str):
  def load(cfg) -> Dataset:
    from xnn.data.sequence_tasks import make_task, vocab_size
    keys = ("inputs", "decoder_inputs", "targets", "targets_mask")
    train = make_task(name, cfg.num_train, seed=0, length=cfg.seq_length, vocab=cfg.vocab)
    test = make_task(name, cfg.num_test, seed=1, length=cfg.seq_length, vocab=cfg.vocab)
    return Dataset(name, ArraySource({k: train[k] for k in keys}), ArraySource({k: test[k] for k in keys}),
                   num_classes=vocab_size(cfg.vocab), kind="sequence", input_keys=("inputs", "decoder_inputs"),
                   label_key="targets", mask_key="targets_mask")
  load.__doc__ = (f"The {name} task: generated token sequences (xnn.data.sequence_tasks), "
                  "encoder-decoder with teacher forcing; accuracy is per target token.")
  return load


for _task in ("copy", "reverse", "sort", "addition"):
  register_dataset(_task)(_sequence_task(_task))


class ArraySource:
  """A random-access source over in-memory arrays (grain's data-source protocol)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"arrays must all have the same length, got {lengths}")
    self.arrays = arrays
    self._len = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}

  def __repr__(self) -> str:
    shapes = {k: v.shape for k, v in self.arrays.items()}
    return f"ArraySource({shapes})"


def from_arrays(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                name: str = "arrays", num_classes: int | None = None,
                pixel_max: float | None = None, kind: str | None = None,
                masks: tuple[np.ndarray, np.ndarray] | None = None) -> Dataset:
  """Bring-your-own data: NumPy arrays as a :class:`Dataset`.

  Images are (N, H, W, C) (or (N, H, W), given a channel axis), uint8 or float;
  sequences are (N, T, F) float or (N, T) int token ids. Labels are (N,) ints (one
  class per example), or (N, T) ints for sequences (one class per step: tagging),
  with ``masks`` = (train, test) (N, T) arrays of 1 at valid steps when sequences
  have different lengths. ``pixel_max`` is the value of full intensity (default 255
  for uint8 images, 1 for float ones). ``kind`` ("image" or "sequence") defaults to
  "image" for 4-D arrays and 3-D uint8 arrays, else "sequence". The arrays go
  through the same pipeline as TFDS data.
  """
  x_train, x_test = np.asarray(x_train), np.asarray(x_test)
  y_train, y_test = np.asarray(y_train), np.asarray(y_test)
  for what, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if len(x) != len(y):
      raise ValueError(f"x_{what} has {len(x)} examples but y_{what} has {len(y)}")
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"y_{what} must be an integer array of class ids, (N,) or (N, T), got {y.dtype}{y.shape}")
    if y.ndim == 2 and y.shape[1] != x.shape[1]:
      raise ValueError(f"y_{what} {y.shape} has per-step labels but x_{what} {x.shape} has {x.shape[1]} steps")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(f"x_train examples {x_train.shape[1:]} and x_test examples {x_test.shape[1:]} differ")
  if kind is None:
    kind = "image" if x_train.ndim == 4 or (x_train.ndim == 3 and x_train.dtype == np.uint8) else "sequence"
  if kind not in ("image", "sequence"):
    raise ValueError(f"kind must be 'image' or 'sequence', got {kind!r}")
  if kind == "image" and x_train.ndim == 3:
    x_train, x_test = x_train[..., None], x_test[..., None]
  if num_classes is None:
    num_classes = int(max(y_train.max(), y_test.max())) + 1
  if pixel_max is None:
    pixel_max = 255.0 if x_train.dtype == np.uint8 else 1.0
  if y_train.ndim == 2 and kind == "image":
    raise ValueError(f"per-step labels {y_train.shape} need sequences (kind='sequence'), got images")
  key = "image" if kind == "image" else "inputs"
  train, test = {key: x_train, "label": y_train}, {key: x_test, "label": y_test}
  if masks is not None:
    for arrays, m, what in ((train, masks[0], "train"), (test, masks[1], "test")):
      if np.shape(m) != arrays["label"].shape:
        raise ValueError(f"the {what} mask {np.shape(m)} must have the labels' shape {arrays['label'].shape}")
      arrays["label_mask"] = np.asarray(m, np.float32)
  return Dataset(name, ArraySource(train), ArraySource(test), num_classes=num_classes,
                 pixel_max=pixel_max, kind=kind, input_keys=(key,),
                 mask_key="label_mask" if masks is not None else None)
