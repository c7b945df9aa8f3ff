"""Training: ``train_and_evaluate(config, workdir)`` and its named pieces."""

from xnn.train.step import TrainState, create_train_state, make_eval_step, make_train_step
from xnn.train.train import Result, TrainingInterrupted, train_and_evaluate

__all__ = ["Result", "TrainState", "TrainingInterrupted", "create_train_state", "make_eval_step",
           "make_train_step", "train_and_evaluate"]
