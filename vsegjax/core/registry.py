"""The tasks a runner can name, handed to it by whoever knows the methods.

The core knows no method: ``vsegjax.methods.REGISTRY`` maps each task name to its
``Task`` class and its report as import paths, and the apps pass it to the runner. A
project with a method of its own builds a ``Registry`` of its own (or ``extended``).
Paths are imported on first use, so listing the names (``main --help``) imports no JAX.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Mapping


@dataclasses.dataclass(frozen=True)
class Method:
    """One task name's entry: import paths ``"module:attribute"``."""

    task: str    # the ``core.task.Task`` subclass
    # ``report(config, workdir, results: list[StageResult]) -> dict``: scores a run whose
    # last stage is this task; the runner writes it as ``eval_metrics.json``.
    report: str


class Registry(Mapping[str, Method]):
    """Task name -> ``Method``; ``task_class`` and ``report_fn`` import on first use."""

    def __init__(self, methods: Mapping[str, Method]):
        self._methods = dict(methods)

    def __getitem__(self, name: str) -> Method:
        return self._methods[name]

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def task_class(self, name: str) -> type:
        return _resolve(self._known(name).task)

    def report_fn(self, name: str) -> Callable[..., dict[str, Any]]:
        return _resolve(self._known(name).report)

    def _known(self, name: str) -> Method:
        if name not in self._methods:
            raise ValueError(f"unknown task {name!r}; known: {sorted(self._methods)}")
        return self._methods[name]

    def extended(self, **methods: Method) -> "Registry":
        """This registry with more (or replaced) entries."""
        return Registry({**self._methods, **methods})


def _resolve(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
