"""Synthetic sequence tasks (xnn.data.sequence_tasks): format, determinism, correctness."""

import ml_collections
import numpy as np
import pytest

from xnn.data import sequence_tasks as st


def _valid(row, mask):
  return [int(t) for t, m in zip(row, mask) if m > 0]


@pytest.mark.parametrize("name", st.TASKS)
def test_format_and_determinism(name):
  a = st.make_task(name, 50, seed=3, length=6, vocab=10, min_length=2)
  b = st.make_task(name, 50, seed=3, length=6, vocab=10, min_length=2)
  c = st.make_task(name, 50, seed=4, length=6, vocab=10, min_length=2)
  t_in, t_out = (13, 8) if name == "addition" else (6, 7)   # 2L+1 / L+2 and L / L+1 (module docstring)
  assert a["inputs"].shape == (50, t_in) and a["inputs"].dtype == np.int32
  assert a["inputs_mask"].shape == (50, t_in) and a["inputs_mask"].dtype == np.float32
  for k in ("decoder_inputs", "targets"):
    assert a[k].shape == (50, t_out) and a[k].dtype == np.int32
  assert a["targets_mask"].dtype == np.float32
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["inputs"], c["inputs"])
  # Masks mark exactly the non-pad tokens, as a prefix.
  np.testing.assert_array_equal(a["inputs_mask"], (a["inputs"] != st.PAD).astype(np.float32))
  np.testing.assert_array_equal(a["targets_mask"], (a["targets"] != st.PAD).astype(np.float32))
  assert np.all(np.diff(a["targets_mask"], axis=1) <= 0)
  # Every target ends with exactly one EOS; decoder inputs are BOS + targets shifted right.
  assert np.all((a["targets"] == st.EOS).sum(1) == 1)
  np.testing.assert_array_equal(a["decoder_inputs"][:, 0], st.BOS)
  shifted = a["targets"][:, :-1] * (a["targets_mask"][:, :-1] > 0)
  np.testing.assert_array_equal(a["decoder_inputs"][:, 1:] * (a["targets_mask"][:, 1:] > 0),
                                shifted * (a["targets_mask"][:, 1:] > 0))
  assert a["inputs"].max() < st.vocab_size(10) and a["targets"].max() < st.vocab_size(10)
  # Variable length: lengths in [2, 6] and not all equal.
  if name != "addition":
    lengths = a["inputs_mask"].sum(1)
    assert lengths.min() >= 2 and lengths.max() <= 6 and len(set(lengths)) > 1


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_symbol_tasks_answers(name):
  d = st.make_task(name, 40, seed=0, length=7, vocab=5, min_length=1)
  fn = {"copy": lambda s: s, "reverse": lambda s: s[::-1], "sort": sorted}[name]
  for i in range(40):
    src = _valid(d["inputs"][i], d["inputs_mask"][i])
    tgt = _valid(d["targets"][i], d["targets_mask"][i])
    assert tgt == list(fn(src)) + [st.EOS]
    assert all(st.OFFSET <= t < st.OFFSET + 5 for t in src)


def test_fixed_length_default():
  d = st.make_task("reverse", 10, seed=1, length=5)
  assert d["inputs_mask"].sum() == 50   # 10 examples x length 5, no padding


def test_addition_answers():
  d = st.make_task("addition", 200, seed=0, length=3, vocab=10, min_length=1)
  for i in range(200):
    src = st.detokenize(d["inputs"][i])
    a, b = src.split("+")
    assert st.detokenize(d["targets"][i]) == str(int(a) + int(b))
    assert len(a) <= 3 and len(b) <= 3 and (a == "0" or a[0] != "0")
  # Example from the brief: "123+456" -> "579" in the token layout of the module docstring.
  assert st.detokenize(np.array([5, 6, 7, st.PLUS, 8, 9, 10])) == "123+456"


def test_addition_base():
  d = st.make_task("addition", 50, seed=2, length=4, vocab=2, min_length=4)
  for i in range(50):
    a, b = st.detokenize(d["inputs"][i]).split("+")
    assert int(st.detokenize(d["targets"][i]), 2) == int(a, 2) + int(b, 2)


def test_errors():
  with pytest.raises(ValueError):
    st.make_task("rotate", 1)
  with pytest.raises(ValueError):
    st.make_task("copy", 1, length=4, min_length=5)


def test_seq2seq_training_reports_greedy_accuracy(tmp_path):
  """train_and_evaluate on a generated task also scores greedy decoding (no teacher forcing);
  the reported figures equal an independent NumPy count over the model's own decode."""
  import json

  import jax

  from xnn import models
  from xnn.configs.default import get_config
  from xnn.data.datasets import load_dataset
  from xnn.train import train_and_evaluate

  c = get_config()
  c.model.name = "transformer_seq2seq"
  c.model.kwargs = ml_collections.ConfigDict(dict(d_model=32, num_heads=2, d_ff=64, num_layers=1))
  c.data.name, c.data.seq_length, c.data.num_train, c.data.num_test = "copy", 4, 512, 96
  c.train.batch_size, c.train.num_epochs, c.train.progress_bar = 64, 3, False
  c.optimizer.learning_rate = 3e-3
  res = train_and_evaluate(c, str(tmp_path))
  assert 0.0 <= res.greedy_sequence_accuracy <= res.greedy_token_accuracy <= 1.0
  final = json.loads((tmp_path / "final.json").read_text())
  assert final["greedy_token_accuracy"] == pytest.approx(res.greedy_token_accuracy)

  test = load_dataset(c.data).test
  batch = {k: np.stack([ex[k] for ex in test]) for k in ("inputs", "targets", "targets_mask")}
  model = models.build("transformer_seq2seq", num_classes=st.vocab_size(10), d_model=32, num_heads=2,
                       d_ff=64, num_layers=1)
  tokens, _ = model.apply({"params": jax.device_get(res.state.params)}, batch["inputs"],
                          batch["targets"].shape[1], method="decode")
  valid = batch["targets_mask"] > 0
  right = (np.asarray(tokens) == batch["targets"]) & valid
  assert res.greedy_token_accuracy == pytest.approx(right.sum() / valid.sum(), abs=1e-6)
  assert res.greedy_sequence_accuracy == pytest.approx(np.mean(right.sum(1) == valid.sum(1)), abs=1e-6)


def test_tagging_learns_per_step_labels_and_masks_padding(tmp_path):
  """Per-step labels (N, T) make a tagging task: the LSTM tagger learns "the previous step's
  symbol", and steps masked out as padding change neither the loss nor the accuracy."""
  from xnn.configs.default import get_config
  from xnn.data import from_arrays
  from xnn.train import train_and_evaluate, tasks
  from xnn.train.metrics import read_metrics

  rng = np.random.default_rng(0)
  sym = rng.integers(0, 4, (640, 6))
  x = np.eye(4, dtype=np.float32)[sym]                       # (N, T, 4) one-hot symbols
  y = np.concatenate([np.zeros((640, 1), np.int64), sym[:, :-1]], 1)   # label: the previous symbol
  lengths = rng.integers(3, 7, 640)
  mask = (np.arange(6)[None] < lengths[:, None]).astype(np.float32)
  y_noisy = np.where(mask > 0, y, rng.integers(0, 4, y.shape))         # padding labels are noise
  ds = from_arrays(x[:512], y_noisy[:512], x[512:], y_noisy[512:], masks=(mask[:512], mask[512:]))
  c = get_config()
  assert isinstance(tasks.task_for(ds, c.data), tasks.Tagging)
  c.model.name = "lstm_tagger"
  c.data.image_size = c.data.channels = 0
  c.train.batch_size, c.train.num_epochs, c.train.progress_bar = 64, 12, False
  c.optimizer.learning_rate = 1e-2
  r = train_and_evaluate(c, str(tmp_path), dataset=ds)
  assert r.test_accuracy > 0.95, r           # chance is 0.25; noise labels on padding would cap it near 0.8
  ev = [e for e in read_metrics(str(tmp_path / "metrics.jsonl")) if e["type"] == "eval"][-1]
  assert ev["test_examples"] == int(mask[512:].sum())   # only valid steps are counted
