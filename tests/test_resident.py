"""Device-resident epochs: the same distribution as the streaming path, resumable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from xnn.configs.default import get_config
from xnn.data import from_arrays, pipeline
from xnn.train import resident as R
from xnn.train import train_and_evaluate
from xnn.train.metrics import read_metrics


def _coded_dataset(n=64, size=16):
  """Images whose pixels encode (row, col), so a crop reveals its offset and flip."""
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  img = np.stack([rows + 1, cols + 1, np.zeros_like(rows)], -1).astype(np.uint8)
  x = np.repeat(img[None], n, 0)
  y = np.arange(n) % 4
  return from_arrays(x, y, x[:8], y[:8], pixel_max=1.0)


def _offsets(batch, pad):
  """(dy, dx, flipped) of each pad-crop-flipped coded image (pixel = (row + 1, col + 1, 0))."""
  out = []
  w = batch.shape[2]
  for img in batch:
    valid = np.argwhere((img[..., 0] > 0) & (img[..., 1] > 0))
    (i, j), (i2, j2) = valid[0], valid[-1]
    row, col = img[i, j, 0] - 1, img[i, j, 1] - 1
    flipped = bool(img[i2, j2, 1] < img[i, j, 1]) if j2 != j else False
    dy = row - i + pad
    dx = (col - (w - 1 - j) if flipped else col - j) + pad
    out.append((int(dy), int(dx), flipped))
  return out


def test_resident_crops_and_flips_have_the_streaming_distribution():
  ds = _coded_dataset()
  cfg = get_config().data
  cfg.image_size, cfg.channels, cfg.augment, cfg.pad, cfg.flip, cfg.normalize = 0, 0, "pad_crop_flip", 2, True, "none"
  pre = pipeline.make_preprocess(ds, cfg, train=True)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  data = R.load(ds, pre, mesh, 32)
  batch_fn = R.make_batch_fn(mesh, pre, data, "image", "label")
  fn = jax.jit(lambda images, labels, step: batch_fn(images, labels, step, jax.random.key(0)))
  resident, streaming = [], []
  host = pipeline.HostBatches(ds, pre, 32, 0, 0, 1)
  for step in range(60):
    resident += _offsets(np.asarray(fn(data.images, data.labels, jnp.int32(step))["image"]), 2)
    streaming += _offsets(host[step]["image"], 2)
  for sample in (resident, streaming):
    dy = np.array([s[0] for s in sample])
    dx = np.array([s[1] for s in sample])
    flips = np.array([s[2] for s in sample])
    n = len(sample)                                  # 1,920 crops each
    counts = np.bincount(dy * 5 + dx, minlength=25)
    chi2 = ((counts - n / 25) ** 2 / (n / 25)).sum()
    assert chi2 < 52.6, chi2                         # chi-square, 24 dof, p = 0.001
    assert abs(flips.mean() - 0.5) < 0.05
  # Every example appears once per epoch of each device's shard, in a new order each epoch:
  # with each example's index as its label, an epoch's batches are a permutation of 0..63.
  assert data.steps_per_epoch == 2
  ids = jax.device_put(jnp.arange(64, dtype=jnp.int32), data.labels.sharding)
  epochs = [np.concatenate([np.asarray(fn(data.images, ids, jnp.int32(2 * e + s))["label"]) for s in range(2)])
            for e in range(2)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(64))
  assert not np.array_equal(epochs[0], epochs[1])


def test_resident_run_is_deterministic_and_resumes(tiny_config, tmp_path):
  c = tiny_config
  c.train.device_resident = "on"
  c.train.num_steps, c.train.steps_per_dispatch, c.train.checkpoint_every_steps = 4, 2, 2
  c.train.eval_every_epochs = 0.09          # every 2 steps (22 steps an epoch)
  c.data.image_size = 16                     # LeNet-5 takes >= 16
  r1 = train_and_evaluate(c, str(tmp_path / "a"))
  recs = read_metrics(str(tmp_path / "a" / "metrics.jsonl"))
  assert [r["mode"] for r in recs if r["type"] == "input"] == ["device_resident"]
  # Stop after 2 steps, then resume to 4: same parameters as the uninterrupted run.
  c.train.num_steps = 2
  train_and_evaluate(c, str(tmp_path / "b"))
  c.train.num_steps = 4
  r2 = train_and_evaluate(c, str(tmp_path / "b"))
  for x, y in zip(jax.tree.leaves(r1.state.params), jax.tree.leaves(r2.state.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_auto_mode_is_resident_when_it_fits_and_on_rejects_sequences(tiny_config, tmp_path):
  c = tiny_config
  c.train.num_steps, c.data.image_size = 1, 16
  modes = {}
  for name, max_mb in (("fits", 1024), ("too_big", 1)):   # the digits at 16x16x3 float32: 4.2 MB
    c.train.device_resident_max_mb = max_mb
    train_and_evaluate(c, str(tmp_path / name))
    modes[name] = [r["mode"] for r in read_metrics(str(tmp_path / name / "metrics.jsonl")) if r["type"] == "input"]
  assert modes == {"fits": ["device_resident"], "too_big": ["streaming"]}
  c.train.device_resident = "on"
  with pytest.raises(ValueError, match=r"cannot be device-resident: 4 MB per device > train.device_resident_max_mb"):
    train_and_evaluate(c, str(tmp_path / "on"))
  rng = np.random.default_rng(0)
  seq = from_arrays(rng.random((64, 5, 3)), rng.integers(0, 2, 64), rng.random((8, 5, 3)), rng.integers(0, 2, 8))
  with pytest.raises(ValueError, match="cannot be device-resident: only image"):
    train_and_evaluate(tiny_config, str(tmp_path / "seq"), dataset=seq)
