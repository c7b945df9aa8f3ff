"""``xnn eval WORKDIR``: a trained run's checkpoint evaluated on its own (xnn/commands/eval.py)."""

import functools
import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from xnn import cli
from xnn.train.metrics import read_metrics

OWN = ("eval.json", "confusion.png")      # what xnn eval writes; every other file of the run stays as it was


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A LeNet-5 digits run of one epoch, evaluated and checkpointed every half: steps 11 and 22."""
  from xnn.configs.default import get_config
  from xnn.train import train_and_evaluate
  c = get_config()
  c.train.num_epochs = 1
  c.train.eval_every_epochs = 0.5
  c.train.progress_bar = False
  c.train.log_every_steps = 5
  workdir = str(tmp_path_factory.mktemp("eval_run"))
  train_and_evaluate(c, workdir)
  return workdir


def _snapshot(workdir):
  """``{relative path: sha256}`` of every file of the run except xnn eval's own."""
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), workdir)
      if rel not in OWN:
        with open(os.path.join(root, f), "rb") as fh:
          out[rel] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _eval(workdir, *args):
  assert cli.main(["eval", workdir, *args]) == 0
  with open(os.path.join(workdir, "eval.json")) as f:
    return json.load(f)


def _labels(workdir, split):
  """The labels of the run's split, read from the data set itself."""
  from xnn.commands.eval import run_config
  from xnn.data.datasets import load_dataset
  ds = load_dataset(run_config(workdir).data)
  source = ds.test if split == "test" else ds.train
  return np.array([int(source[i][ds.label_key]) for i in range(len(source))])


def test_eval_reproduces_the_runs_final_test_accuracy(run, capsys):
  before = _snapshot(run)
  result = _eval(run)
  with open(os.path.join(run, "final.json")) as f:
    final = json.load(f)
  assert result["step"] == final["step"] == 22 and result["split"] == "test"
  assert result["top1_accuracy"] == final["test_accuracy"]          # same checkpoint, same data: same number
  assert result["loss"] == pytest.approx(final["test_loss"], rel=1e-6)
  assert result["top1_accuracy"] <= result["top5_accuracy"] <= 1.0
  labels = _labels(run, "test")
  confusion = np.array(result["confusion_matrix"])
  assert confusion.shape == (10, 10) and result["num_classes"] == 10
  np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))
  assert result["class_counts"] == np.bincount(labels, minlength=10).tolist()
  assert result["examples"] == len(labels) == confusion.sum()
  assert np.trace(confusion) / len(labels) == pytest.approx(result["top1_accuracy"], abs=1e-12)
  np.testing.assert_allclose(result["per_class_accuracy"], np.diag(confusion) / confusion.sum(axis=1))
  with open(os.path.join(run, "confusion.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  out = capsys.readouterr().out
  assert "step 22, test split" in out and f"top-1 accuracy {result['top1_accuracy']:.4f}" in out
  assert _snapshot(run) == before                                   # the run's own files are untouched


def test_an_older_step_gives_that_steps_evaluation(run):
  before = _snapshot(run)
  evals = {r["step"]: r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if r["type"] == "eval"}
  result = _eval(run, "--step", "11")
  assert result["step"] == 11
  assert result["top1_accuracy"] == evals[11]["test_accuracy"]
  assert result["top1_accuracy"] != evals[22]["test_accuracy"]
  assert _snapshot(run) == before


def test_the_train_split(run):
  result = _eval(run, "--split", "train", "--step", "22")
  labels = _labels(run, "train")
  assert result["split"] == "train" and result["examples"] == len(labels)
  np.testing.assert_array_equal(np.array(result["confusion_matrix"]).sum(axis=1), np.bincount(labels, minlength=10))


def test_a_damaged_newest_checkpoint_falls_back_or_is_refused(run, tmp_path, capsys):
  copy = str(tmp_path / "copy")
  shutil.copytree(run, copy)
  step_dir = os.path.join(copy, "checkpoints", "22")
  victim = next(os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in sorted(fs)
                if f != "xnn_manifest.json" and os.path.getsize(os.path.join(r, f)) > 0)
  with open(victim, "ab") as f:
    f.write(b"\0")
  assert _eval(copy)["step"] == 11
  assert "xnn eval: warning: checkpoint at step 22 does not verify" in capsys.readouterr().err
  assert cli.main(["eval", copy, "--step", "22"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("xnn eval: error: --step 22: the checkpoint at step 22") and "does not verify" in err


def _no_checkpoint(run, tmp_path):
  shutil.copy(os.path.join(run, "config.json"), tmp_path / "config.json")
  return str(tmp_path)


ERRORS = [  # (arguments after the workdir, how to make the workdir, what the one line says)
    ([], lambda run, tmp: str(tmp / "missing"), "is not a folder"),
    ([], lambda run, tmp: str(tmp), "has no config.json"),
    ([], _no_checkpoint, "has no checkpoint to evaluate"),
    (["--step", "5"], lambda run, tmp: run, "has no checkpoint at step 5; it has steps 11, 22"),
    (["--step", "0"], lambda run, tmp: run, "argument --step: invalid value '0'"),
    (["--split", "validation"], lambda run, tmp: run, "argument --split: invalid choice: 'validation'"),
    (["--ema"], lambda run, tmp: run, "keeps no moving average of its weights (its train.ema_decay is 0)"),
]


@pytest.mark.parametrize("args,make,expected", ERRORS, ids=[e[2][:30] for e in ERRORS])
def test_errors_are_one_line_with_status_2(run, tmp_path, capsys, args, make, expected):
  workdir = make(run, tmp_path)
  before = _snapshot(run)
  assert cli.main(["eval", workdir, *args]) == 2
  err = capsys.readouterr().err
  assert err.startswith("xnn eval: error: ") and expected in err and err.count("\n") == 1, err
  assert _snapshot(run) == before
  assert not os.path.exists(os.path.join(tmp_path, "eval.json"))


# --- the sums behind the report, against a NumPy count (tagging-shaped: examples x steps, a mask) ----------

N, T, C = 6, 5, 7


@functools.cache
def _sums_fn():
  """``make_report_step``'s extra sums (and top-1) for given logits, jitted once for the shapes above."""
  from xnn.train.evaluate import confusion_counts, topk_correct

  def sums(logits, labels, w):
    return {"loss_sum": jnp.float32(0.0), "count": w.sum(), "correct": ((logits.argmax(-1) == labels) * w).sum(),
            "topk_correct": (topk_correct(logits, labels, 5) * w).sum(),
            "confusion": confusion_counts(logits, labels, w)}

  return jax.jit(sums)


@settings(max_examples=25, deadline=None)
@given(logits=hnp.arrays(np.float32, (N, T, C), elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0])),
       labels=hnp.arrays(np.int32, (N, T), elements=st.integers(0, C - 1)),
       mask=hnp.arrays(np.float32, (N, T), elements=st.sampled_from([0.0, 1.0])))
def test_report_counts_the_valid_targets(logits, labels, mask):
  from xnn.train.evaluate import report
  r = report(jax.device_get(_sums_fn()(logits, labels, mask)))
  pred = logits.argmax(-1)
  want = np.zeros((C, C), np.int64)
  for t, p, m in zip(labels.ravel(), pred.ravel(), mask.ravel()):
    want[t, p] += int(m)
  np.testing.assert_array_equal(r["confusion_matrix"], want)
  assert r["examples"] == int(mask.sum()) and r["class_counts"] == want.sum(1).tolist()
  higher = (logits > np.take_along_axis(logits, labels[..., None], -1)).sum(-1)   # ties count for the label
  assert r["top5_accuracy"] == pytest.approx(((higher < 5) * mask).sum() / max(mask.sum(), 1.0))
  assert r["top1_accuracy"] <= r["top5_accuracy"]
  assert r["per_class_accuracy"] == [want[c, c] / want[c].sum() if want[c].sum() else None for c in range(C)]


def test_top5_is_left_out_with_five_classes_or_fewer():
  from xnn.train.evaluate import report
  r = report({"loss_sum": 1.0, "count": 2.0, "correct": 1.0, "confusion": np.array([[1.0, 0], [1.0, 0]])})
  assert r["top5_accuracy"] is None and "2 classes" in r["top5_note"]
  assert r["per_class_accuracy"] == [1.0, 0.0] and r["top1_accuracy"] == 0.5
