"""Dataset registry: a config names its data (``config.data.name``).

Each dataset resolves to a :class:`Dataset`: two random-access sources
(``tfds.data_source`` ArrayRecord readers, or in-memory arrays) and what the
pipeline needs to know to preprocess them. TFDS datasets are prepared on first
use into ``data.data_dir`` (TFDS's default, ``~/tensorflow_datasets`` or
``$TFDS_DATA_DIR``, when empty); the original archives are downloaded, or taken
from ``data.manual_dir`` on machines without network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import numpy as np

from xnn.data.errors import DataError
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

  _label_stats: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

  @property
  def element_shape(self) -> tuple[int, ...]:
    return tuple(np.shape(self.train[0][self.input_keys[0]]))

  def label_stats(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels of ``split`` ("train" or "test") and how many examples carry each.

    Steps outside ``mask_key`` do not count. Read once per split, then kept: in-memory
    arrays in one NumPy pass, other sources by reading every record once.
    """
    if split not in self._label_stats:
      self._label_stats[split] = source_label_stats(getattr(self, split), self.label_key, self.mask_key)
    return self._label_stats[split]

  def check_labels(self, num_classes: int | None = None, against: str = "") -> None:
    """Every label of both splits must lie in [0, ``num_classes``) (default: the dataset's class count).

    Raises a :class:`DataError` naming the worst label (the largest too large, else the
    smallest negative), how many examples carry it, the split and the class count.
    ``against`` says what the count is (e.g. "the model's 5 classes (model.num_classes=5)").
    """
    n = self.num_classes if num_classes is None else int(num_classes)
    against = against or f"the {n} classes of dataset {self.name}"
    for split in ("train", "test"):
      values, counts = self.label_stats(split)
      bad = (values < 0) | (values >= n)
      if not bad.any():
        continue
      worst = int(np.argmax(values)) if values.max() >= n else int(np.argmin(values))
      more = ""
      if bad.sum() > 1:
        more = f"; {int(bad.sum())} labels are out of range, in {int(counts[bad].sum())} examples"
      raise DataError(f"{split} labels must be in [0, {n}), {against}: label {int(values[worst])} appears in "
                      f"{int(counts[worst])} examples (split {split}){more}")


@dataclasses.dataclass(frozen=True)
class DataFacts:
  """What is known of a dataset without loading it: what ``xnn sweep --dry-run`` costs a run from."""
  shape: tuple[int, ...]           # one example, e.g. (32, 32, 3)
  splits: dict[str, int]           # split -> examples
  num_classes: int

  def examples(self, split: str) -> int:
    """Examples in a TFDS split string (``train``, ``train[:45000]``, ``train[:10%]``, ``train+test``)."""
    import tensorflow_datasets as tfds
    infos = {k: tfds.core.SplitInfo(name=k, shard_lengths=[n], num_bytes=0, filename_template=None)
             for k, n in self.splits.items()}
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    return sum((self.splits[p.splitname] if p.to is None else p.to) - (p.from_ or 0) for p in parts)


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  name: str
  load: Callable[[Any], Dataset]   # data config -> Dataset
  description: str
  facts: DataFacts | None = None   # None: known only once loaded (image folders, generated tasks)


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, description: str = "", facts: DataFacts | None = None):
  def deco(fn: Callable[[Any], Dataset]) -> Callable[[Any], Dataset]:
    DATASETS.add(name, DatasetEntry(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], facts))
    return fn
  return deco


def load_dataset(data_config: Any) -> Dataset:
  """The dataset ``data_config.name`` (unknown names list the registered ones), labels checked.

  Every label must lie in [0, num_classes) (:meth:`Dataset.check_labels`); TFDS data reads
  its label column once for it.
  """
  ds = DATASETS.get(data_config.name).load(data_config)
  ds.check_labels()
  return ds


def read_labels(source: Any, label_key: str, mask_key: str | None,
                chunk: int = 4096) -> tuple[np.ndarray, np.ndarray | None]:
  """All labels of ``source`` and their mask (None without ``mask_key``), stacked along the first axis.

  An :class:`ArraySource` hands over its arrays; other sources are read record by record
  (``__getitems__`` in chunks where they have it, as TFDS's ArrayRecord sources do).
  """
  arrays = getattr(source, "arrays", None)
  if isinstance(arrays, dict) and label_key in arrays:
    mask = arrays.get(mask_key) if mask_key else None
    return np.asarray(arrays[label_key]), None if mask is None else np.asarray(mask)
  n = len(source)
  labels, masks = [], []
  getitems = getattr(source, "__getitems__", None)
  for start in range(0, n, chunk):
    idx = list(range(start, min(n, start + chunk)))
    try:
      records = getitems(idx) if getitems is not None else [source[i] for i in idx]
    except TypeError:       # a __getitems__ of another signature (tfds.testing.mock_data's source)
      getitems = None
      records = [source[i] for i in idx]
    labels.append(np.stack([np.asarray(r[label_key]) for r in records]))
    if mask_key:
      masks.append(np.stack([np.asarray(r[mask_key]) for r in records]))
  if not labels:
    return np.zeros((0,), np.int64), None
  return np.concatenate(labels), np.concatenate(masks) if mask_key else None


def source_label_stats(source: Any, label_key: str, mask_key: str | None) -> tuple[np.ndarray, np.ndarray]:
  """:func:`label_counts` of a source; for a prepared TFDS split, kept in a file beside it after one read."""
  stats = _cached_label_stats(source, label_key, mask_key)
  if stats is None:
    stats = label_counts(*read_labels(source, label_key, mask_key))
    _store_label_stats(source, label_key, mask_key, stats)
  return stats


def _label_cache_file(source: Any, label_key: str, mask_key: str | None) -> tuple[str, str] | None:
  """(cache file, fingerprint) of a TFDS source's label counts; None for other sources.

  A prepared split's files never change, so their names, sizes and mtimes identify its labels.
  """
  info = getattr(source, "dataset_info", None)
  folder = getattr(info, "data_dir", None)
  if folder is None or not os.path.isdir(folder):
    return None
  split = str(getattr(source, "split", ""))
  tag = hashlib.sha256(f"{split}\0{label_key}\0{mask_key}".encode()).hexdigest()[:16]
  stamp = [(f, st.st_size, st.st_mtime_ns) for f in sorted(os.listdir(folder)) if ".array_record" in f
           for st in [os.stat(os.path.join(folder, f))]]
  return os.path.join(folder, f"xnn_labels.{tag}.json"), hashlib.sha256(repr((split, stamp)).encode()).hexdigest()


def _cached_label_stats(source: Any, label_key: str, mask_key: str | None) -> tuple[np.ndarray, np.ndarray] | None:
  """The label counts stored next to a prepared TFDS split, if they are there and current."""
  where = _label_cache_file(source, label_key, mask_key)
  if where is None:
    return None
  try:
    with open(where[0]) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  if stored.get("fingerprint") != where[1]:
    return None
  return np.asarray(stored["values"], np.int64), np.asarray(stored["counts"], np.int64)


def _store_label_stats(source: Any, label_key: str, mask_key: str | None,
                       stats: tuple[np.ndarray, np.ndarray]) -> None:
  """Writes a TFDS split's label counts next to it (atomically; skipped where the folder is read-only)."""
  where = _label_cache_file(source, label_key, mask_key)
  if where is None:
    return
  tmp = f"{where[0]}.{os.getpid()}.tmp"
  try:
    with open(tmp, "w") as f:
      json.dump({"fingerprint": where[1], "values": stats[0].tolist(), "counts": stats[1].tolist()}, f)
    os.replace(tmp, where[0])
  except OSError:
    with contextlib.suppress(OSError):
      os.remove(tmp)


def label_counts(labels: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(distinct labels, number of examples carrying each); per-step labels (N, T) count each example once."""
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"labels must be integer class ids, got {labels.dtype}")
  if labels.ndim <= 1 and mask is None:
    return np.unique(labels, return_counts=True)
  flat = labels.reshape(len(labels), -1)
  keep = np.ones(flat.shape, bool) if mask is None else np.asarray(mask).reshape(flat.shape) > 0
  rows = np.broadcast_to(np.arange(len(flat), dtype=np.int64)[:, None], flat.shape)[keep]
  values = flat[keep].astype(np.int64)
  if values.size == 0:
    return np.unique(values, return_counts=True)
  low = values.min()
  pairs = np.unique((values - low) * len(flat) + rows)    # one code per (label, example)
  return np.unique(pairs // len(flat) + low, return_counts=True)


def _tfds_data_dir(data_config: Any) -> str:
  import tensorflow_datasets as tfds
  return os.path.expanduser(data_config.get("data_dir") or os.environ.get("TFDS_DATA_DIR")
                            or tfds.core.constants.DATA_DIR)


def _remove_empty_folders(folder: str, stop: str) -> None:
  """Removes ``folder`` and its parents up to (not including) ``stop`` while they are empty."""
  stop = os.path.abspath(stop)
  folder = os.path.abspath(folder)
  while folder.startswith(stop + os.sep):
    try:
      if os.path.isdir(folder):
        os.rmdir(folder)
    except OSError:
      return
    folder = os.path.dirname(folder)


def tfds_sources(builder_name: str, data_config: Any, splits: tuple[str, str] = ("train", "test"),
                 builder: Any = None) -> tuple[Any, Any]:
  """Prepares (if needed) and opens a TF-free TFDS builder as ArrayRecord sources.

  Preparation holds a file lock in the data directory: processes that start together
  (the runs of a sweep, the hosts of a job sharing a filesystem) prepare a dataset
  once, the others wait and read it. A builder whose original files (its ``ARCHIVES``)
  are missing and cannot be downloaded fails at once, naming them and ``data.manual_dir``
  (:func:`xnn.data.builders.common.check_archives`, first thing in its ``_split_generators``).
  """
  import filelock
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  data_dir = _tfds_data_dir(data_config)
  manual_dir = os.path.expanduser(data_config.get("manual_dir") or "") or None
  dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  os.makedirs(data_dir, exist_ok=True)
  with filelock.FileLock(os.path.join(data_dir, f".{builder_name}.prepare.lock"), timeout=3600):
    if builder is None:
      import xnn.data.builders  # noqa: F401  (registers the builders)
      builder = tfds.builder(builder_name, data_dir=data_dir, file_format="array_record")
    if not os.path.isfile(os.path.join(os.fspath(builder.data_dir), "dataset_info.json")):   # not prepared
      builder.manual_dir_setting = manual_dir      # named by the builders' missing-archive error
      try:
        builder.download_and_prepare(download_config=dl_config)   # the builders check their archives first
      except BaseException:
        _remove_empty_folders(os.fspath(builder.data_dir), data_dir)   # TFDS leaves the dataset's folders
        raise
    known = builder.info.splits        # empty where TFDS does not record them (tfds.testing.mock_data)
    missing = [s for s in splits for part in s.split("+") if known and part.split("[")[0] not in known]
    if missing:
      raise DataError(f"{builder_name} has no split {missing[0]!r} (it has {sorted(known)}); "
                      "set data.train_split / data.test_split")
    sources = tuple(builder.as_data_source(split=s) for s in splits)
    for source in sources:   # read the labels once, here, so that processes waiting on the lock need not
      source_label_stats(source, "label", None)
    return sources


def describe_dataset(data_config: Any) -> Dataset:
  """``data_config.name`` as its kind, element shape and classes, without reading or preparing it where its
  registry entry knows them (``DataFacts``): a ``Dataset`` whose splits hold one all-zero record each, with
  per-channel statistics 0 and 1 (what building the model and its input needs, e.g. ``xnn cost --config``).
  Other data sets (generated sequences, image folders) are loaded."""
  facts = DATASETS.get(data_config.name).facts
  if facts is None:
    ds = load_dataset(data_config)
    return dataclasses.replace(ds, train=ArraySource(_first(ds.train)), test=ArraySource(_first(ds.test)))
  record = {"image": np.zeros((1, *facts.shape), np.uint8), "label": np.zeros((1,), np.int64)}
  channels = facts.shape[-1]
  return Dataset(data_config.name, ArraySource(record), ArraySource(record), num_classes=facts.num_classes,
                 mean=(0.0,) * channels, std=(1.0,) * channels)


def _first(source: Any) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[None] for k, v in source[0].items()}


@register_dataset("digits", facts=DataFacts((8, 8, 1), {"train": 1437, "test": 360}, 10))
def _digits(cfg) -> Dataset:
  """UCI optical digits, 8x8x1, 10 classes, bundled (no network)."""
  train, test = tfds_sources("xnn_digits", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("digits", train, test, num_classes=10, pixel_max=16.0)


@register_dataset("cifar10", facts=DataFacts((32, 32, 3), {"train": 50_000, "test": 10_000}, 10))
def _cifar10(cfg) -> Dataset:
  """CIFAR-10, 32x32x3, 10 classes (Krizhevsky 2009)."""
  train, test = tfds_sources("xnn_cifar10", cfg, (cfg.train_split, cfg.test_split))
  # Per-channel statistics of the 50,000 training images (population std).
  return Dataset("cifar10", train, test, num_classes=10,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset("cifar100", facts=DataFacts((32, 32, 3), {"train": 50_000, "test": 10_000}, 100))
def _cifar100(cfg) -> Dataset:
  """CIFAR-100 fine labels, 32x32x3, 100 classes."""
  train, test = tfds_sources("xnn_cifar100", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("cifar100", train, test, num_classes=100,
                 mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("mnist", facts=DataFacts((28, 28, 1), {"train": 60_000, "test": 10_000}, 10))
def _mnist(cfg) -> Dataset:
  """MNIST, 28x28x1, 10 classes (LeCun et al. 1998)."""
  train, test = tfds_sources("xnn_mnist", cfg, (cfg.train_split, cfg.test_split))
  return Dataset("mnist", train, test, num_classes=10, mean=(0.1307,), std=(0.3081,))


@register_dataset("fashion_mnist",
                  facts=DataFacts((28, 28, 1), {"train": 60_000, "test": 10_000}, 10))
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
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
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
  ds = Dataset(name, ArraySource(train), ArraySource(test), num_classes=num_classes,
               pixel_max=pixel_max, kind=kind, input_keys=(key,),
               mask_key="label_mask" if masks is not None else None)
  ds.check_labels()
  return ds
