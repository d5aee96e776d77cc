"""The shared trainer, the experiment runner and one task module per method.

The names below load on first use (PEP 562), so reading the task registry
(``vsegjax.core.experiment.TASKS``) for ``--help`` does not import JAX.
"""

import importlib

_EXPORTS = {"Task": "vsegjax.core.task", "NonFiniteLossError": "vsegjax.core.trainer",
            "TrainResult": "vsegjax.core.trainer", "TrainState": "vsegjax.core.step",
            "train": "vsegjax.core.trainer"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vsegjax.core' has no attribute {name!r}")
