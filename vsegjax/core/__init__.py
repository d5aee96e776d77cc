"""The engine every method runs on, which knows no method: the experiment runner
(``experiment``, handed a ``registry.Registry``), the one trainer (``trainer``, ``step``),
checkpoints, sharding, several processes, preemption, writers, config checks and the
host-side input glue (``inputs``). A method plugs in a ``task.Task``.

The names below load on first use (PEP 562), so ``main --help`` does not wait for JAX.
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
