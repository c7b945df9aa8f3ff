"""The resume contract: when re-running ``xnn train`` on a workdir continues the run.

A run's identity is its resolved config minus ``MAY_CHANGE``: fields that say how
the run is watched, read, cached or kept, never what it computes. Re-running with
the same identity resumes from the newest verified checkpoint and ends where an
uninterrupted run would; re-running with any identity field changed is refused,
before anything is written, listing each field as ``old -> new``. Extending
``train.num_epochs`` / ``train.num_steps`` is allowed (the learning-rate schedule
is then laid out over the new length); shortening a run below its newest
checkpoint is not.

Besides the config, ``run.json`` records what the config left open and the
checkpoints depend on: the input mode ``train.device_resident="auto"`` resolved to
(a resumed ``auto`` run keeps it, so a run moved to another machine still restores)
and the device count (which may change on resume unless ``train.bn_stats`` is
``per_device``: the BatchNorm groups are then the devices).

A workdir whose ``final.json`` matches the config is finished: re-running it says
so and changes no file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from xnn.configs.default import get_config as default_config
from xnn.train.checkpoint import checkpoint_steps

# field -> why it may change when a run resumes
MAY_CHANGE = {
    "train.progress_bar": "display only",
    "train.progress_every_s": "display only",
    "train.log_every_steps": "how often train metrics are read back and logged",
    "train.eval_every_epochs": "when the test set is evaluated (and checkpoints taken by default)",
    "train.eval_batch_size": "evaluation batching",
    "train.checkpoint_every_steps": "when checkpoints are written",
    "train.keep_checkpoints": "how many checkpoints are kept",
    "train.compilation_cache": "where compiled programs are cached",
    "train.compilation_cache_min_s": "which compiled programs are cached",
    "train.compilation_cache_max_gb": "the compilation cache's size bound",
    "train.num_epochs": "the run's length: extend it to train on",
    "train.num_steps": "the run's length: extend it to train on",
    "train.device_resident": "checked against the input mode the run started in (run.json)",
    "train.device_resident_max_mb": "checked against the input mode the run started in (run.json)",
    "data.threads": "reader threads (the batch order is kept)",
    "data.prefetch": "batches read ahead",
}
LENGTH_FIELDS = ("train.num_epochs", "train.num_steps")
CONFIG, RUN, FINAL = "config.json", "run.json", "final.json"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{"train.batch_size": 64, "model.kwargs.shortcut": "B", ...}`` (lists as tuples)."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
  return out


def as_plain(cfg: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """The config as written to ``config.json`` and read back (JSON types)."""
  text = cfg.to_json_best_effort() if isinstance(cfg, ml_collections.ConfigDict) else json.dumps(cfg)
  return json.loads(text)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """``(field, old, new)`` for every identity field that differs; fields an older config lacks
  count as their default."""
  before = {**flatten(as_plain(default_config())), **flatten(old)}
  after = flatten(new)
  missing = object()
  out = []
  for key in sorted(set(before) | set(after)):
    if key in MAY_CHANGE:
      continue
    a, b = before.get(key, missing), after.get(key, missing)
    if a != b:
      out.append((key, "(unset)" if a is missing else a, "(unset)" if b is missing else b))
  return out


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, NotADirectoryError):
    return None
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} cannot be read ({e}); move the workdir aside or use another --workdir") from None


@dataclasses.dataclass
class Previous:
  """What an earlier segment of this run left in its workdir."""
  config: dict[str, Any]
  run: dict[str, Any]
  newest_step: int


def finished(workdir: str, cfg: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """``final.json`` if the run in ``workdir`` is finished with this config (same length too)."""
  final = _read_json(os.path.join(workdir, FINAL))
  old = _read_json(os.path.join(workdir, CONFIG))
  if final is None or old is None or "step" not in final:
    return None
  new = as_plain(cfg)
  before, after = flatten(old), flatten(new)
  same_length = all(before.get(k) == after.get(k) for k in LENGTH_FIELDS)
  if differences(old, new) or not same_length or final["step"] not in checkpoint_steps(workdir):
    return None
  return final


def check(workdir: str, cfg: ml_collections.ConfigDict) -> Previous | None:
  """The earlier segment to resume (None: a fresh run); refuses a changed identity."""
  steps = checkpoint_steps(workdir, complete=True)        # a first save a kill interrupted is no run yet
  old = _read_json(os.path.join(workdir, CONFIG))
  if not steps or old is None:
    return None
  changed = differences(old, as_plain(cfg))
  if changed:
    listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
    raise ValueError(
        f"{workdir} holds a run with another config ({listing}); a run resumes only with the same "
        "config (xnn/train/resume.py lists the fields that may change). To start afresh use another --workdir "
        f"(or delete this one); to start a new run from this one's weights use --init-from {workdir}")
  return Previous(config=old, run=_read_json(os.path.join(workdir, RUN)) or {}, newest_step=steps[-1])


def input_config(cfg: ml_collections.ConfigDict, previous: Previous | None) -> ml_collections.ConfigDict:
  """``cfg`` with ``train.device_resident="auto"`` pinned to the mode the run started in."""
  mode = (previous.run.get("input_mode") if previous else None)
  if cfg.train.device_resident != "auto" or mode not in ("device_resident", "streaming"):
    return cfg
  pinned = ml_collections.ConfigDict(cfg.to_dict())
  pinned.train.device_resident = "on" if mode == "device_resident" else "off"
  return pinned


def run_record(cfg: ml_collections.ConfigDict, input_mode: str, num_devices: int, num_processes: int) -> dict:
  return {"input_mode": input_mode, "num_devices": num_devices, "num_processes": num_processes,
          "bn_stats": cfg.train.bn_stats}


def check_run(previous: Previous | None, record: dict[str, Any], total_steps: int, workdir: str) -> None:
  """What the config alone cannot tell: the input mode, the devices and the run's length."""
  if previous is None:
    return
  old = previous.run
  if old.get("input_mode") not in (None, record["input_mode"]):
    raise ValueError(f"{workdir} was trained with {old['input_mode']} input and this run would use "
                     f"{record['input_mode']}: set train.device_resident to "
                     f"{'on' if old['input_mode'] == 'device_resident' else 'off'} to resume it")
  if record["bn_stats"] == "per_device" and old.get("num_devices") not in (None, record["num_devices"]):
    raise ValueError(f"{workdir} was trained on {old['num_devices']} devices with train.bn_stats='per_device' "
                     f"(BatchNorm statistics per device) and this run has {record['num_devices']}: resume it on "
                     f"{old['num_devices']} devices, or use bn_stats='global' or 'groups' in a new run")
  if previous.newest_step > total_steps:
    raise ValueError(f"{workdir} has a checkpoint at step {previous.newest_step}, past this config's "
                     f"{total_steps} steps; a run can be extended (train.num_epochs / train.num_steps) "
                     "but not shortened below its checkpoints")


def write_records(workdir: str, cfg: ml_collections.ConfigDict, record: dict[str, Any], write) -> None:
  """``config.json`` and ``run.json``; a changed earlier ``config.json`` is kept as ``config.N.json``."""
  path = os.path.join(workdir, CONFIG)
  text = cfg.to_json_best_effort(indent=2)
  try:
    with open(path) as f:
      old = f.read()
  except FileNotFoundError:
    old = None
  if old is not None and old != text:
    n = 1
    while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
      n += 1
    write(os.path.join(workdir, f"config.{n}.json"), old)
  if old != text:
    write(path, text)
  run_path = os.path.join(workdir, RUN)
  run_text = json.dumps(record, indent=2)
  if _read_json(run_path) != record:
    write(run_path, run_text)
