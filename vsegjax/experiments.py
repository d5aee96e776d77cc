"""The experiment runner (``core.experiment``) with vsegjax's methods: what ``main`` runs,
for notebooks and scripts.

    from vsegjax import experiments
    metrics = experiments.run(config, workdir)
"""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import experiment as _runner
from vsegjax.core.experiment import METRICS_FILE, Stage, StageResult, find_stage  # noqa: F401
from vsegjax.methods import REGISTRY


def resolve_stages(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
    """The enabled stages of ``config`` with their merged configs and folders."""
    return _runner.resolve_stages(config, workdir, REGISTRY)


def prepare(config: ml_collections.ConfigDict, workdir: str,
            allow_config_change: bool = False) -> list[tuple[Stage, Any]]:
    """The stages and their tasks, every config error raised before anything trains."""
    return _runner.prepare(config, workdir, REGISTRY, allow_config_change)


def run(config: ml_collections.ConfigDict, workdir: str,
        prepared: list[tuple[Stage, Any]] | None = None) -> dict[str, Any]:
    """Trains every stage of ``config`` in ``workdir`` (resuming), then writes the last
    stage's report as ``eval_metrics.json`` and returns it."""
    return _runner.run(config, workdir, REGISTRY, prepared)


def build_task(stage: Stage) -> Any:
    return _runner.build_task(stage, REGISTRY)


def task_class(name: str) -> type:
    return REGISTRY.task_class(name)


def report_fn(name: str):
    return REGISTRY.report_fn(name)


def load_stage_config(run_dir: str, stage: str) -> ml_collections.ConfigDict:
    """The config stage ``stage`` of the run in ``run_dir`` trained with."""
    return _runner.load_stage_config(run_dir, stage, REGISTRY)
