"""``xnn eval WORKDIR [--split test|train] [--step N] [--ema]``: one checkpoint of a run, evaluated on its own.

The run's own config (``WORKDIR/config.json``, checked by ``xnn.configs.schema.resolve``)
rebuilds its model and data; the newest checkpoint that verifies (or step ``N``, which
must verify: ``xnn.train.checkpoint``'s manifest, files before loading and arrays after)
gives the weights. The chosen split is read as the run's evaluation reads its test split
(in order, deterministic preprocessing, no augmentation, same batch size), so the top-1
accuracy of the checkpoint of a run's last step is the test accuracy in its ``final.json``.

Written to the workdir, atomically, and replaced by the next ``xnn eval`` there (the
split and step are inside):

* ``eval.json``: top-1 and top-5 accuracy (top-5 only with more than 5 classes), mean
  loss, per-class accuracy, the class counts of the split and the confusion matrix
  (rows: true class, columns: predicted), as counts of examples; for tagging and
  sequence-to-sequence runs the same per target token (``unit``), and for
  sequence-to-sequence also greedy decoding's token and sequence accuracy.
* ``confusion.png``: the confusion matrix, coloured by the share of each true class.

With ``--ema`` the moving average of the weights (``train.ema_decay`` > 0, kept in every
checkpoint beside the weights) is evaluated instead, into ``eval_ema.json`` and
``confusion_ema.png``; its top-1 accuracy at the last step is ``final.json``'s
``test_accuracy_ema``.

Nothing else in the workdir is touched: no lock is taken and the checkpoints are opened
read-only, so a running training may be evaluated. Its newest step is complete once
its manifest exists (orbax renames a finished step into place, then the manifest is
written); a step without one yet is skipped with a warning, like a damaged one. A
training keeping ``train.keep_checkpoints`` steps deletes one only after that many newer
saves, far longer than an evaluation takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any

from xnn.commands import ArgumentParser, CommandError, positive_int

SPLITS = ("test", "train")
TOP_K = 5
OUTPUT, PICTURE = "eval.json", "confusion.png"


def output_names(ema: bool) -> tuple[str, str]:
  """The files ``xnn eval`` writes: (the numbers, the confusion picture); ``_ema`` ones with ``--ema``."""
  return ("eval_ema.json", "confusion_ema.png") if ema else (OUTPUT, PICTURE)


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn eval", description="Evaluate a run's newest verified checkpoint (or step N) "
                     f"with the run's own config; writes WORKDIR/{OUTPUT} and WORKDIR/{PICTURE}.")
  p.add_argument("workdir", metavar="WORKDIR", help="a run folder (xnn train --workdir, or one run of a sweep)")
  p.add_argument("--split", choices=SPLITS, default="test", help="the run's data.test_split or data.train_split")
  p.add_argument("--step", type=positive_int, default=None, help="this checkpoint step (default: the newest)")
  p.add_argument("--ema", action="store_true",
                 help="the moving average of the weights (a run trained with train.ema_decay > 0)")
  return p


def main(argv: list[str]) -> int:
  args = parser().parse_args(argv)
  result = evaluate_run(args.workdir, split=args.split, step=args.step, ema=args.ema)
  print(summary(result))
  return 0


def run_config(workdir: str):
  """The run's resolved config from ``WORKDIR/config.json``."""
  from xnn.configs import schema
  if not os.path.isdir(workdir):
    raise CommandError(f"workdir {workdir!r} is not a folder")
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      plain = json.load(f)
  except FileNotFoundError:
    raise CommandError(f"{workdir!r} holds no run: it has no config.json (xnn train writes one)") from None
  except (OSError, ValueError) as e:
    raise CommandError(f"{path} cannot be read: {e}") from None
  return schema.resolve(plain)


def check_checkpoints(workdir: str, verb: str = "evaluate") -> list[int]:
  """The run's checkpoint steps; none is a ``CommandError`` saying there is nothing to ``verb``."""
  from xnn.train import checkpoint as ckpt
  steps = ckpt.checkpoint_steps(workdir)
  if not steps:
    folder = os.path.join(os.path.abspath(workdir), "checkpoints")
    raise CommandError(f"{workdir!r} has no checkpoint to {verb} (none in {folder})")
  return steps


def restore_checkpoint(workdir: str, step: int | None = None, command: str = "eval",
                       ema: bool = False) -> tuple[int, dict[str, Any]]:
  """(step, ``{"params": ..., "batch_stats": ...}``) of the newest checkpoint that verifies, or of ``step``
  (which must verify), read-only; a step that does not verify is a warning of ``xnn COMMAND``; ``ema``: the
  moving averages of the weights."""
  from xnn.train import checkpoint as ckpt
  check_checkpoints(workdir, "evaluate" if command == "eval" else command)
  warn = lambda text: print(f"xnn {command}: warning: {text}", file=sys.stderr, flush=True)  # noqa: E731
  try:
    return ckpt.restore_weights(workdir, step, warn=warn, ema=ema)
  except ckpt.CheckpointError as e:
    raise CommandError(f"--step {step}: {e}" if step is not None else str(e)) from None


def evaluate_run(workdir: str, split: str = "test", step: int | None = None, write: bool = True,
                 dataset: Any = None, ema: bool = False) -> dict[str, Any]:
  """``eval.json``'s content for one checkpoint of the run in ``workdir`` on ``split``; written with
  ``confusion.png`` when ``write``. ``dataset``: the data of a run trained on a ``Dataset`` passed to
  ``train_and_evaluate`` (its config names only the registered data set it replaced). ``ema``: the
  moving average of the weights (``train.ema_decay`` > 0) instead of the weights."""
  if split not in SPLITS:
    raise CommandError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
  cfg = run_config(workdir)
  if ema and not cfg.train.ema_decay:
    raise CommandError(f"--ema: the run in {workdir!r} keeps no moving average of its weights "
                       "(its train.ema_decay is 0); evaluate the weights without --ema")
  step, weights = restore_checkpoint(workdir, step, ema=ema)
  import jax
  import numpy as np
  from jax.sharding import Mesh
  from xnn.ops import conv_setting
  from xnn.train.evaluate import Evaluator, make_report_step, report
  from xnn.train.train import build_model, load_data, make_task
  ds = load_data(cfg, dataset)
  model = build_model(cfg, ds)
  task = make_task(cfg, ds)
  source = ds if split == "test" else dataclasses.replace(ds, test=ds.train)
  with conv_setting(cpu=cfg.train.cpu_conv):     # the run's own convolutions: the same numbers
    evaluator = Evaluator(source, cfg.data, cfg.train.eval_batch_size, Mesh(np.array(jax.devices()), ("data",)))
    result = report(evaluator.sums(make_report_step(model, task, TOP_K), weights), TOP_K)
    for name, fn in task.final_evals(model, evaluator.example).items():     # greedy decoding (seq2seq)
      result.update(task.summarize(name, evaluator.sums(lambda v, b, fn=fn: fn(v, b), weights)))
  result = {"workdir": workdir, "step": step, "split": split, "weights": "moving average" if ema else "trained",
            "data_split": cfg.data.test_split if split == "test" else cfg.data.train_split,
            "model": cfg.model.name, "dataset": cfg.data.name, "task": task.name,
            "unit": "example" if task.name.endswith("classification") else "token", **result}
  if write and jax.process_index() == 0:
    write_outputs(workdir, result, f"{cfg.model.name} on {cfg.data.name}" + (" (moving average)" if ema else ""))
  return result


def _json_safe(v: Any) -> Any:
  """Strict JSON: a non-finite float as its name, as ``metrics.jsonl`` writes it."""
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if isinstance(v, dict):
    return {k: _json_safe(x) for k, x in v.items()}
  if isinstance(v, list):
    return [_json_safe(x) for x in v]
  return v


def json_text(result: dict[str, Any]) -> str:
  """``eval.json``'s text: one field a line, lists on one line, the confusion matrix one row a line."""
  fields = []
  for key, value in _json_safe(result).items():
    if key == "confusion_matrix":
      text = "[\n  " + ",\n  ".join(json.dumps(row) for row in value) + "\n ]"
    else:
      text = json.dumps(value)
    fields.append(f" {json.dumps(key)}: {text}")
  return "{\n" + ",\n".join(fields) + "\n}\n"


def write_outputs(workdir: str, result: dict[str, Any], title: str) -> None:
  """``eval.json`` and ``confusion.png`` (``output_names``), each written atomically."""
  from xnn.train.metrics import atomic_write
  numbers, picture = output_names(result["weights"] == "moving average")
  atomic_write(os.path.join(workdir, numbers), json_text(result))
  atomic_write(os.path.join(workdir, picture), confusion_png(result, title))


def confusion_png(result: dict[str, Any], title: str) -> bytes:
  """The confusion matrix as a PNG: cells coloured by their share of the true class, counts written in them
  (up to 20 classes)."""
  import numpy as np
  from xnn import plots
  plt = plots.pyplot()
  counts = np.asarray(result["confusion_matrix"], np.int64)
  n = counts.shape[0]
  share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  side = min(14.0, 3.0 + 0.45 * n)
  fig, ax = plt.subplots(figsize=(side + 1.2, side))
  im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
  if n <= 20:
    for i, j in zip(*np.nonzero(counts)):
      ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
              color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
  unit = "examples" if result["unit"] == "example" else "tokens"
  ax.set_xlabel("predicted class")
  ax.set_ylabel(f"true class ({unit})")
  ax.set_title(f"{title}: {result['split']} split, step {result['step']}\n"
               f"top-1 accuracy {result['top1_accuracy']:.4f} over {result['examples']} {unit}", fontsize=10)
  return plots.png_bytes(fig)


def summary(result: dict[str, Any]) -> str:
  """What ``xnn eval`` prints: the split, step, accuracies, the weakest classes and the files written."""
  unit = "examples" if result["unit"] == "example" else "target tokens"
  top5 = result.get(f"top{TOP_K}_accuracy")
  top5_text = (f"top-{TOP_K} accuracy {top5:.4f}" if top5 is not None
               else f"top-{TOP_K} not computed ({result['num_classes']} classes)")
  per_class = [(a, c) for c, a in enumerate(result["per_class_accuracy"]) if a is not None]
  noun = "token" if result["task"] == "seq2seq" else "class"
  worst = ", ".join(f"{noun} {c} {a:.4f}" for a, c in sorted(per_class)[:3])
  ema = result["weights"] == "moving average"
  lines = [f"{result['workdir']}: step {result['step']}{' (moving average of the weights)' if ema else ''}, "
           f"{result['split']} split ({result['data_split']}, {result['examples']} {unit}), "
           f"{result['model']} on {result['dataset']}",
           f"  top-1 accuracy {result['top1_accuracy']:.4f}, {top5_text}, loss {result['loss']:.4f}",
           f"  lowest per-class accuracy: {worst}"]
  if "greedy_token_accuracy" in result:
    lines.append(f"  greedy decoding: token accuracy {result['greedy_token_accuracy']:.4f}, "
                 f"sequence accuracy {result['greedy_sequence_accuracy']:.4f}")
  numbers, picture = output_names(ema)
  lines.append(f"  wrote {os.path.join(result['workdir'], numbers)} and {os.path.join(result['workdir'], picture)}")
  return "\n".join(lines)
