"""The shared trainer, the experiment runner and one task module per method.

The names below load on first use (PEP 562), so reading the task registry
(``vsegjax.train.experiment.TASKS``) for ``--help`` does not import JAX.
"""

import importlib

_EXPORTS = {"Task": "vsegjax.train.task", "NonFiniteLossError": "vsegjax.train.trainer",
            "TrainResult": "vsegjax.train.trainer", "TrainState": "vsegjax.train.step",
            "train": "vsegjax.train.trainer"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vsegjax.train' has no attribute {name!r}")
