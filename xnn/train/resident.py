"""Device-resident epochs: the training set lives on the devices; batches never leave them.

For datasets that fit in device memory (the digits, MNIST, CIFAR) the host input
pipeline is the bottleneck of a fast step (``benchmarks/RESULTS.md``). Here the
training images, after the deterministic part of the preprocessing (to float,
resize, channels), are put on the devices once as one array sharded along the
``data`` mesh axis: device d holds its own 1/D of the examples. Every step, inside
the jitted program, each device draws its local batch from its shard (a fresh
permutation of the shard every epoch, ``jax.random.permutation``), applies the
random crop/flip with ``lax.dynamic_slice`` and normalises -- no communication,
no host work. ``lax.scan`` runs many steps per dispatch; metrics come back once
per chunk.

Differences from the streaming path (``xnn.data.pipeline``), by design: examples
are shuffled within each device's shard rather than globally (each device still
sees every example of its shard once per epoch, in a new order), and the random
numbers come from JAX's generator rather than NumPy's, so the batches are equal
in distribution, not element for element. ``N mod D`` examples are left out.
The run is still exactly reproducible and resumable: every batch is a function
of (seed, step).

``train.device_resident="auto"`` (default) takes this path whenever the dataset
is supported and its float32 copy fits in ``train.device_resident_max_mb`` per
device; ``"on"`` insists (an error says why it cannot), ``"off"`` streams.
benchmarks/resident.py measures it against streaming (benchmarks/RESULTS.md). On
the CPU this needs xnn's convolutions (oneDNN's kernels, ``xnn.ops.onednn``, or
the pure-JAX gradients of ``xnn.ops.conv``): XLA:CPU runs its own weight-gradient
convolutions much slower inside a loop body such as this ``lax.scan``
(jax-ml/jax#12868).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xnn.data.datasets import Dataset
from xnn.data.pipeline import Preprocess, stack


@dataclasses.dataclass
class ResidentData:
  images: jax.Array          # (N', H, W, C) float32, sharded P("data")
  labels: jax.Array          # (N',) int32, sharded P("data")
  per_device: int            # examples each device holds
  local_batch: int           # examples each device draws per step
  steps_per_epoch: int       # per_device // local_batch


def host_bytes(ds: Dataset, preprocess: Preprocess) -> int:
  """Bytes the preprocessed (unaugmented) float32 training set takes."""
  img = preprocess.static(stack([ds.train[0]], preprocess.keys))[preprocess.image_key]
  return int(np.prod(img.shape[1:])) * 4 * len(ds.train)


def supported(ds: Dataset, pre: Preprocess) -> str | None:
  """Why the dataset cannot be device-resident, or None if it can."""
  if ds.kind != "image" or pre.image_key is None:
    return "only image classification datasets are supported"
  if ds.mask_key:
    return "masked targets are not supported"
  if pre.as_sequence:
    return "images read as sequences are not supported"
  return None


def load(ds: Dataset, pre: Preprocess, mesh: Mesh, global_batch: int, chunk: int = 4096) -> ResidentData:
  """Puts this host's share of the training set on its devices, sharded along ``data``."""
  n_dev = mesh.devices.size
  pid, nproc = jax.process_index(), jax.process_count()
  per_device = len(ds.train) // n_dev
  if per_device * n_dev < global_batch:
    raise ValueError(f"{len(ds.train)} training examples cannot fill a global batch of {global_batch}")
  local_batch = global_batch // n_dev
  # Host p holds the examples of its devices' shards: a contiguous block of the records.
  per_host = per_device * (n_dev // nproc)
  start = pid * per_host
  xs, ys = [], []
  for s in range(start, start + per_host, chunk):
    b = pre.static(stack([ds.train[i] for i in range(s, min(start + per_host, s + chunk))], pre.keys))
    xs.append(b[pre.image_key].astype(np.float32))
    ys.append(b[ds.label_key].astype(np.int32))
  sharding = NamedSharding(mesh, P("data"))
  images = jax.make_array_from_process_local_data(sharding, np.concatenate(xs))
  labels = jax.make_array_from_process_local_data(sharding, np.concatenate(ys))
  return ResidentData(images, labels, per_device, local_batch, per_device // local_batch)


def make_batch_fn(mesh: Mesh, pre: Preprocess, data: ResidentData,
                  image_key: str, label_key: str) -> Callable[..., dict[str, jax.Array]]:
  """``batch(images, labels, step, key) -> {image_key: (B, ...), label_key: (B,)}``, sharded like the batch.

  ``key`` (``jax.random.key(seed)``) is an argument, not a constant of the program, so that runs with
  other seeds load the same compiled program from the compilation cache.
  """
  h, w = data.images.shape[1:3]
  crop = pre.crop if pre.augment == "random_crop" else None
  out_hw = crop or (h, w)
  max_dy, max_dx = pre.crop_range((h, w))
  mean = None if pre.mean is None else jnp.asarray(pre.mean, jnp.float32)
  inv_std = None if pre.std is None else 1.0 / jnp.asarray(pre.std, jnp.float32)
  lb, spe = data.local_batch, data.steps_per_epoch

  def local_permutation(epoch, key):
    dev = jax.lax.axis_index("data")
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, epoch), dev), data.per_device)

  def local(images, labels, step, perm, key):
    dev = jax.lax.axis_index("data")
    pos = step % spe
    idx = jax.lax.dynamic_slice(perm, (pos * lb,), (lb,))
    x, y = images[idx], labels[idx]
    if pre.augment != "none":
      k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 1 << 30), step), dev)
      ky, kx, kf = jax.random.split(k, 3)
      dy = jax.random.randint(ky, (lb,), 0, max_dy + 1)
      dx = jax.random.randint(kx, (lb,), 0, max_dx + 1)
      if pre.augment == "pad_crop_flip":
        x = jnp.pad(x, ((0, 0), (pre.pad, pre.pad), (pre.pad, pre.pad), (0, 0)))
      x = jax.vmap(lambda img, a, b: jax.lax.dynamic_slice(img, (a, b, 0), (*out_hw, img.shape[-1])))(x, dy, dx)
      if pre.flip:
        flip = jax.random.bernoulli(kf, 0.5, (lb,))
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if mean is not None:
      x = (x - mean) * inv_std
    return {image_key: x, label_key: y}

  permutation = jax.shard_map(local_permutation, mesh=mesh, in_specs=(P(), P()), out_specs=P("data"))
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P(), P("data"), P()),
                          out_specs=P("data"))

  def batch(images, labels, step, key, perm=None):
    """The batch of ``step``; ``perm``: ``batch.permutation(step // steps_per_epoch, key)`` if known."""
    return sharded(images, labels, step, permutation(step // spe, key) if perm is None else perm, key)

  batch.permutation = permutation          # (epoch, key) -> each device's order of its shard
  batch.steps_per_epoch = spe
  return batch


def make_chunk_fn(train_step: Callable, batch_fn: Callable, num_steps: int) -> Callable:
  """``chunk(state, images, labels, rng, data_key) -> (state, stacked metrics)``: ``num_steps`` steps in one
  dispatch (``data_key``: the batches' ``key``, see ``make_batch_fn``).

  The epoch's permutation is carried through the scan and drawn again only when the
  epoch changes (it sorts the whole shard: drawn every step, it would cost a
  noticeable part of a small network's step).
  """
  spe = batch_fn.steps_per_epoch

  def chunk(state, images, labels, rng, data_key):
    def body(carry, _):
      state, perm, perm_epoch = carry
      epoch = state.step // spe
      perm = jax.lax.cond(epoch == perm_epoch, lambda: perm, lambda: batch_fn.permutation(epoch, data_key))
      state, metrics = train_step(state, batch_fn(images, labels, state.step, data_key, perm), rng)
      return (state, perm, epoch), metrics

    epoch0 = state.step // spe
    (state, _, _), metrics = jax.lax.scan(body, (state, batch_fn.permutation(epoch0, data_key), epoch0), None,
                                          length=num_steps)
    return state, metrics

  return chunk
