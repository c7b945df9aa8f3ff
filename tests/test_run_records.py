"""What a run records when something is off: a non-finite test loss, labels the model cannot hold."""

import json
import os

import numpy as np
import pytest

from xnn.data.datasets import from_arrays
from xnn.train import train_and_evaluate
from xnn.train.metrics import read_metrics


def _two_class_arrays(n=256, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = (rng.random((n, 32, 32, 3)) * 100 + y[:, None, None, None] * 120).astype(np.float32) / 255
  return x, y


def test_a_non_finite_test_loss_is_reported_not_a_crash(tiny_config, tmp_path, capsys):
  x, y = _two_class_arrays()
  x_test = x[192:].copy()
  x_test[0] = 3e38                         # one test image whose activations overflow: a NaN loss
  ds = from_arrays(x[:192], y[:192], x_test, y[192:])
  tiny_config.data.image_size, tiny_config.data.channels, tiny_config.data.normalize = 0, 0, "none"
  tiny_config.train.num_epochs, tiny_config.train.batch_size = 2, 32
  # a linear head on the last feature map: XLA:CPU's ReLU maps NaN to 0, the overflow reaches the logits
  tiny_config.model.kwargs.head = "gap_linear"
  r = train_and_evaluate(tiny_config, str(tmp_path), dataset=ds)
  assert np.isnan(r.test_loss) and r.step == 12
  out = capsys.readouterr().out
  assert "test loss nan" in out and "not finite" in out
  evals = [rec for rec in read_metrics(os.path.join(tmp_path, "metrics.jsonl")) if rec["type"] == "eval"]
  assert len(evals) == 2 and evals[-1]["test_loss"] == "nan"
  final = json.loads((tmp_path / "final.json").read_text())      # strict JSON: no NaN token
  assert final["test_loss"] == "nan" and final["step"] == 12


def test_labels_beyond_the_models_classes_are_refused_before_the_workdir(tiny_config, tmp_path):
  tiny_config.model.num_classes = 5          # the digits have 10
  with pytest.raises(ValueError, match=r"labels must be in \[0, 5\).*label 9 appears in \d+ examples"):
    train_and_evaluate(tiny_config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
