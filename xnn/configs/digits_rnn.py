"""Sequence classification of the digits: each 8x8 image read as a sequence.

Command:   xnn train --config xnn/configs/digits_rnn.py:lstm --workdir runs/digits_lstm
           (cell: rnn | gru | lstm | bilstm | pyramidal_lstm | moe_lstm | transformer;
            add ",pixels" -- or the suffix "_pixels" -- to read 64 steps of 1 pixel
            instead of 8 rows of 8)
Data:      the bundled digits, 8 steps of 8 features (rows), normalised per channel.
Recipe:    Adam 3e-3, warmup 2 epochs + cosine, batch 64, 40 epochs.
Expected:  LSTM and GRU >= 95% test accuracy (README results table has the measured figures).
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, cell="lstm", pixels=False)
  cell, pixels = arg["cell"], arg["pixels"]
  if cell.endswith("_pixels"):
    cell, pixels = cell[:-len("_pixels")], True
  c = _default()
  c.model.name = "transformer_classifier" if cell == "transformer" else f"{cell}_classifier"
  c.data.image_size = 0
  c.data.channels = 0
  c.data.as_sequence = "pixels" if pixels else "rows"
  c.train.num_epochs = 40
  c.optimizer.learning_rate = 3e-3
  return c
