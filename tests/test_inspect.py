"""``xnn inspect`` (xnn/commands/inspect.py) end to end on a trained LeNet-5, and its one-line errors.

The two trained runs live in two tests (each trains its own), so that the suite's two workers share them out
rather than both training the same run for a module fixture.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest

from xnn import cli

FAST = ["--images", "2", "--vis-steps", "64", "--erf-inputs", "4", "--probe-examples", "1437"]


def _digits_config():
  """LeNet-5 on the digits at 16x16 for one epoch, evaluated and checkpointed every half (steps 11 and 22)."""
  from xnn.configs.default import get_config
  c = get_config()
  c.data.image_size = 16
  c.train.num_epochs = 1
  c.train.eval_every_epochs = 0.5
  c.train.progress_bar = False
  c.train.log_every_steps = 11
  c.optimizer.learning_rate = 1e-2
  c.schedule.warmup = 0.25
  return c


def _snapshot(workdir, skip):
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      rel = os.path.relpath(os.path.join(root, f), workdir)
      if not rel.startswith(skip):
        with open(os.path.join(root, f), "rb") as fh:
          out[rel] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _error(capsys, *argv):
  rc = cli.main(["inspect", *argv])
  err = capsys.readouterr().err
  return rc, [line for line in err.strip().splitlines() if line.startswith("xnn inspect: error")]


@pytest.mark.slow
def test_inspect_a_trained_run(tmp_path, capsys):
  """Every section on a LeNet-5 trained for one epoch: the pictures, inspect.json and index.md, the run's own
  files untouched; the probes far above chance (Alain & Bengio 2016); feature visualisation raising each class
  logit at every step (seed 0); then the one-line errors that need a run."""
  from xnn.train import train_and_evaluate
  run = str(tmp_path / "run")
  train_and_evaluate(_digits_config(), run)
  before = _snapshot(run, "inspect")
  assert cli.main(["inspect", run, *FAST]) == 0
  out = capsys.readouterr().out
  folder = os.path.join(run, "inspect")
  with open(os.path.join(folder, "inspect.json")) as f:
    d = json.load(f)
  assert d["step"] == 22 and d["checkpoints"] == [11, 22]
  assert d["stages"] == {"stage1": [6, 6, 8], "stage2": [1, 1, 16]}
  assert d["skipped"] == {"attention": "lenet5 has no attention layer"}
  # the effective receptive field at initialisation and at both checkpoints, beside the exact 16x16 field
  assert [m["step"] for m in d["erf"]["maps"]] == [0, 11, 22]
  assert d["erf"]["theoretical"]["size"] == 16 and d["erf"]["theoretical"]["window"] == [[0, 15], [0, 15]]
  assert all(0 < m["sigma"] < 16 and 0 <= m["radius50"] <= m["radius"] <= 16 and 0 < m["half_max_area"] <= 256
             for m in d["erf"]["maps"])
  # probes: chance is the most frequent training class's share of the test split
  probes = d["probes"]
  assert probes["train_examples"] == 1437 and probes["test_examples"] == 360 and probes["chance"] < 0.11
  assert probes["stages"]["stage2"]["test_accuracy"] > 0.6
  assert all(r["test_accuracy"] > 3 * probes["chance"] for r in probes["stages"].values())
  # feature visualisation: each class logit of the image as it is rose at every one of its 64 steps
  classes = d["feature_vis"]["classes"]
  assert classes["targets"] == list(range(10)) and all(classes["increased_every_step"])
  assert all(b > a for a, b in zip(classes["objective_start"], classes["objective_end"]))
  assert d["filters"]["kernel_shape"] == [5, 5, 3, 8] and d["filters"]["grey_input_replicated"]
  assert len(d["saliency"]["predicted"]) == 2
  np.testing.assert_allclose(d["saliency"]["ig_sum"], d["saliency"]["score_minus_baseline"], rtol=0.1, atol=0.1)
  with open(os.path.join(folder, "index.md")) as f:
    index = f.read()
  pictures = sorted(p for p in os.listdir(folder) if p.endswith(".png"))
  assert pictures == sorted(p for p in d["files"] if p.endswith(".png")) and len(pictures) == 9
  for p in pictures:
    assert f"]({p})" in index
    with open(os.path.join(folder, p), "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
  assert "effective receptive field of stage2" in out and "linear-probe test accuracy" in out
  assert _snapshot(run, "inspect") == before                           # the run itself is not touched

  # --only and --out: one section, three files
  assert cli.main(["inspect", run, "--only", "filters", "--out", os.path.join(run, "inspect_filters")]) == 0
  assert "wrote 3 files" in capsys.readouterr().out
  assert sorted(os.listdir(os.path.join(run, "inspect_filters"))) == ["filters.png", "index.md", "inspect.json"]

  # one-line errors, before anything is computed or written
  empty = tmp_path / "no_checkpoint"
  empty.mkdir()
  shutil.copy(os.path.join(run, "config.json"), empty / "config.json")
  for argv, words in [([str(empty)], ["has no checkpoint to inspect", "checkpoints"]),
                      ([run, "--step", "7"], ["--step 7", "no checkpoint at step 7", "11, 22"]),
                      ([run, "--only", "attention"], ["--only attention", "lenet5 has no attention layer"]),
                      ([run, "--images", "361"], ["--images 361", "only 360 examples"])]:
    rc, lines = _error(capsys, *argv)
    assert rc == 2 and len(lines) == 1, (argv, lines)
    assert all(w in lines[0] for w in words), (argv, lines)
  assert not (empty / "inspect").exists()


@pytest.mark.slow
def test_probes_are_at_chance_for_a_model_trained_on_shuffled_labels(tmp_path):
  """The same network trained on the same images with the labels of both splits shuffled (random labels, as in
  Zhang et al. 2017: nothing links an image to its label): the probes fitted on the training labels are at
  chance on the test labels (10 classes: 0.1, +-0.016 for 360 test examples). Shuffling the training labels
  alone is not enough: the features still tell the digits apart, and a probe maps each digit to the shuffled
  label most frequent among its training images -- rarely its own -- which is below chance."""
  from xnn.commands.inspect import Options, inspect_run
  from xnn.data import from_arrays
  from xnn.data.datasets import load_dataset
  from xnn.train import train_and_evaluate
  c = _digits_config()
  c.train.eval_every_epochs = 1.0
  ds = load_dataset(c.data)
  x_train = np.stack([ds.train[i]["image"] for i in range(len(ds.train))])
  y_train = np.array([ds.train[i]["label"] for i in range(len(ds.train))])
  x_test = np.stack([ds.test[i]["image"] for i in range(len(ds.test))])
  y_test = np.array([ds.test[i]["label"] for i in range(len(ds.test))])
  rng = np.random.default_rng(0)
  shuffled = from_arrays(x_train, rng.permutation(y_train), x_test, rng.permutation(y_test), pixel_max=16)
  workdir = str(tmp_path / "shuffled")
  with contextlib.redirect_stdout(io.StringIO()):
    train_and_evaluate(c, workdir, dataset=shuffled)
  probes = inspect_run(workdir, only=("probes",), write=False, options=Options(), dataset=shuffled)["probes"]
  assert set(probes["stages"]) == {"stage1", "stage2"}
  for stage, r in probes["stages"].items():
    assert abs(r["test_accuracy"] - 0.1) < 0.06, (stage, r)


@pytest.mark.parametrize("argv, words", [
    (["{missing}"], ["is not a folder"]),
    (["{here}"], ["holds no run", "config.json"]),
    (["{here}", "--only", "erf,nonsense"], ["--only", "nonsense", "feature_maps"]),
    (["{here}", "--images", "0"], ["--images", "positive integer"]),
    (["{here}", "--out", "{missing}/deeper/out"], ["--out", "does not exist"]),
])
def test_inspect_errors_are_one_line(capsys, tmp_path, argv, words):
  argv = [a.format(here=str(tmp_path), missing=str(tmp_path / "missing")) for a in argv]
  rc, lines = _error(capsys, *argv)
  assert rc == 2 and len(lines) == 1, lines
  for w in words:
    assert w in lines[0]
