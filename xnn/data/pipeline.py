"""grain input pipelines: per-host sharded, shuffled, augmented, checkpointable.

``train_loader`` is a ``grain.DataLoader`` over an ``IndexSampler`` (a fresh
shuffle every epoch from the config seed, records split between hosts with
``ShardByJaxProcess``); its iterator state is saved in every checkpoint, so a
resumed run continues with exactly the sample (and augmentation) order of an
uninterrupted one. ``eval_batches`` walks this host's share of the test split
in order, padding the last batch and marking padding with ``mask = 0``.
"""

from __future__ import annotations

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
  elif cfg.normalize != "none":
    raise ValueError(f"data.normalize must be 'per_channel' or 'none', got {cfg.normalize!r}")
  return ops


def transforms_for(ds: Dataset, cfg: Any, train: bool) -> list[Any]:
  if ds.kind == "image":
    return image_transforms(ds, cfg, train)
  keys = (*ds.input_keys, ds.label_key) + ((ds.mask_key,) if ds.mask_key else ())
  return [T.SelectKeys(keys)]


def train_loader(ds: Dataset, cfg: Any, local_batch: int, seed: int) -> grain.DataLoader:
  """Infinite, reshuffled-every-epoch loader of this host's share of the train split."""
  sampler = grain.samplers.IndexSampler(
      num_records=len(ds.train),
      shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
      shuffle=True, num_epochs=None, seed=seed)
  ops = transforms_for(ds, cfg, train=True) + [grain.transforms.Batch(local_batch, drop_remainder=True)]
  return grain.DataLoader(data_source=ds.train, sampler=sampler, operations=ops,
                          worker_count=cfg.worker_count)


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
