"""Training: ``train_and_evaluate(config, workdir)`` and its named pieces.

Attributes load lazily, so ``xnn.train.step`` and ``xnn.train.tasks`` (pure
JAX/Flax/optax) can be used where the input-pipeline dependencies (grain,
tensorflow-datasets) are absent.
"""

import importlib

_EXPORTS = {
    "Result": "xnn.train.train", "TrainingInterrupted": "xnn.train.train",
    "train_and_evaluate": "xnn.train.train",
    "TrainState": "xnn.train.step", "create_train_state": "xnn.train.step",
    "make_eval_step": "xnn.train.step", "make_train_step": "xnn.train.step",
    "TASKS": "xnn.train.tasks", "ImageClassification": "xnn.train.tasks",
    "SequenceClassification": "xnn.train.tasks", "Tagging": "xnn.train.tasks", "Seq2Seq": "xnn.train.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'xnn.train' has no attribute {name!r}")
