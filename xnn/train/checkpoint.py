"""Checkpoints with orbax: train state + input position + run bookkeeping, verified, keep-last-N.

Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never looks like a checkpoint. Orbax detects structural damage only
(a truncated or missing file): the one checksum in its tensorstore spec is zarr3's
crc32c of the shard index, none covers the chunk data, and four bytes flipped inside an
array file load silently. Every step therefore also gets ``xnn_manifest.json``,
written atomically after orbax finished it:

* ``files``: size and digest of every file of the step folder;
* ``arrays``: a digest of every array of the train state (dtype, shape, bytes);
* ``data``: a digest of each process's input position (the grain iterator's state, or
  the JSON position of a device-resident run); ``meta``: a digest of the bookkeeping item;
* a last line with the digest of everything above it, so the manifest checks itself.

``restore_latest`` verifies the files before loading and the restored values after;
a step that fails (or has no manifest: unverified) is skipped with one warning line,
and the newest one that verifies is loaded.

The digest (named in the manifest) is XXH3-128 when the ``xxhash`` package is
installed, else SHA-256. A non-cryptographic 128-bit hash is enough against accidental
corruption (whoever can rewrite a file can rewrite the manifest too), and of the four
offered it is the one that stays smallest next to the save (``benchmarks/checkpoint_digest.py``;
the measurements are in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import time
import warnings
import zlib
from concurrent import futures
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

try:
  import xxhash
except ImportError:  # optional: SHA-256 (hashlib) otherwise
  xxhash = None

MANIFEST = "xnn_manifest.json"
ALGORITHMS = ("xxh3_128", "sha256", "blake2b", "crc32")
ALGORITHM = "xxh3_128" if xxhash is not None else "sha256"
_FORMAT = 1
_QUIET_LOGGERS = ("absl", "orbax", "tensorstore", "asyncio", "jax._src.distributed")


class CheckpointError(ValueError):
  """No checkpoint of a run verifies (each step and why in the message)."""


class Manager(ocp.CheckpointManager):
  """An orbax manager that keeps the newest ``keep`` *verified* steps (``save`` deletes the rest).

  Orbax's own ``max_to_keep`` would delete older steps before the new one has its
  manifest, so a kill in between could leave no verified checkpoint at all.
  """

  def __init__(self, directory: str, keep: int | None, **kwargs):
    super().__init__(directory, **kwargs)
    self.keep = keep


def create_manager(workdir: str, keep: int) -> Manager:
  options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False)
  return Manager(os.path.join(os.path.abspath(workdir), "checkpoints"), keep,
                 options=options, item_names=("state", "data", "meta"))


def iterator_save_args(data_iter: Any) -> Any:
  """The input position of a streaming run: its grain iterator's state."""
  return grain.checkpoint.CheckpointSave(data_iter)


def iterator_restore_args(data_iter: Any) -> Any:
  return grain.checkpoint.CheckpointRestore(data_iter)


def position_save_args(step: int) -> Any:
  """The input position of a device-resident run: the step (its batches are a function of it)."""
  return ocp.args.JsonSave({"mode": "device_resident", "step": int(step)})


def position_restore_args() -> Any:
  return ocp.args.JsonRestore()


# --- digests --------------------------------------------------------------------------------


class _Crc32:
  """zlib's CRC-32 behind hashlib's interface (``update``/``hexdigest``)."""

  def __init__(self):
    self._crc = 0

  def update(self, data) -> None:
    self._crc = zlib.crc32(data, self._crc)

  def hexdigest(self) -> str:
    return f"{self._crc:08x}"


def hasher(algorithm: str = ALGORITHM):
  """A new hash object of one of ``ALGORITHMS``: xxHash's XXH3-128, hashlib's SHA-256 or BLAKE2b, zlib's CRC-32."""
  if algorithm not in ALGORITHMS:
    raise ValueError(f"unknown digest {algorithm!r}, expected one of {', '.join(ALGORITHMS)}")
  if algorithm == "crc32":
    return _Crc32()
  if algorithm == "xxh3_128":
    if xxhash is None:
      raise ValueError("digest xxh3_128 needs the xxhash package")
    return xxhash.xxh3_128()
  return hashlib.new(algorithm)


def _host_array(x: Any) -> np.ndarray:
  """This process's full copy of ``x``: one replica of a replicated array, a gather otherwise."""
  if isinstance(x, jax.Array):
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    if not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def array_digest(x: Any, algorithm: str = ALGORITHM) -> str:
  """Digest of an array's dtype, shape and bytes (C order)."""
  a = np.ascontiguousarray(_host_array(x))
  h = hasher(algorithm)
  h.update(f"{a.dtype.str}{a.shape}".encode())
  h.update(a.reshape(-1).view(np.uint8).data)
  return h.hexdigest()


def tree_digests(tree: Any, prefix: str = "state", algorithm: str = ALGORITHM) -> dict[str, str]:
  """``{path: digest}`` for every leaf (path as ``jax.tree_util.keystr``, after ``prefix``)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  arrays = [_host_array(x) for _, x in leaves]   # gathers are collectives: in order, on this thread
  with futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
    digests = list(pool.map(lambda a: array_digest(a, algorithm), arrays))
  return {prefix + jax.tree_util.keystr(p): d for (p, _), d in zip(leaves, digests)}


def json_digest(obj: Any, algorithm: str = ALGORITHM) -> str:
  """Digest of ``obj`` as canonical JSON, as it reads back (keys as strings, sorted); bytes as they are."""
  if not isinstance(obj, bytes):
    obj = json.dumps(json.loads(json.dumps(obj)), sort_keys=True, separators=(",", ":")).encode()
  h = hasher(algorithm)
  h.update(obj)
  return h.hexdigest()


def _data_state(item: Any) -> Any:
  """The input position as data: a grain iterator's ``get_state()``, or the JSON item itself."""
  return item.get_state() if hasattr(item, "get_state") else item


def file_digests(folder: str, algorithm: str = ALGORITHM) -> dict[str, list]:
  """``{relative path: [size, digest]}`` of every file under ``folder`` except the manifest."""
  paths = sorted(os.path.relpath(os.path.join(root, f), folder)
                 for root, _, files in os.walk(folder) for f in files)
  paths = [p for p in paths if p != MANIFEST and not p.startswith(MANIFEST + ".")]

  def one(rel):
    with open(os.path.join(folder, rel), "rb") as f:
      return [os.fstat(f.fileno()).st_size, hashlib.file_digest(f, lambda: hasher(algorithm)).hexdigest()]

  with futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
    return dict(zip(paths, pool.map(one, paths)))


# --- the manifest ---------------------------------------------------------------------------


def write_manifest(folder: str, body: dict) -> None:
  """``body`` as JSON plus a last line with its digest, written atomically (temp file, fsync, rename)."""
  text = json.dumps(body, indent=1, sort_keys=True)
  h = hasher(body["algorithm"])
  h.update(text.encode())
  tmp = os.path.join(folder, f"{MANIFEST}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    f.write(f"{text}\n{body['algorithm']} {h.hexdigest()}\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(folder, MANIFEST))
  with contextlib.suppress(OSError):       # make the rename durable where directories can be synced
    fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def read_manifest(folder: str) -> tuple[dict | None, str | None]:
  """(manifest, None), or (None, why it is unusable)."""
  try:
    with open(os.path.join(folder, MANIFEST), "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    return None, "missing manifest"
  text, _, trailer = raw.rstrip(b"\n").rpartition(b"\n")
  algorithm, _, digest = trailer.decode("ascii", "replace").partition(" ")
  try:
    h = hasher(algorithm)
  except ValueError as e:
    return None, f"file {MANIFEST}: {e}"
  h.update(text)
  if h.hexdigest() != digest:
    return None, f"file {MANIFEST}: digest mismatch"
  try:
    manifest = json.loads(text)
  except ValueError:
    return None, f"file {MANIFEST}: not valid JSON"
  if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
    return None, f"file {MANIFEST}: not a format-{_FORMAT} manifest"
  return manifest, None


def check_files(folder: str, manifest: dict) -> str | None:
  """The first file of ``folder`` that differs from the manifest, and how; None if all match."""
  expected = manifest["files"]
  found = file_digests(folder, manifest["algorithm"])
  for rel in sorted(set(expected) | set(found)):
    if rel not in found:
      return f"file {rel}: missing"
    if rel not in expected:
      return f"file {rel}: not in the manifest"
    if found[rel][0] != expected[rel][0]:
      return f"file {rel}: size {found[rel][0]}, expected {expected[rel][0]}"
    if found[rel][1] != expected[rel][1]:
      return f"file {rel}: digest mismatch"
  return None


def verify_files(folder: str) -> tuple[dict | None, str | None]:
  """(manifest, None) when the step folder's manifest and every file verify, else (manifest or None, why)."""
  manifest, why = read_manifest(folder)
  return manifest, why if why is not None else check_files(folder, manifest)


def check_values(manifest: dict, restored: dict) -> str | None:
  """The first restored array, input position or meta item whose digest differs from the saved one."""
  algorithm = manifest["algorithm"]
  arrays = tree_digests(restored["state"], algorithm=algorithm)
  for name in manifest["arrays"]:
    if name not in arrays:
      return f"{name}: not restored"
    if arrays[name] != manifest["arrays"][name]:
      return f"{name}: digest mismatch"
  if extra := sorted(set(arrays) - set(manifest["arrays"])):
    return f"{extra[0]}: not in the manifest"
  saved = manifest["data"]     # per process; a JSON position is the same on all (and the process count may change)
  if json_digest(_data_state(restored["data"]), algorithm) != saved.get(str(jax.process_index()), saved["0"]):
    return "data iterator state: digest mismatch"
  if "meta" in manifest and json_digest(restored["meta"], algorithm) != manifest["meta"]:
    return "meta: digest mismatch"
  return None


# --- multi-host helpers ---------------------------------------------------------------------


def _gather_hex(digest: str) -> dict[str, str]:
  """``{process index: digest}`` of every process (a collective when there are several)."""
  if jax.process_count() == 1:
    return {"0": digest}
  rows = multihost_utils.process_allgather(np.frombuffer(bytes.fromhex(digest), np.uint8))
  return {str(i): bytes(np.asarray(r)).hex() for i, r in enumerate(rows)}


def _agree(why: str | None) -> str | None:
  """``why`` on this process, or a reason if any other process found a problem (all skip together)."""
  if jax.process_count() == 1:
    return why
  bad = multihost_utils.process_allgather(np.array([why is not None], np.int32))
  if why is None and np.any(bad):
    return "does not verify on another process"
  return why


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def step_folder(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


# --- save -----------------------------------------------------------------------------------


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_args: Any,
         meta: dict | None = None) -> None:
  """Saves the train state, the input position (the input's ``save_args(step)``) and ``meta``, then the manifest.

  ``meta`` is small JSON run bookkeeping. Every process computes the digests (the state
  is replicated); process 0 writes the manifest. With a ``Manager``, the verified steps
  beyond the newest ``keep`` are deleted afterwards.
  """
  meta, algorithm = dict(meta or {}), ALGORITHM
  arrays = tree_digests(state, algorithm=algorithm)
  data = _gather_hex(json_digest(_data_state(data_args.item), algorithm))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=data_args,
                                             meta=ocp.args.JsonSave(meta)), force=True)
  manager.wait_until_finished()
  folder = step_folder(manager, step)
  if jax.process_index() == 0:
    write_manifest(folder, {"format": _FORMAT, "algorithm": algorithm, "step": int(step), "arrays": arrays,
                            "data": data, "meta": json_digest(meta, algorithm),
                            "files": file_digests(folder, algorithm)})
  _sync(f"xnn_checkpoint_manifest_{step}")
  _delete_beyond_keep(manager)


def _delete_beyond_keep(manager: ocp.CheckpointManager) -> None:
  """Keeps the newest ``manager.keep`` steps that have a manifest; deletes every other step."""
  keep = getattr(manager, "keep", None)
  if not keep:
    return
  steps = sorted(manager.all_steps(), reverse=True)
  verified = [s for s in steps if os.path.exists(os.path.join(step_folder(manager, s), MANIFEST))]
  for s in steps:
    if s not in verified[:keep]:
      manager.delete(s)


# --- restore --------------------------------------------------------------------------------


def _is_leftover(report: str) -> bool:
  """Whether a report is one a failed orbax restore leaves behind (see ``_Leftovers``)."""
  return report == "Event loop is closed" or (report.startswith("Task exception was never retrieved")
                                              and "orbax" in report)


class _Leftovers(logging.Filter):
  """Drops the reports a failed orbax restore leaves behind; passes on every other one.

  A failed restore abandons the tensorstore reads still in flight. As they end, up to
  milliseconds after the restore returned, their callbacks raise "Event loop is closed"
  on the asyncio loop orbax has closed (``sys.unraisablehook``), and their tasks, once
  collected, log "Task exception was never retrieved" (the ``asyncio`` logger): each a
  traceback, ~250 lines for a ResNet. Installed as both after the first failed restore.
  """

  def __init__(self, previous_hook):
    super().__init__()
    self.previous_hook = previous_hook

  def __call__(self, unraisable) -> None:
    if not _is_leftover(str(unraisable.exc_value)):
      self.previous_hook(unraisable)

  def filter(self, record: logging.LogRecord) -> bool:
    return not _is_leftover(record.getMessage())


def _drop_leftovers() -> None:
  if not isinstance(sys.unraisablehook, _Leftovers):
    sys.unraisablehook = _Leftovers(sys.unraisablehook)
    logging.getLogger("asyncio").addFilter(sys.unraisablehook)


@contextlib.contextmanager
def quiet():
  """Silences orbax/absl/tensorstore/asyncio logging, warnings and unraisable-exception reports inside.

  Yields a list that counts the reports swallowed (``_settle`` waits for it to stop growing).
  """
  swallowed: list[int] = []
  loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
  levels = [lg.level for lg in loggers]
  hook = sys.unraisablehook
  for lg in loggers:
    lg.setLevel(logging.CRITICAL + 1)
  sys.unraisablehook = lambda unraisable: swallowed.append(1)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      yield swallowed
    finally:
      sys.unraisablehook = hook
      for lg, level in zip(loggers, levels):
        lg.setLevel(level)


def _settle(swallowed: list, calm_rounds: int = 3, pause_s: float = 0.02, limit_s: float = 2.0) -> None:
  """Collects garbage until a failed restore's abandoned reads stop reporting (at most ``limit_s``)."""
  deadline, calm, seen = time.monotonic() + limit_s, 0, -1
  while calm < calm_rounds and time.monotonic() < deadline:
    gc.collect()
    calm, seen = (calm + 1, seen) if len(swallowed) == seen else (0, len(swallowed))
    time.sleep(pause_s)


def _try_restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                 data_restore_args: Callable[[], Any]) -> tuple[dict | None, str | None]:
  """(restored items, None) if ``step`` verifies before and after loading, else (None, why)."""
  manifest, why = verify_files(step_folder(manager, step))
  why = _agree(why)
  if why is not None:
    return None, why
  items = {"state": ocp.args.StandardRestore(abstract_state), "data": data_restore_args()}
  if "meta" in manifest:
    items["meta"] = ocp.args.JsonRestore()
  restored = None
  with quiet() as swallowed:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # noqa: BLE001 -- any failure means this step is unusable
      lines = str(e).splitlines()
      why = f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
      _drop_leftovers()
      _settle(swallowed)
  why = _agree(why if why is not None else check_values(manifest, restored))
  return (None, why) if why is not None else (restored, None)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   data_restore_args: Callable[[], Any]) -> tuple[int, Any, dict] | None:
  """(step, state, meta) of the newest checkpoint that verifies, or None if there is none.

  ``data_restore_args()`` (the input's ``restore_args``) restores the input position (a
  grain iterator in place); ``meta`` is ``{}`` when the checkpoint has none. Each newer
  step that does not verify gets one warning line and is deleted once an older one has
  restored. Steps newer than every step with a manifest and without one themselves are
  saves a kill interrupted (the manifest is written last): when no other step exists,
  they are deleted with a warning and the run starts afresh (None). Raises
  ``CheckpointError`` when there are complete checkpoints and none verifies.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  complete = checkpoint_steps(os.path.dirname(str(manager.directory)), complete=True)
  if steps and not complete:
    if jax.process_index() == 0:
      print(f"WARNING: the checkpoint{'s' if len(steps) > 1 else ''} at step {', '.join(map(str, steps))} in "
            f"{manager.directory} {'were' if len(steps) > 1 else 'was'} interrupted while being saved (no "
            "manifest); starting afresh", flush=True)
    _sync("xnn_checkpoint_interrupted_listed")
    for step in steps:
      manager.delete(step)
    return None
  bad: list[tuple[int, str]] = []
  for step in steps:
    restored, why = _try_restore(manager, step, abstract_state, data_restore_args)
    if restored is None:
      bad.append((step, why))
      continue
    for b, reason in bad:     # a later save at these steps must not collide with the unusable ones
      if jax.process_index() == 0:
        print(f"WARNING: checkpoint at step {b} does not verify ({reason}); falling back to step {step}", flush=True)
      manager.delete(b)
    return step, restored["state"], dict(restored.get("meta") or {})
  if bad:
    listed = ", ".join(f"step {s} ({why})" for s, why in bad)
    raise CheckpointError(f"no checkpoint in {manager.directory} verifies: {listed}")
  return None


# --- weights of another run (train.init_from, xnn eval) -----------------------------------


def checkpoint_steps(workdir: str, complete: bool = False) -> list[int]:
  """Steps of the checkpoints in ``workdir/checkpoints`` (orbax names them by step), ascending; ``complete``:
  only those whose manifest has been written (``xnn_manifest.json``, the last file of a save)."""
  folder = os.path.join(workdir, "checkpoints")
  try:
    steps = sorted(int(d) for d in os.listdir(folder) if d.isdigit())
  except (FileNotFoundError, NotADirectoryError):
    return []
  return [s for s in steps if os.path.exists(os.path.join(folder, str(s), MANIFEST))] if complete else steps


WEIGHTS = ("params", "batch_stats")
EMA_WEIGHTS = ("ema_params", "ema_batch_stats")      # the moving averages (train.ema_decay > 0)


def restore_weights(workdir: str, step: int | None = None, warn: Callable[[str], None] | None = None,
                    ema: bool = False) -> tuple[int, dict[str, Any]]:
  """(step, ``{"params": ..., "batch_stats": ...}``) of the newest checkpoint of the run in
  ``workdir`` that verifies (or of ``step``, which must verify), as NumPy arrays, whatever its
  optimiser; read-only: nothing is written there, and a run still training may be read.
  ``ema``: the moving averages of the weights instead (``train.ema_decay``), under the same keys.

  Each newer step that does not verify goes to ``warn`` (default: a ``WARNING:`` line).
  Raises ``CheckpointError`` (one line, each step and why) when none verifies.
  """
  folder = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = checkpoint_steps(workdir)[::-1]
  if not steps:
    raise CheckpointError(f"{workdir!r} has no checkpoint (none in {folder})")
  if step is not None and step not in steps:
    raise CheckpointError(f"{workdir!r} has no checkpoint at step {step}; it has "
                          f"step{'s' if len(steps) > 1 else ''} {', '.join(map(str, sorted(steps)))}")
  warn = warn or (lambda text: print(f"WARNING: {text}", flush=True))
  bad: list[tuple[int, str]] = []
  with quiet():       # orbax warns that a read-only manager saves nothing
    options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(folder, options=options, item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  with manager:
    for s in [step] if step is not None else steps:
      weights, why = _try_restore_weights(manager, s, EMA_WEIGHTS if ema else WEIGHTS)
      if weights is not None:
        for b, reason in bad:
          warn(f"checkpoint at step {b} does not verify ({reason}); using step {s} of {workdir}")
        return s, weights
      bad.append((s, why))
  if step is not None:
    raise CheckpointError(f"the checkpoint at step {step} of {workdir!r} does not verify ({bad[0][1]})")
  raise CheckpointError(f"no checkpoint of {workdir!r} verifies: " + ", ".join(f"step {s} ({w})" for s, w in bad))


def _try_restore_weights(manager: ocp.CheckpointManager, step: int,
                         items: tuple[str, str] = WEIGHTS) -> tuple[dict | None, str | None]:
  """The weights (``items``: parameters and BatchNorm statistics, or their moving averages) of ``step``,
  verified against its manifest (files before, arrays after), as ``{"params", "batch_stats"}``; or (None, why)."""
  manifest, why = verify_files(step_folder(manager, step))
  if why is not None:
    return None, why
  one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with quiet() as swallowed:
    try:
      saved = manager.item_metadata(step)["state"]
      if saved.get(items[0]) is None:
        return None, f"it holds no {items[0]}"
      target = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), saved[k])
                for k in items if saved.get(k) is not None}
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(item=target, partial_restore=True)))["state"]
    except Exception as e:  # noqa: BLE001 -- any failure means this step is unusable
      _drop_leftovers()
      _settle(swallowed)
      return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
  weights = {k: jax.tree.map(np.asarray, restored[k]) for k in target}
  digests = {}
  for k in target:
    digests.update(tree_digests(weights[k], prefix=f"state.{k}", algorithm=manifest["algorithm"]))
  for name, digest in digests.items():
    if manifest["arrays"].get(name) != digest:
      return None, f"{name}: digest mismatch"
  return {plain: weights[k] for plain, k in zip(WEIGHTS, items) if k in weights}, None
