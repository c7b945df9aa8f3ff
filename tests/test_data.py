"""TF-free TFDS builders, transforms and the grain pipeline."""

import gzip
import io
import os
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnn.configs.default import get_config
from xnn.data import datasets, pipeline
from xnn.data import transforms as T
from xnn.data.builders.cifar import parse_records
from xnn.data.builders.mnist import read_idx


def data_cfg(**kw):
  c = get_config().data
  c.update(kw)
  return c


def test_digits_prepares_and_reads_without_tensorflow(tmp_path):
  """The embedded dataset builds from the bundled file; TensorFlow is neither installed nor loaded."""
  code = f"""
import importlib.util, sys
assert importlib.util.find_spec('tensorflow') is None, 'this test needs an environment without TensorFlow'
from xnn.configs.default import get_config
from xnn.data.datasets import load_dataset
c = get_config().data
c.data_dir = {str(tmp_path)!r}
ds = load_dataset(c)
assert len(ds.train) == 1437 and len(ds.test) == 360, (len(ds.train), len(ds.test))
r = ds.train[0]
assert r['image'].shape == (8, 8, 1) and r['image'].dtype.name == 'uint8' and r['image'].max() <= 16
labels = sorted(int(ds.test[i]['label']) for i in range(len(ds.test)))
assert set(labels) == set(range(10))
assert 'ArrayRecord' in type(ds.train).__name__, type(ds.train)
assert 'tensorflow' not in sys.modules
print('ok')
"""
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.isdir(tmp_path / "xnn_digits" / "1.0.0")


def test_digits_split_is_fixed_and_disjoint():
  from xnn.data.builders.digits import load_arrays
  images, labels = load_arrays()
  assert images.shape == (1797, 8, 8, 1) and labels.shape == (1797,)
  ds = datasets.load_dataset(data_cfg())
  train = {ds.train[i]["image"].tobytes() + bytes([ds.train[i]["label"]]) for i in range(len(ds.train))}
  expected_test = {images[i].tobytes() + bytes([labels[i]]) for i in range(0, 1797, 5)}
  test = {ds.test[i]["image"].tobytes() + bytes([ds.test[i]["label"]]) for i in range(len(ds.test))}
  assert test == expected_test
  assert len(train) + len(test) >= 1790   # a handful of duplicate images exist in optdigits


def _cifar_bytes(labels, images, label_bytes):
  recs = []
  for lab, img in zip(labels, images):
    head = bytes([lab // 5, lab]) if label_bytes == 2 else bytes([lab])
    recs.append(head + img.transpose(2, 0, 1).tobytes())     # channel-major, as in the original
  return b"".join(recs)


def test_cifar10_builder_parses_the_original_binary_archive(tmp_path):
  """A small archive in the original cifar-10-binary.tar.gz layout goes through the builder."""
  rng = np.random.default_rng(0)
  files, truth = {}, {}
  for name, n in [*((f"data_batch_{i}.bin", 3) for i in range(1, 6)), ("test_batch.bin", 4)]:
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labs = rng.integers(0, 10, n)
    files[name] = _cifar_bytes(labs, imgs, 1)
    truth[name] = (imgs, labs)
  manual = tmp_path / "manual"
  manual.mkdir()
  with tarfile.open(manual / "cifar-10-binary.tar.gz", "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  ds = datasets.load_dataset(data_cfg(name="cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(manual)))
  assert len(ds.train) == 15 and len(ds.test) == 4
  want = {(img.tobytes(), int(label)) for img, label in zip(*truth["test_batch.bin"])}
  got = {(ds.test[i]["image"].tobytes(), int(ds.test[i]["label"])) for i in range(4)}
  assert got == want
  # Pixel (row 0, col 1) red channel is byte 1 of the image in the original layout.
  imgs, _ = parse_records(files["test_batch.bin"], 1, 0)
  assert imgs[0, 0, 1, 0] == files["test_batch.bin"][1 + 1]
  assert imgs[0, 0, 0, 2] == files["test_batch.bin"][1 + 2048]


def test_cifar100_uses_the_fine_label():
  imgs = np.zeros((2, 32, 32, 3), np.uint8)
  data = _cifar_bytes([37, 99], imgs, 2)
  _, labels = parse_records(data, 2, 1)
  assert list(labels) == [37, 99]
  with pytest.raises(ValueError, match="multiple"):
    parse_records(data[:-1], 2, 1)


def _idx(arr, path):
  header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_builder_parses_idx_files(tmp_path):
  rng = np.random.default_rng(1)
  manual = tmp_path / "manual"
  manual.mkdir()
  tr_x, te_x = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 256, (3, 28, 28))
  tr_y, te_y = rng.integers(0, 10, 6), rng.integers(0, 10, 3)
  _idx(tr_x, manual / "train-images-idx3-ubyte.gz")
  _idx(tr_y, manual / "train-labels-idx1-ubyte.gz")
  _idx(te_x, manual / "t10k-images-idx3-ubyte.gz")
  _idx(te_y, manual / "t10k-labels-idx1-ubyte.gz")
  assert read_idx(str(manual / "t10k-images-idx3-ubyte.gz")).shape == (3, 28, 28)
  for name in ("mnist", "fashion_mnist"):
    ds = datasets.load_dataset(data_cfg(name=name, data_dir=str(tmp_path / "data"), manual_dir=str(manual)))
    assert len(ds.train) == 6 and len(ds.test) == 3
    got = sorted((ds.test[i]["image"][..., 0].tobytes(), int(ds.test[i]["label"])) for i in range(3))
    assert got == sorted((x.astype(np.uint8).tobytes(), int(y)) for x, y in zip(te_x, te_y))


def test_image_folder(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(2)
  for split, n in (("train", 3), ("test", 2)):
    for cls in ("cat", "dog"):
      d = tmp_path / "imgs" / split / cls
      d.mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
  ds = datasets.load_dataset(data_cfg(name="image_folder", root=str(tmp_path / "imgs"),
                                      data_dir=str(tmp_path / "data"), image_size=16))
  assert (len(ds.train), len(ds.test), ds.num_classes) == (6, 4, 2)
  assert ds.train[0]["image"].shape == (16, 16, 3)
  with pytest.raises(ValueError, match="needs data.root"):
    datasets.load_dataset(data_cfg(name="image_folder"))


def test_unknown_dataset_lists_the_available_ones():
  with pytest.raises(KeyError, match=r"'cifar11'.*Did you mean 'cifar10'") as e:
    datasets.load_dataset(data_cfg(name="cifar11"))
  listed = str(e.value).split("Available datasets: ")[1].rstrip("\"'").split(", ")
  assert listed == sorted(listed)
  assert {"cifar10", "cifar100", "digits", "mnist", "fashion_mnist", "image_folder"} <= set(listed)


def test_resize_matches_jax_image_resize():
  rng = np.random.default_rng(3)
  img = rng.random((2, 8, 8, 2)).astype(np.float32)
  for size in ((32, 32), (5, 11)):
    want = np.asarray(jax.image.resize(jnp.asarray(img), (2,) + size + (2,), "bilinear"))
    np.testing.assert_allclose(T.resize(img, size), want, atol=1e-5)


def test_pad_crop_flip_matches_a_per_image_reference():
  rng = np.random.default_rng(5)
  imgs = rng.random((16, 32, 32, 3)).astype(np.float32)
  p = T.draw_params(0, 3, 16, 8, 8, True)
  out = T.pad_crop_flip(imgs, p["dy"], p["dx"], p["flip"], 4)
  for i in range(16):
    ref = np.pad(imgs[i], ((4, 4), (4, 4), (0, 0)))[p["dy"][i]:p["dy"][i] + 32, p["dx"][i]:p["dx"][i] + 32]
    np.testing.assert_array_equal(out[i], ref[:, ::-1] if p["flip"][i] else ref)


def test_augmentation_parameters_are_uniform():
  """Offsets cover the 9 x 9 positions evenly and half the images are flipped (fixed seed)."""
  p = T.draw_params(0, 0, 81 * 200, 8, 8, True)
  counts = np.bincount(p["dy"] * 9 + p["dx"], minlength=81)
  assert counts.min() > 140 and counts.max() < 260       # 200 expected per cell
  assert 0.48 < p["flip"].mean() < 0.52
  # a different global batch index draws different parameters
  assert not np.array_equal(T.draw_params(0, 1, 64, 8, 8, True)["dy"], T.draw_params(0, 2, 64, 8, 8, True)["dy"])


def test_random_and_center_crop():
  img = np.arange(32 * 32, dtype=np.float32).reshape(1, 32, 32, 1)
  np.testing.assert_array_equal(T.center_crop(img, (28, 28)), img[:, 2:30, 2:30])
  out = T.random_crop(img, np.array([4]), np.array([0]), None, (28, 28))
  np.testing.assert_array_equal(out, img[:, 4:32, 0:28])
  with pytest.raises(ValueError, match="larger"):
    T.random_crop(img, np.array([0]), np.array([0]), None, (40, 40))


def test_from_arrays_images_and_sequences():
  rng = np.random.default_rng(4)
  ds = datasets.from_arrays(rng.integers(0, 256, (20, 10, 10), dtype=np.uint8), rng.integers(0, 3, 20),
                            rng.integers(0, 256, (5, 10, 10), dtype=np.uint8), rng.integers(0, 3, 5))
  assert ds.kind == "image" and ds.element_shape == (10, 10, 1) and ds.pixel_max == 255.0
  seq = datasets.from_arrays(rng.random((20, 7, 4)), rng.integers(0, 2, 20), rng.random((5, 7, 4)),
                             rng.integers(0, 2, 5))
  assert seq.kind == "sequence" and seq.input_keys == ("inputs",) and seq.num_classes == 2
  batches = list(pipeline.eval_batches(seq, data_cfg(), 4))
  assert batches[0]["inputs"].dtype == np.float64       # sequences pass through untouched
  assert [b["inputs"].shape for b in batches] == [(4, 7, 4), (4, 7, 4)]
  assert batches[1]["mask"].tolist() == [1, 0, 0, 0]
  with pytest.raises(ValueError, match="x_train has 20 examples but y_train has 3"):
    datasets.from_arrays(rng.random((20, 7, 4)), np.zeros(3, int), rng.random((5, 7, 4)), np.zeros(5, int))


def test_train_loader_state_resumes_the_exact_order():
  cfg = data_cfg(augment="pad_crop_flip", pad=2, flip=True)
  ds = datasets.load_dataset(cfg)
  it = iter(pipeline.train_loader(ds, cfg, 32, seed=7))
  for _ in range(50):                      # across an epoch boundary (1437 // 32 = 44)
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  it2 = iter(pipeline.train_loader(ds, cfg, 32, seed=7))
  it2.set_state(state)
  got = [next(it2) for _ in range(3)]
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  first = next(iter(pipeline.train_loader(ds, data_cfg(), 32, seed=7)))["label"]
  other_seed = next(iter(pipeline.train_loader(ds, data_cfg(), 32, seed=8)))["label"]
  assert not np.array_equal(first, other_seed)


def test_every_record_once_per_epoch_and_hosts_split_global_batches():
  """One epoch of global batches is a permutation; host slices concatenate to the 1-host batch."""
  cfg = data_cfg(augment="pad_crop_flip")
  ds = datasets.load_dataset(cfg)
  pre = pipeline.make_preprocess(ds, cfg, train=True)
  one = pipeline.HostBatches(ds, pre, 100, 3, 0, 1)
  n = len(ds.train)
  seen = one.indices(0, n)
  assert sorted(seen) == list(range(n))
  two = one.indices(n - 30, 2 * n + 30)            # across epoch boundaries: fresh orders
  np.testing.assert_array_equal(two[:30], seen[-30:])
  assert sorted(two[30:30 + n]) == list(range(n)) and not np.array_equal(two[30:30 + n], seen)
  np.testing.assert_array_equal(two[30 + n:], one.epoch_order(2)[:30])
  halves = [pipeline.HostBatches(ds, pre, 100, 3, p, 2)[5] for p in (0, 1)]
  whole = one[5]
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])


def test_normalisation_statistics_of_the_digits():
  ds = datasets.load_dataset(data_cfg())
  mean, std = pipeline.channel_stats(ds, chunk=100)
  from xnn.data.builders.digits import load_arrays
  imgs, _ = load_arrays()
  train = np.stack([imgs[i] for i in range(1797) if i % 5]) / 16.0
  assert mean[0] == pytest.approx(train.mean(), rel=1e-9)
  assert std[0] == pytest.approx(train.std(), rel=1e-6)
