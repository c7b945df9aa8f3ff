"""Input pipelines on grain: per-host sharded, shuffled, augmented, checkpointable.

Training reads *global batches*: one order of the records (a fresh permutation
every epoch, drawn by NumPy from (seed, epoch) once per epoch) cut into
global batches, of which each host reads only its own contiguous slice. The
slice is read, stacked and preprocessed as one NumPy batch (no per-example
Python work), with augmentation parameters drawn from (seed, global batch
index). So the batches -- and their crops and flips -- are the same whatever
the number of hosts: a 2-host run trains exactly like a 1-host run with the
same devices. The stream is a ``grain.MapDataset`` of batches turned into an
iterator with read-ahead threads; its state (the next batch index) is saved in
every checkpoint, so a resumed run continues with exactly the sample and
augmentation order of an uninterrupted one.

Evaluation walks this host's share of the test split in order, padding the last
batch and marking padding with ``EVAL_PAD_KEY`` = 0.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from typing import Any, Iterator

import grain
import jax
import numpy as np

from xnn.data import transforms as T
from xnn.data.datasets import EVAL_PAD_KEY, Dataset


def stack(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}


def channel_stats(ds: Dataset, max_examples: int = 50_000,
                  chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of the train split on the [0, 1] scale."""
  n = min(len(ds.train), max_examples)
  key = ds.input_keys[0]
  total = total_sq = 0.0
  count = 0
  for start in range(0, n, chunk):
    imgs = T.to_float(stack([ds.train[i] for i in range(start, min(n, start + chunk))], (key,))[key], ds.pixel_max)
    flat = imgs.reshape(-1, imgs.shape[-1]).astype(np.float64)
    total = total + flat.sum(0)
    total_sq = total_sq + (flat ** 2).sum(0)
    count += flat.shape[0]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocess:
  """The batch preprocessing that ``config.data`` asks for (train or eval)."""
  keys: tuple[str, ...] = dataclasses.field(kw_only=False)
  image_key: str | None = None        # None: sequences, passed through
  pixel_max: float = 255.0
  size: tuple[int, int] | None = None
  channels: int = 0
  augment: str = "none"
  pad: int = 4
  flip: bool = False
  crop: tuple[int, int] | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  train: bool = False
  as_sequence: str = ""               # "rows": (B, H, W*C); "pixels": (B, H*W, C)

  def crop_range(self, hw: tuple[int, int]) -> tuple[int, int]:
    """Largest (dy, dx) offsets of the training augmentation for images of size ``hw``."""
    if self.augment == "pad_crop_flip":
      return 2 * self.pad, 2 * self.pad
    if self.augment == "random_crop":
      return hw[0] - self.crop[0], hw[1] - self.crop[1]
    return 0, 0

  def output_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
    return self.size or hw

  def static(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The deterministic part: to float, resize, channels (no augmentation, no normalisation).

    The device-resident path (``xnn.train.resident``) stores images after this step and
    does the rest inside the jitted program.
    """
    x = T.to_float(batch[self.image_key], self.pixel_max)
    if self.size:
      x = T.resize(x, self.size)
    if self.channels:
      x = T.to_channels(x, self.channels)
    return {**batch, self.image_key: x}

  def __call__(self, batch: dict[str, np.ndarray], params: dict[str, np.ndarray] | None = None):
    if self.image_key is None:
      return batch
    x = self.static(batch)[self.image_key]
    if self.augment == "pad_crop_flip" and self.train:
      x = T.pad_crop_flip(x, params["dy"], params["dx"], params["flip"], self.pad)
    elif self.augment == "random_crop":
      x = (T.random_crop(x, params["dy"], params["dx"], params["flip"], self.crop) if self.train
           else T.center_crop(x, self.crop))
    if self.mean is not None:
      x = T.normalize(x, self.mean, self.std)
    if self.as_sequence == "rows":
      x = x.reshape(x.shape[0], x.shape[1], -1)
    elif self.as_sequence == "pixels":
      x = x.reshape(x.shape[0], -1, x.shape[-1])
    return {**batch, self.image_key: np.ascontiguousarray(x, np.float32)}


def make_preprocess(ds: Dataset, cfg: Any, train: bool) -> Preprocess:
  """Checks ``config.data`` against the dataset and builds its :class:`Preprocess`.

  The names of augmentations, normalisations and sequence readings are checked with the
  rest of the config (``xnn.configs.schema``); here what depends on the dataset.
  """
  keys = (*ds.input_keys, ds.label_key) + ((ds.mask_key,) if ds.mask_key else ())
  if ds.kind != "image":
    return Preprocess(keys)
  crop = (cfg.crop_size, cfg.crop_size) if cfg.crop_size else None
  if cfg.augment == "random_crop" and crop is None:
    raise ValueError("data.augment='random_crop' needs data.crop_size (e.g. 28)")
  channels = cfg.channels or ds.element_shape[-1]
  mean = std = None
  if cfg.normalize == "per_channel":
    mean, std = (ds.mean, ds.std) if ds.mean is not None else channel_stats(ds)
    if len(mean) != channels:   # grey statistics for a replicated-channel image
      mean, std = tuple(mean) * channels, tuple(std) * channels
  elif cfg.normalize == "minus_one_one":      # (x - 0.5) / 0.5, the course code's choice
    mean, std = (0.5,) * channels, (0.5,) * channels
  return Preprocess(keys, image_key=ds.input_keys[0], pixel_max=ds.pixel_max,
                    size=(cfg.image_size,) * 2 if cfg.image_size else None, channels=cfg.channels,
                    augment=cfg.augment, pad=cfg.pad, flip=cfg.flip, crop=crop,
                    mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
                    train=train, as_sequence=cfg.as_sequence)


class HostBatches:
  """Random access to this host's preprocessed slice of global batch ``b`` (infinite)."""

  def __init__(self, ds: Dataset, preprocess: Preprocess, global_batch: int, seed: int,
               process_index: int, process_count: int):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} is not divisible by {process_count} hosts")
    self.source, self.preprocess, self.seed = ds.train, preprocess, seed
    self.global_batch, self.local = global_batch, global_batch // process_count
    self.offset = process_index * self.local
    self.n = len(ds.train)
    self._orders: dict[int, np.ndarray] = {}     # epoch -> permutation (the last two epochs)
    self._lock = threading.Lock()                # grain's read-ahead threads share this object
    if preprocess.image_key is not None:
      hw = tuple(np.shape(ds.train[0][preprocess.image_key])[:2])
      self.max_dy, self.max_dx = preprocess.crop_range(preprocess.output_hw(hw))
    else:
      self.max_dy = self.max_dx = 0

  def __len__(self) -> int:
    return sys.maxsize

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The record order of ``epoch``: a permutation drawn from (seed, epoch), kept for reuse."""
    with self._lock:
      order = self._orders.get(epoch)
      if order is None:
        # [seed, epoch, 1]: entropy distinct from draw_params' [seed, batch index]
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(self.n)
        self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
        self._orders[epoch] = order
      return order

  def indices(self, start: int, stop: int) -> np.ndarray:
    """Record indices at global positions [start, stop) of the endless shuffled stream."""
    g = np.arange(start, stop)
    out = np.empty(len(g), np.int64)
    for e in np.unique(g // self.n):              # a batch straddles at most a few epochs
      sel = g // self.n == e
      out[sel] = self.epoch_order(int(e))[g[sel] % self.n]
    return out

  def __getitem__(self, b: int) -> dict[str, np.ndarray]:
    start = b * self.global_batch + self.offset
    batch = stack([self.source[int(i)] for i in self.indices(start, start + self.local)], self.preprocess.keys)
    params = None
    if self.preprocess.augment != "none":
      p = T.draw_params(self.seed, b, self.global_batch, self.max_dy, self.max_dx, self.preprocess.flip)
      params = {k: None if v is None else v[self.offset:self.offset + self.local] for k, v in p.items()}
    return self.preprocess(batch, params)


def train_loader(ds: Dataset, cfg: Any, global_batch: int, seed: int) -> grain.IterDataset:
  """An infinite iterable of this host's training batches; ``iter()`` it for a checkpointable iterator."""
  batches = HostBatches(ds, make_preprocess(ds, cfg, train=True), global_batch, seed,
                        jax.process_index(), jax.process_count())
  it_ds = grain.MapDataset.source(batches).to_iter_dataset(
      grain.ReadOptions(num_threads=max(1, cfg.threads), prefetch_buffer_size=max(1, cfg.prefetch)))
  if cfg.worker_count:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  return it_ds


def eval_batches(ds: Dataset, cfg: Any, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of the test split, in order, padded to full batches with a mask.

  Every host yields the same number of batches (the SPMD program needs it).
  """
  pid, nproc = jax.process_index(), jax.process_count()
  preprocess = make_preprocess(ds, cfg, train=False)
  n = len(ds.test)
  indices = list(range(pid, n, nproc))
  per_host = math.ceil(n / nproc)                 # the most examples any host holds
  num_batches = math.ceil(per_host / local_batch)
  for b in range(num_batches):
    chunk = indices[b * local_batch:(b + 1) * local_batch]
    valid = len(chunk)
    recs = [ds.test[i] for i in chunk] + [ds.test[0]] * (local_batch - valid)
    batch = preprocess(stack(recs, preprocess.keys))
    batch[EVAL_PAD_KEY] = (np.arange(local_batch) < valid).astype(np.float32)
    yield batch
