"""Bad or missing data: offline archives, corrupt files, image-folder contents and label ranges.

Every file is written here in its original format and goes through the real TFDS
builders; no network is needed (and none is used: a test that would download skips).
"""

import gzip
import http.server
import io
import os
import socket
import tarfile
import threading
import time
import urllib.parse

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_data import _cifar_bytes, _idx, data_cfg

from xnn.data import datasets
from xnn.data.builders import common
from xnn.data.errors import DataError

import xnn.data.builders  # noqa: F401  (registers the builders)


def _archives(name: str) -> dict:
  try:
    return getattr(tfds.builder_cls(f"xnn_{name}"), "ARCHIVES", {})
  except tfds.core.registered.DatasetNotFoundError:
    return {}


# Every registered dataset whose TFDS builder (xnn_<name>) prepares from original archives.
NEEDS_ARCHIVES = sorted(n for n in datasets.DATASETS.names() if _archives(n))


def one_line(e: pytest.ExceptionInfo) -> str:
  text = str(e.value)
  assert "\n" not in text, text
  return text


def leftovers(data_dir) -> list[str]:
  """Files and folders under ``data_dir`` other than the preparation locks."""
  return sorted(os.path.relpath(os.path.join(d, f), data_dir) for d, dirs, files in os.walk(data_dir)
                for f in files + dirs if not f.endswith(".prepare.lock") and f not in ("downloads", "extracted"))


# --- missing archives, no network --------------------------------------------------------------


def test_the_archive_datasets_are_all_covered():
  assert {"cifar10", "cifar100", "mnist", "fashion_mnist"} <= set(NEEDS_ARCHIVES)


@pytest.mark.parametrize("name", NEEDS_ARCHIVES)
def test_missing_archive_without_network_fails_at_once(name, tmp_path, monkeypatch):
  """Empty manual dir, no network: one line naming data.manual_dir and the files, in seconds, nothing left."""
  monkeypatch.delenv(common.OFFLINE_ENV, raising=False)
  builder_cls = tfds.builder_cls(f"xnn_{name}")
  url = next(iter(builder_cls.ARCHIVES.values()))
  if common.probe(url, timeout=1.0) is None:
    pytest.skip(f"{url} is reachable: this test would download it")
  (tmp_path / "manual").mkdir()
  start = time.monotonic()
  with pytest.raises(DataError) as e:
    datasets.load_dataset(data_cfg(name=name, data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual")))
  assert time.monotonic() - start < 2 * common.PROBE_TIMEOUT_S + 1
  text = one_line(e)
  assert f"data.manual_dir='{tmp_path / 'manual'}', and {urllib.parse.urlsplit(url).hostname} " in text
  for fname in builder_cls.ARCHIVES:
    assert fname in text
  assert url.rsplit("/", 1)[0] in text
  assert leftovers(tmp_path / "data") == []


def test_offline_names_tfds_default_manual_dir_and_only_the_missing_files(tmp_path, monkeypatch):
  """$XNN_OFFLINE refuses without probing; the files already in place are not asked for."""
  monkeypatch.setenv(common.OFFLINE_ENV, "1")
  manual = tmp_path / "data" / "downloads" / "manual"
  manual.mkdir(parents=True)
  _idx(np.zeros((2, 28, 28)), manual / "train-images-idx3-ubyte.gz")
  _idx(np.zeros(2), manual / "train-labels-idx1-ubyte.gz")
  with pytest.raises(DataError) as e:
    datasets.load_dataset(data_cfg(name="mnist", data_dir=str(tmp_path / "data")))
  text = one_line(e)
  assert f"data.manual_dir (empty, so TFDS's '{manual}')" in text and "$XNN_OFFLINE is set" in text
  assert "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz," in text and "train-images" not in text


class _Answer(http.server.BaseHTTPRequestHandler):
  """200 for paths ending in .ok, else 404."""

  def do_HEAD(self):
    if self.path.endswith(".ok"):
      self.send_response(200)
      self.end_headers()
    else:
      self.send_error(404)

  do_GET = do_HEAD

  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def server():
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{srv.server_address[1]}"
  srv.shutdown()


def test_probe_is_one_quick_request(server):
  """Success, an error status, and a server that never answers (within the timeout, no retries)."""
  assert common.probe(f"{server}/a.ok") is None
  assert common.probe(f"{server}/a.tar.gz") == f"127.0.0.1 answered HTTP 404 for {server}/a.tar.gz"
  with socket.create_server(("127.0.0.1", 0)) as silent:     # listens, never answers
    start = time.monotonic()
    why = common.probe(f"http://127.0.0.1:{silent.getsockname()[1]}/x.tar.gz", timeout=0.5)
    assert time.monotonic() - start < 1.5
  assert why.startswith("127.0.0.1 ") and ("0.5 s" in why or "timed out" in why)


def test_a_failed_download_leaves_no_temporary_file(tmp_path, server):
  """A real TFDS download from a local server answering 404: one line naming the file, no .tmp left."""
  dl = tfds.download.DownloadManager(download_dir=str(tmp_path / "downloads"), dataset_name="xnn_cifar10")
  url = f"{server}/cifar-10-binary.tar.gz"
  with pytest.raises(DataError) as e:
    common.fetch(dl, url)
  text = one_line(e)
  assert url in text and "cifar-10-binary.tar.gz in --config.data.manual_dir" in text
  assert not [p for p in (tmp_path / "downloads").rglob("*") if ".tmp." in p.name]


# --- corrupt archives ----------------------------------------------------------------------------


def write_cifar10(path, labels=None) -> bytes:
  """A small archive in the layout of cifar-10-binary.tar.gz (3 train images per batch, 4 test); its bytes."""
  rng = np.random.default_rng(0)
  with tarfile.open(path, "w:gz") as tar:
    for name, n in [*((f"data_batch_{i}.bin", 3) for i in range(1, 6)), ("test_batch.bin", 4)]:
      labs = rng.integers(0, 10, n) if labels is None or name != "data_batch_1.bin" else labels
      data = _cifar_bytes(labs, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), 1)
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_cifar_archive_is_named(damage, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  archive = manual / "cifar-10-binary.tar.gz"
  data = write_cifar10(archive)
  archive.write_bytes(data[:len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
  with pytest.raises(DataError) as e:
    datasets.load_dataset(data_cfg(name="cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(manual)))
  text = one_line(e)
  assert text.startswith(f"{archive} is not a readable tar.gz archive") and "cifar-10-binary.tar.gz from" in text
  assert not [p for p in leftovers(tmp_path / "data") if "incomplete" in p]


def test_cifar_label_out_of_range_is_named(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  write_cifar10(manual / "cifar-10-binary.tar.gz", labels=np.array([12, 3, 12]))
  with pytest.raises(DataError, match=r"data_batch_1.bin: labels must be in \[0, 10\): label 12 appears in 2 "):
    datasets.load_dataset(data_cfg(name="cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(manual)))


def test_truncated_mnist_file_is_named(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  for fname, shape in (("train-images-idx3-ubyte.gz", (4, 28, 28)), ("train-labels-idx1-ubyte.gz", (4,)),
                       ("t10k-images-idx3-ubyte.gz", (2, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (2,))):
    _idx(np.ones(shape), manual / fname)
  bad = manual / "train-images-idx3-ubyte.gz"
  bad.write_bytes(bad.read_bytes()[:-30])
  with pytest.raises(DataError) as e:
    datasets.load_dataset(data_cfg(name="mnist", data_dir=str(tmp_path / "data"), manual_dir=str(manual)))
  assert one_line(e).startswith(f"{bad} is not a readable gzip file")
  with gzip.open(bad, "wb") as f:   # a gzip file that is not IDX
    f.write(b"not an idx file")
  with pytest.raises(DataError, match="is not an unsigned-byte IDX file"):
    datasets.load_dataset(data_cfg(name="mnist", data_dir=str(tmp_path / "data"), manual_dir=str(manual)))


# --- image folders -------------------------------------------------------------------------------


def make_folder(root, layout: dict[str, dict[str, int]], fmt: str = "png", seed: int = 0) -> None:
  """root/<split>/<class>/<i>.<fmt>: ``layout[split][class]`` random 12x10 images."""
  rng = np.random.default_rng(seed)
  for split, classes in layout.items():
    for cls, n in classes.items():
      d = root / split / cls
      d.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(d / f"{i}.{fmt}")


def folder_cfg(tmp_path, root):
  return data_cfg(name="image_folder", root=str(root), data_dir=str(tmp_path / "data"), image_size=8)


def test_image_folder_is_prepared_again_when_its_contents_change(tmp_path):
  """Adding a class, then changing one image, each gives a new preparation (no stale copy)."""
  root = tmp_path / "imgs"
  make_folder(root, {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
  ds = datasets.load_dataset(folder_cfg(tmp_path, root))
  assert (ds.num_classes, len(ds.train), len(ds.test)) == (2, 4, 2)
  make_folder(root, {"train": {"emu": 3}, "test": {"emu": 1}}, seed=1)
  ds = datasets.load_dataset(folder_cfg(tmp_path, root))
  assert (ds.num_classes, len(ds.train), len(ds.test)) == (3, 7, 3)
  assert sorted(int(ds.train[i]["label"]) for i in range(7)) == [0, 0, 1, 1, 2, 2, 2]
  before = {ds.test[i]["image"].tobytes() for i in range(3)}
  Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "test" / "cat" / "0.png")
  os.utime(root / "test" / "cat" / "0.png", ns=(1, 1))      # even an older mtime is a change
  ds = datasets.load_dataset(folder_cfg(tmp_path, root))
  after = {ds.test[i]["image"].tobytes() for i in range(3)}
  assert np.zeros((8, 8, 3), np.uint8).tobytes() in after - before
  assert len([p for p in (tmp_path / "data" / "xnn_image_folder").iterdir()]) == 3


def test_image_folder_refuses_empty_and_test_only_classes(tmp_path):
  root = tmp_path / "imgs"
  make_folder(root, {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1, "fox": 2, "owl": 1}})
  with pytest.raises(DataError) as e:
    datasets.load_dataset(folder_cfg(tmp_path, root))
  assert "classes missing from train/ (test/: ['fox', 'owl'])" in one_line(e)
  for cls in ("fox", "owl"):
    for f in (root / "test" / cls).iterdir():
      f.unlink()
    (root / "test" / cls).rmdir()
  (root / "train" / "bird").mkdir()
  (root / "train" / "bird" / "notes.txt").write_text("not an image")
  with pytest.raises(DataError) as e:
    datasets.load_dataset(folder_cfg(tmp_path, root))
  assert "class folder(s) ['train/bird'] hold no images" in one_line(e)


def test_image_folder_allows_a_class_missing_from_test_but_needs_the_split(tmp_path):
  root = tmp_path / "imgs"
  make_folder(root, {"train": {"cat": 2, "dog": 2}, "test": {"dog": 1}})
  ds = datasets.load_dataset(folder_cfg(tmp_path, root))
  assert (ds.num_classes, len(ds.test), int(ds.test[0]["label"])) == (2, 1, 1)
  with pytest.raises(DataError, match=r"has no split 'valid' \(it has \['test', 'train'\]\)"):
    datasets.load_dataset(data_cfg(name="image_folder", root=str(root), data_dir=str(tmp_path / "data"),
                                   image_size=8, test_split="valid"))


def test_truncated_jpeg_is_named(tmp_path):
  root = tmp_path / "imgs"
  make_folder(root, {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}}, fmt="jpg")
  bad = root / "train" / "dog" / "1.jpg"
  data = bad.read_bytes()
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError) as e:
    datasets.load_dataset(folder_cfg(tmp_path, root))
  text = one_line(e)
  assert text.startswith(f"{bad} is not a readable image") and "truncated" in text.lower()
  assert not [p for p in leftovers(tmp_path / "data") if "incomplete" in p]


# --- labels --------------------------------------------------------------------------------------


def arrays(y_train, y_test, **kw):
  return datasets.from_arrays(np.zeros((len(y_train), 4, 4), np.uint8), np.asarray(y_train),
                              np.zeros((len(y_test), 4, 4), np.uint8), np.asarray(y_test), **kw)


def test_from_arrays_checks_labels():
  with pytest.raises(DataError) as e:
    arrays([0, -1, 2, -1], [0, 1])
  assert one_line(e) == ("train labels must be in [0, 3), the 3 classes of dataset arrays: "
                         "label -1 appears in 2 examples (split train)")
  with pytest.raises(DataError, match=r"test labels must be in \[0, 10\), .*: label 12 appears in 3 examples "
                                      r"\(split test\); 2 labels are out of range, in 4 examples"):
    arrays([0, 1], [12, 12, 10, 12, 3], num_classes=10)
  ds = arrays([0, 4, 1], [2, 1])
  assert ds.num_classes == 5
  with pytest.raises(DataError, match=r"\[0, 3\), the model's 3 classes: label 4 appears in 1 examples"):
    ds.check_labels(3, against="the model's 3 classes")
  ds.check_labels(5)


def test_per_step_labels_count_examples_and_skip_masked_steps():
  x = np.zeros((3, 4, 2), np.float32)
  y = np.array([[1, 1, -1, -1], [0, 1, 1, -1], [0, 0, 0, 0]])
  mask = (y >= 0).astype(np.float32)
  ds = datasets.from_arrays(x, y, x, y, masks=(mask, mask), kind="sequence")
  assert ds.num_classes == 2
  with pytest.raises(DataError, match="label -1 appears in 2 examples"):
    datasets.from_arrays(x, y, x, y, kind="sequence", num_classes=2)
  with pytest.raises(DataError, match=r"\[0, 1\).*label 1 appears in 2 examples \(split train\)"):
    ds.check_labels(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 12), min_size=1, max_size=40), st.integers(1, 10))
def test_check_labels_matches_a_direct_count(labels, num_classes):
  """Raises exactly when a label is outside [0, n), naming the worst one and its true count."""
  y = np.array(labels)
  ds = datasets.Dataset("p", datasets.ArraySource({"label": y}), datasets.ArraySource({"label": y[:1]}), 12)
  bad = [v for v in labels if not 0 <= v < num_classes]
  if not bad:
    ds.check_labels(num_classes)
    return
  worst = max(bad) if max(bad) >= num_classes else min(bad)
  with pytest.raises(DataError, match=rf": label {worst} appears in {labels.count(worst)} examples \(split train\)"):
    ds.check_labels(num_classes)


def test_tfds_labels_are_read_once_and_checked_against_the_model(tmp_path):
  """Digits' labels (TFDS ArrayRecord) against 5 classes: the largest, 9, is named; the count is kept on disk."""
  ds = datasets.load_dataset(data_cfg(data_dir=str(tmp_path / "data")))
  values, counts = ds.label_stats("train")
  assert values.tolist() == list(range(10)) and counts.sum() == 1437
  with pytest.raises(DataError) as e:
    ds.check_labels(5, against="the model's 5 classes (model.num_classes=5)")
  text = one_line(e)
  assert text.startswith("train labels must be in [0, 5), the model's 5 classes (model.num_classes=5): label 9 "
                         f"appears in {counts[9]} examples (split train); 5 labels are out of range, in "
                         f"{counts[5:].sum()} examples")
  stored = sorted((tmp_path / "data" / "xnn_digits" / "1.0.0").glob("xnn_labels.*.json"))
  assert len(stored) == 2
  # A fresh load reads the stored counts instead of the records: a stored label 12 is what it reports.
  for path in stored:
    path.write_text(path.read_text().replace('"values": [0,', '"values": [12,'))
  with pytest.raises(DataError, match=r"label 12 appears"):
    datasets.load_dataset(data_cfg(data_dir=str(tmp_path / "data")))
  for path in stored:
    path.write_text(path.read_text().replace('"fingerprint": "', '"fingerprint": "stale'))
  datasets.load_dataset(data_cfg(data_dir=str(tmp_path / "data")))   # stale counts are read again, fine


def test_sequence_task_labels_against_the_model():
  ds = datasets.load_dataset(data_cfg(name="copy", num_train=64, num_test=16, seq_length=5, vocab=6))
  assert ds.num_classes == 10
  ds.check_labels(10)
  with pytest.raises(DataError, match=r"train labels must be in \[0, 4\).*label 9 appears in \d+ examples"):
    ds.check_labels(4)
