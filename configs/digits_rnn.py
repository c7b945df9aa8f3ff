"""Sequence classification of the digits: each 8x8 image read as a sequence.

Command:   xnn train --config configs/digits_rnn.py:lstm --workdir runs/digits_lstm
           (arg: rnn | gru | lstm | bilstm | pyramidal_lstm | moe_lstm | transformer,
            add "_pixels" to read 64 steps of 1 pixel instead of 8 rows of 8)
Data:      the bundled digits, 8 steps of 8 features (rows), normalised per channel.
Recipe:    Adam 3e-3, warmup 2 epochs + cosine, batch 64, 40 epochs.
Expected:  LSTM and GRU >= 95% test accuracy (README results table has the measured figures).
"""

from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  arg = arg or "lstm"
  pixels = arg.endswith("_pixels")
  cell = arg[:-len("_pixels")] if pixels else arg
  c = _default()
  c.model.name = "transformer_classifier" if cell == "transformer" else f"{cell}_classifier"
  c.data.image_size = 0
  c.data.channels = 0
  c.data.as_sequence = "pixels" if pixels else "rows"
  c.train.num_epochs = 40
  c.optimizer.learning_rate = 3e-3
  return c
