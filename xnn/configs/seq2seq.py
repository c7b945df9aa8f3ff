"""Sequence-to-sequence tasks generated on the fly: copy, reverse, sort, addition.

Command:   xnn train --config xnn/configs/seq2seq.py:reverse --workdir runs/reverse_tf
           xnn train --config xnn/configs/seq2seq.py:sort --workdir runs/sort_tf
           xnn train --config xnn/configs/seq2seq.py:addition,rnn --workdir runs/add_rnn
           (arg: TASK[,MODEL] with MODEL transformer (default) or rnn)
Data:      20,000 training and 2,000 test examples (fixed seeds) of length 10 over 10
           symbols (addition: two 10-digit numbers), xnn.data.sequence_tasks.
Recipe:    Adam 1e-3 with warmup + cosine, batch 128, 12 epochs, teacher forcing.
           addition (RNN): two 3-digit numbers, Adam 3e-3, 40 epochs -- generating the
           sum most-significant digit first, an LSTM needs many more steps than the
           Transformer needs for sort (10 digits: still at the unigram rate after 12 epochs).
Expected:  >= 99% token accuracy on sort and reverse with the Transformer; addition (RNN)
           about 78% teacher-forced token accuracy (the README results table has the
           measured figures and times).
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default

MODELS = {"transformer": "transformer_seq2seq", "rnn": "rnn_seq2seq"}


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, task="reverse", model="transformer")
  if arg["model"] not in MODELS:
    raise ValueError(f"seq2seq.py:TASK,MODEL: MODEL must be one of {', '.join(MODELS)}, got {arg['model']!r}")
  c = _default()
  c.model.name = MODELS[arg["model"]]
  c.data.name = arg["task"]
  c.train.batch_size = 128
  c.train.num_epochs = 12
  c.optimizer.learning_rate = 1e-3
  if arg["task"] == "addition" and arg["model"] == "rnn":
    c.data.seq_length = 3
    c.train.num_epochs = 40
    c.optimizer.learning_rate = 3e-3
  return c
