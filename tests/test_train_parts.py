"""The training loop's small pieces: the timer, the progress lines, task selection, the chunk plan."""

import io

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from xnn.configs.default import get_config
from xnn.data import from_arrays
from xnn.data.datasets import load_dataset
from xnn.train import tasks
from xnn.train.chrono import Chrono
from xnn.train.inputs import auto_chunk
from xnn.train.progress import Progress


class FakeClock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_chrono_counts_only_training_time():
  clock = FakeClock()
  c = Chrono(clock)
  clock.t += 2.0                 # 2 s of training: 10 steps
  c.count(10)
  with c.paused():               # 5 s of evaluation or checkpointing
    clock.t += 5.0
  clock.t += 3.0                 # 3 s more training: 20 steps
  c.count(20)
  assert c.rate() == pytest.approx(30 / 5.0)
  with c.paused():
    with c.paused():             # nested pauses count once
      clock.t += 1.0
  clock.t += 1.0
  c.count(4)
  assert c.rate() == pytest.approx(4.0)
  assert c.total_s == pytest.approx(6.0)
  assert c.rate() == 0.0         # nothing counted since the last call


def test_progress_prints_plain_lines_when_not_a_terminal():
  out = io.StringIO()            # not a TTY: no carriage returns, a line per interval
  p = Progress(total=100, initial=20, every_s=0.0, stream=out)
  p.update(10, loss="0.5000", acc="0.900")
  p.update(30)
  p.close()
  lines = out.getvalue().splitlines()
  assert lines == ["step 30/100 (30%) loss 0.5000 acc 0.900", "step 60/100 (60%) loss 0.5000 acc 0.900"]
  assert "\r" not in out.getvalue()
  quiet = io.StringIO()
  Progress(total=10, initial=0, enabled=False, every_s=0.0, stream=quiet).update(5)
  assert quiet.getvalue() == ""


def test_each_kind_of_data_poses_its_task():
  rng = np.random.default_rng(0)
  cfg = get_config()
  images = from_arrays(rng.integers(0, 255, (8, 4, 4, 3), dtype=np.uint8), np.arange(8) % 2,
                       rng.integers(0, 255, (4, 4, 4, 3), dtype=np.uint8), np.arange(4) % 2)
  assert isinstance(tasks.task_for(images, cfg.data), tasks.ImageClassification)
  rows = ml_collections.ConfigDict(cfg.data.to_dict())
  rows.as_sequence = "rows"
  assert isinstance(tasks.task_for(images, rows), tasks.SequenceClassification)
  seq = from_arrays(rng.random((8, 5, 3)), np.arange(8) % 2, rng.random((4, 5, 3)), np.arange(4) % 2)
  assert isinstance(tasks.task_for(seq, cfg.data), tasks.SequenceClassification)
  tags = from_arrays(rng.random((8, 5, 3)), rng.integers(0, 3, (8, 5)), rng.random((4, 5, 3)),
                     rng.integers(0, 3, (4, 5)))
  assert isinstance(tasks.task_for(tags, cfg.data), tasks.Tagging)
  cfg.data.name, cfg.data.num_train, cfg.data.num_test = "copy", 16, 8
  s2s = tasks.task_for(load_dataset(cfg.data), cfg.data)
  assert isinstance(s2s, tasks.Seq2Seq) and s2s.input_keys == ("inputs", "decoder_inputs")
  with pytest.raises(ValueError, match=r"y_train \(8, 4\) has per-step labels but x_train \(8, 5, 3\) has 5 steps"):
    from_arrays(rng.random((8, 5, 3)), rng.integers(0, 3, (8, 4)), rng.random((4, 5, 3)), rng.integers(0, 3, (4, 4)))


def test_task_weights_drop_eval_padding_and_masked_steps():
  t = tasks.Tagging(("inputs",), "label", "label_mask")
  batch = {"label": jnp.zeros((2, 3), jnp.int32), "label_mask": jnp.array([[1, 1, 0], [1, 0, 0]]),
           "mask": jnp.array([1.0, 0.0])}       # the second example is evaluation padding
  np.testing.assert_array_equal(t.weights(batch), [[1, 1, 0], [0, 0, 0]])
  logits = jnp.zeros((2, 3, 4)).at[:, :, 0].set(5.0)          # right on every step
  sums = t.eval_sums(logits, batch)
  assert float(sums["count"]) == 2.0 and float(sums["correct"]) == 2.0


def test_auto_chunk_divides_every_period():
  assert auto_chunk(22, 22, 22) == 22
  assert auto_chunk(390, 390, 780) == 78       # largest divisor of 390 up to 100
  assert auto_chunk(4, 2, 7) == 1
