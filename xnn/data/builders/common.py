"""Shared pieces of the TF-free builders: features, archives, offline checks, data errors."""

from __future__ import annotations

import glob
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from xnn.data.errors import DataError

__all__ = ["DataError", "check_label_range", "fetch", "image_features", "probe", "require_archives"]

# Set to 1 to never download: a missing archive is then an error at once, without a network probe.
OFFLINE_ENV = "XNN_OFFLINE"
PROBE_TIMEOUT_S = 3.0


def image_features(shape: tuple[int, int, int], num_classes: int,
                   names: list[str] | None = None) -> tfds.features.FeaturesDict:
  """uint8 image tensor + class label, encoded without TensorFlow."""
  label = tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(num_classes=num_classes)
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
      "label": label,
  })


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
  """Why ``url`` cannot be downloaded now, or None when one HEAD request succeeds within ``timeout`` seconds.

  One request, no retries, through the proxies urllib finds in the environment; a 4xx/5xx
  answer other than 405/501 counts as unreachable (an intercepting proxy answers so). Name resolution has
  no timeout of its own, so the request runs in a daemon thread.
  """
  host = urllib.parse.urlsplit(url).hostname
  result: list[str | None] = []

  def head():
    try:
      with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
        result.append(None)
    except urllib.error.HTTPError as e:   # 405/501: a live server without HEAD
      result.append(None if e.code in (405, 501) else f"{host} answered HTTP {e.code} for {url}")
    except (OSError, ValueError) as e:
      reason = getattr(e, "reason", e)
      result.append(f"{host} cannot be reached ({type(reason).__name__}: {reason})")

  thread = threading.Thread(target=head, daemon=True)
  thread.start()
  thread.join(timeout)
  return result[0] if result else f"{host} did not answer within {timeout:g} s"


def manual_dir_for(manual_dir: str | None, data_dir: str) -> str:
  """The folder searched for original archives: ``data.manual_dir``, else TFDS's ``<data_dir>/downloads/manual``."""
  return os.path.expanduser(manual_dir) if manual_dir else os.path.join(data_dir, "downloads", "manual")


def _downloaded(download_dir: str, dataset: str, fname: str) -> bool:
  """Whether TFDS's download cache holds ``fname`` (stored as <sanitised url><hash><suffix>)."""
  stem, suffix = fname.split(".", 1) if "." in fname else (fname, "")
  for path in glob.glob(os.path.join(download_dir, dataset, f"*{stem}*")):
    if ".tmp." not in path and not path.endswith(".INFO") and path.endswith(suffix):
      return True
  return False


def require_archives(dataset: str, archives: dict[str, str], manual_dir: str | None, data_dir: str) -> None:
  """Fails at once when an archive is neither in the manual dir nor downloaded and cannot be downloaded.

  ``archives`` maps each original file name to its URL. Downloading needs ``$XNN_OFFLINE``
  unset and one HEAD request for the first missing file to succeed (:func:`probe`, no retries).
  """
  folder = manual_dir_for(manual_dir, data_dir)
  download_dir = os.path.join(data_dir, "downloads")
  missing = {f: u for f, u in archives.items()
             if not os.path.isfile(os.path.join(folder, f)) and not _downloaded(download_dir, dataset, f)}
  if not missing:
    return
  first = next(iter(missing.values()))
  if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
    why = f"${OFFLINE_ENV} is set"
  else:
    why = probe(first)
    if why is None:
      return
  where = f"data.manual_dir={manual_dir!r}" if manual_dir else f"data.manual_dir (empty, so TFDS's {folder!r})"
  name = dataset.removeprefix("xnn_")
  files, urls = list(missing), list(missing.values())
  bases = {u.rsplit("/", 1)[0] + "/" for u in urls}
  source = bases.pop() if len(urls) > 1 and len(bases) == 1 else " ".join(urls)
  it = "them" if len(files) > 1 else "it"
  raise DataError(f"{name} needs {', '.join(files)}, not in {where}, and {why}: download {it} from {source} "
                  f"on a machine with network and put {it} in that folder (or one given as "
                  "--config.data.manual_dir=DIR)")


def check_archives(builder: Any, dl_manager: tfds.download.DownloadManager) -> None:
  """:func:`require_archives` for ``builder`` (its ``ARCHIVES``), with the download manager's folders.

  Called first in a builder's ``_split_generators``, i.e. only when the data is really prepared.
  ``builder.manual_dir_setting`` is ``data.manual_dir`` as configured (None: TFDS's default).
  """
  manual = getattr(builder, "manual_dir_setting", None)
  data_dir = os.path.dirname(os.fspath(dl_manager.download_dir).rstrip("/"))
  require_archives(builder.name, builder.ARCHIVES, manual, data_dir)


def fetch(dl_manager: tfds.download.DownloadManager, url: str) -> str:
  """The archive at `url`: from the manual dir when it is there, else downloaded.

  Machines without internet put the original file (same name as the URL's last
  part) in `manual_dir` (`--config.data.manual_dir`, or TFDS's default
  `<data_dir>/downloads/manual`). A failed download leaves no temporary files.
  """
  fname = url.rsplit("/", 1)[-1]
  try:
    manual = dl_manager.manual_dir
  except (AssertionError, ValueError, OSError):   # no manual dir configured or present
    manual = None
  if manual is not None:
    path = os.path.join(os.fspath(manual), fname)
    if os.path.exists(path):
      return path
  try:
    return os.fspath(dl_manager.download(url))
  except Exception as e:  # any download failure: clean up, then one line naming the file and the way out
    stem = fname.split(".", 1)[0]
    pattern = os.path.join(os.fspath(dl_manager.download_dir), "**", f"*{stem}*.tmp.*")
    for tmp in glob.glob(pattern, recursive=True):
      if os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
      else:
        os.remove(tmp)
    raise DataError(f"downloading {url} failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"put {fname} in --config.data.manual_dir=DIR instead") from e


def check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Labels read from an original file must lie in [0, num_classes)."""
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    values, counts = np.unique(labels[bad], return_counts=True)
    raise DataError(f"{where}: labels must be in [0, {num_classes}): label {int(values[-1])} appears in "
                    f"{int(counts[-1])} records ({int(bad.sum())} records out of range in all)")


MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Without network, put the dataset's original files (named as in its download URLs) in "
    "the manual dir: --config.data.manual_dir=DIR (or <data_dir>/downloads/manual).")
