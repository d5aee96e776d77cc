"""The shared trainer and one task module per method."""

from vsegjax.train.task import Task
from vsegjax.train.trainer import NonFiniteLossError, TrainResult, TrainState, train

__all__ = ["NonFiniteLossError", "Task", "TrainResult", "TrainState", "train"]
