"""grain input pipelines: per-host sharded, shuffled, augmented, checkpointable.

``train_loader`` is a ``grain.DataLoader`` over a :class:`GlobalBatchSampler`:
one global order of the records (a fresh shuffle every epoch from the config
seed), cut into global batches, of which each host reads only its own
contiguous slice. The global batches -- and the per-record augmentation
randomness, keyed by global position -- are therefore the same whatever the
number of hosts, so a 2-host run trains exactly like a 1-host run with the same
devices. The loader's iterator state is saved in every checkpoint, so a resumed
run continues with exactly the sample (and augmentation) order of an
uninterrupted one. ``eval_batches`` walks this host's share of the test split
in order, padding the last batch and marking padding with ``mask = 0``.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import grain
import jax
import numpy as np

from xnn.data import transforms as T
from xnn.data.datasets import Dataset


def channel_stats(ds: Dataset, max_examples: int = 50_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of the train split on the [0, 1] scale."""
  n = min(len(ds.train), max_examples)
  to_float = T.ToFloat(ds.pixel_max)
  total = total_sq = None
  count = 0
  for i in range(n):
    img = to_float.map(ds.train[i])["image"]
    flat = img.reshape(-1, img.shape[-1]).astype(np.float64)
    total = flat.sum(0) if total is None else total + flat.sum(0)
    total_sq = (flat ** 2).sum(0) if total_sq is None else total_sq + (flat ** 2).sum(0)
    count += flat.shape[0]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def image_transforms(ds: Dataset, cfg: Any, train: bool) -> list[Any]:
  """The per-example transforms for an image dataset, from ``config.data``."""
  ops: list[Any] = [T.SelectKeys((*ds.input_keys, ds.label_key)), T.ToFloat(ds.pixel_max)]
  if cfg.image_size:
    ops.append(T.Resize((cfg.image_size, cfg.image_size)))
  if cfg.channels:
    ops.append(T.ToChannels(cfg.channels))
  crop = (cfg.crop_size, cfg.crop_size) if cfg.crop_size else None
  if cfg.augment == "pad_crop_flip":
    if train:
      ops.append(T.PadCropFlip(cfg.pad, cfg.flip))
  elif cfg.augment == "random_crop":
    if crop is None:
      raise ValueError("data.augment='random_crop' needs data.crop_size (e.g. 28)")
    ops.append(T.RandomCrop(crop, cfg.flip) if train else T.CenterCrop(crop))
  elif cfg.augment != "none":
    raise ValueError(f"data.augment must be 'none', 'pad_crop_flip' or 'random_crop', got {cfg.augment!r}")
  if cfg.normalize == "per_channel":
    mean, std = (ds.mean, ds.std) if ds.mean is not None else channel_stats(ds)
    channels = cfg.channels or len(mean)
    if len(mean) != channels:   # grey statistics for a replicated-channel image
      mean, std = mean * channels, std * channels
    ops.append(T.Normalize(tuple(mean), tuple(std)))
  elif cfg.normalize == "minus_one_one":      # (x - 0.5) / 0.5, the course code's choice
    channels = cfg.channels or ds.element_shape[-1]
    ops.append(T.Normalize((0.5,) * channels, (0.5,) * channels))
  elif cfg.normalize != "none":
    raise ValueError(f"data.normalize must be 'per_channel', 'minus_one_one' or 'none', got {cfg.normalize!r}")
  return ops


def transforms_for(ds: Dataset, cfg: Any, train: bool) -> list[Any]:
  if ds.kind == "image":
    return image_transforms(ds, cfg, train)
  keys = (*ds.input_keys, ds.label_key) + ((ds.mask_key,) if ds.mask_key else ())
  return [T.SelectKeys(keys)]


class GlobalBatchSampler:
  """Host ``process_index``'s records of an infinite, per-epoch shuffled global order.

  Local index k (k-th record this host reads) is global position
  g = (k // local_batch) * global_batch + process_index * local_batch + k % local_batch;
  the record is the g-th of the concatenated per-epoch permutations, and its
  augmentation rng is seeded by (seed, g).
  """

  def __init__(self, num_records: int, global_batch: int, process_index: int, process_count: int, seed: int):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} is not divisible by {process_count} hosts")
    self._local = global_batch // process_count
    self._global = global_batch
    self._offset = process_index * self._local
    self._seed = seed
    self._keys = grain.MapDataset.range(num_records).shuffle(seed=seed)

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    g = (index // self._local) * self._global + self._offset + index % self._local
    rng = np.random.Generator(np.random.Philox(key=self._seed + g))
    return grain.RecordMetadata(index=index, record_key=self._keys[g], rng=rng)

  def __repr__(self) -> str:
    return f"GlobalBatchSampler(local={self._local}, global={self._global}, offset={self._offset}, seed={self._seed})"


def train_loader(ds: Dataset, cfg: Any, global_batch: int, seed: int) -> grain.DataLoader:
  """Infinite, reshuffled-every-epoch loader of this host's slice of each global batch."""
  nproc = jax.process_count()
  sampler = GlobalBatchSampler(len(ds.train), global_batch, jax.process_index(), nproc, seed)
  ops = transforms_for(ds, cfg, train=True) + [grain.transforms.Batch(global_batch // nproc, drop_remainder=True)]
  return grain.DataLoader(data_source=ds.train, sampler=sampler, operations=ops,
                          worker_count=cfg.worker_count, shard_options=grain.sharding.NoSharding())


def eval_batches(ds: Dataset, cfg: Any, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of the test split, in order, padded to full batches with a mask.

  Every host yields the same number of batches (the SPMD program needs it).
  """
  pid, nproc = jax.process_index(), jax.process_count()
  n = len(ds.test)
  per_host = -(-n // nproc)
  num_batches = -(-per_host // local_batch)
  source = grain.MapDataset.source(ds.test)[pid::nproc]
  for op in transforms_for(ds, cfg, train=False):
    source = source.map(op)
  examples = list(source)
  for b in range(num_batches):
    chunk = examples[b * local_batch:(b + 1) * local_batch]
    valid = len(chunk)
    template = examples[0]
    batch = {k: np.stack([e[k] for e in chunk] + [np.zeros_like(template[k])] * (local_batch - valid))
             for k in template}
    batch["mask"] = (np.arange(local_batch) < valid).astype(np.float32)
    yield batch
