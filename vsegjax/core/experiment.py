"""The one experiment driver: a config's stages, trained in order, then its method's report.

A config declares its stages in ``config.stages`` (name -> stage) and their order in
``config.stage_order`` (``configs/common.py: set_stages`` writes both). A stage names a
``task`` (a name in the runner's ``Registry``), whether it runs (``enabled``), where it initialises from
(``init_from``: ``"previous"``, the default, is the stage before it; ``""`` is a fresh
start; another stage's name; or a path to a run), and overrides of any top-level block
(``train``, ``optimizer``, ``input``, ``efc``, ...). A stage's config is the top-level
config with each override merged into its block field by field (a field given as a dict,
such as ``loss_weights``, replaces the old one whole), so ``--config.train.num_steps=N``
sets every stage that does not override it and ``--config.stages.grfp.train.num_steps=N``
sets one.

Each stage trains in ``<workdir>/<stage name>`` with the shared trainer (resuming, or
skipped when its last step is saved), its resolved config beside it in ``config.json``.
Then the report of the last stage's task scores the run and the runner writes
``<workdir>/eval_metrics.json`` (atomically).

The runner knows no method: the tasks a stage may name come in a ``Registry``
(``core.registry``; vsegjax's own is ``vsegjax.methods.REGISTRY``, and
``vsegjax.experiments`` is this module with it filled in).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import ml_collections

from vsegjax import files
from vsegjax.core import config as core_config
from vsegjax.core import run_record, validate
from vsegjax.core.registry import Registry

PREVIOUS = core_config.STAGE["init_from"]
STAGE_FIELDS = ("task",) + tuple(core_config.STAGE)
METRICS_FILE = "eval_metrics.json"


@dataclasses.dataclass
class Stage:
    """One stage as the runner resolved it."""

    name: str
    task_name: str
    config: ml_collections.ConfigDict  # the top-level config with the overrides merged
    workdir: str
    init_from: str  # "" or the folder of a run (a stage's or a path)
    # Changes from the stage's recorded config.json on resume (vsegjax.core.run_record).
    config_changes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StageResult:
    """What a report reads of a trained stage."""

    stage: Stage
    task: Any  # the Task instance
    state: Any  # the final TrainState
    step: int

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def task_name(self) -> str:
        return self.stage.task_name

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.stage.config


def merge_block(base: ml_collections.ConfigDict | None, override: Any
                ) -> ml_collections.ConfigDict:
    """``base`` with each field of ``override`` set (dict fields replaced whole)."""
    merged = base.to_dict() if base is not None else {}
    merged.update(override.to_dict() if hasattr(override, "to_dict") else dict(override))
    return ml_collections.ConfigDict(merged)


def stage_order(config: ml_collections.ConfigDict) -> list[str]:
    """The stage names in order, checked against ``config.stages``."""
    if "stages" not in config:
        raise ValueError("config has no field 'stages'; build it with configs/common.py: "
                         "set_stages")
    order = list(config.stage_order) if "stage_order" in config else []
    names = set(config.stages.keys())
    if set(order) != names or len(order) != len(names):
        raise ValueError(f"config field stage_order: {order} must list each of the stages "
                         f"{sorted(names)} once")
    return order


def resolve_stages(config: ml_collections.ConfigDict, workdir: str, registry: Registry
                   ) -> list[Stage]:
    """The enabled stages with their merged configs, folders and init_from resolved."""
    workdir = files.resolve(workdir)
    order = stage_order(config)
    stage_fields = {n: {**core_config.STAGE, **config.stages[n]} for n in order}
    enabled = [n for n in order if stage_fields[n]["enabled"]]
    if not enabled:
        raise ValueError(f"config field stages: every stage of {order} is disabled")
    top = {k: v for k, v in config.items() if k not in ("stages", "stage_order")}
    # A field no stage's task reads is a typo, or a block of another method's config.
    templates = [registry.task_class(config.stages[n].task).config_template()
                 for n in order if config.stages[n].get("task") in registry]
    stages: list[Stage] = []
    for name in enabled:
        spec = config.stages[name]
        where = f"stages.{name}"
        task_name = spec.get("task")
        if task_name not in registry:
            raise ValueError(f"config field {where}.task: {task_name!r}; known tasks: "
                             f"{sorted(registry)}")
        cfg = ml_collections.ConfigDict(
            {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in top.items()})
        for block, override in spec.items():
            if block in STAGE_FIELDS:
                continue
            if not hasattr(override, "keys"):
                raise ValueError(f"config field {where}.{block}: a stage overrides blocks "
                                 f"of fields (train, optimizer, input, ...); got {override!r}")
            cfg[block] = merge_block(cfg.get(block), override)
        for field in core_config.unknown(cfg, templates):
            head = field.split(".")[0]
            shown = f"{where}.{field}" if head in spec and head not in STAGE_FIELDS else field
            tasks = sorted({str(config.stages[n].get("task")) for n in order})
            raise ValueError(f"config field {shown}: unknown; no task of this config "
                             f"({', '.join(tasks)}) reads it")
        cfg = registry.task_class(task_name).resolve_config(cfg)
        init = _init_from(stage_fields[name]["init_from"], name, where, stages, order,
                          enabled, workdir)
        if cfg.train.init_from:
            init = cfg.train.init_from  # an explicit train.init_from wins
        cfg.train.init_from = init
        validate.check_stage(cfg, spec, where)
        stages.append(Stage(name, task_name, cfg, os.path.join(workdir, name), init))
    return stages


def _init_from(value: str, name: str, where: str, done: Sequence[Stage], order: list[str],
               enabled: list[str], workdir: str) -> str:
    if not value:
        return ""
    if value == PREVIOUS:
        return done[-1].workdir if done else ""
    if value in order:
        if value not in enabled:
            raise ValueError(f"config field {where}.init_from: stage {value!r} is disabled")
        earlier = [s for s in done if s.name == value]
        if not earlier:
            raise ValueError(f"config field {where}.init_from: stage {value!r} runs after "
                             f"{name!r}")
        return earlier[0].workdir
    return value  # a path to another run


def build_task(stage: Stage, registry: Registry) -> Any:
    """The stage's task; constructing it checks the task's own config fields."""
    return registry.task_class(stage.task_name)(stage.config, workdir=stage.workdir)


def prepare(config: ml_collections.ConfigDict, workdir: str, registry: Registry,
            allow_config_change: bool = False) -> list[tuple[Stage, Any]]:
    """The enabled stages and their tasks: every config error is raised here, before
    anything trains, including a resume whose config changes what a stage's checkpoints
    are (unless ``allow_config_change``)."""
    stages = resolve_stages(config, workdir, registry)
    for s in stages:
        s.config_changes = run_record.check_resume(
            s.workdir, run_record.config_json(s.config), f"stage {s.name}", allow_config_change,
            registry.task_class(s.task_name).resolve_config)
    return [(s, build_task(s, registry)) for s in stages]


def run(config: ml_collections.ConfigDict, workdir: str, registry: Registry,
        prepared: list[tuple[Stage, Any]] | None = None) -> dict[str, Any]:
    """Trains every enabled stage in order, then writes the report's ``eval_metrics.json``."""
    # Imported here, not at the top: ``--help`` reads the stages' helpers without waiting
    # for JAX, TensorFlow and orbax to load.
    from vsegjax import viz
    from vsegjax.data import datasets, preview
    from vsegjax.core import writers
    from vsegjax.core.trainer import train

    writers.quiet_orbax()
    workdir = files.resolve(workdir)
    prepared = prepared if prepared is not None else prepare(config, workdir, registry)
    last = prepared[-1][0].config
    source = datasets.open_split(last.data, last.eval.split)
    preview.write_previews(source, os.path.join(workdir, "preview"),
                           range(min(2, len(source))),
                           viz.palette_for(datasets.palette_name(last.data)))
    results: list[StageResult] = []
    # The run's own config beside its stages, so a run folder alone says what it is
    # (vsegjax.segment and vsegjax.export read it).
    top = run_record.config_json(config)
    top_path = os.path.join(workdir, run_record.CONFIG_FILE)
    forced = any(k.split(".")[0] not in run_record.ACCEPTED
                 for s, _ in prepared for k in s.config_changes)
    if not files.isfile(top_path) or forced:  # else the run's original record stays
        files.atomic_write_text(top_path, json.dumps(top, indent=2))
    for stage, task in prepared:
        files.makedirs(stage.workdir)
        run_record.write(stage.workdir, run_record.config_json(stage.config),
                         stage.config_changes, {"stage": stage.name, "task": stage.task_name})
        out = train(stage.config, stage.workdir, task)
        results.append(StageResult(stage, task, out.state, out.step))
    metrics = registry.report_fn(prepared[-1][0].task_name)(last, workdir, results)
    path = os.path.join(workdir, METRICS_FILE)
    files.atomic_write_text(path, json.dumps(metrics, indent=2))
    writers.write_results(workdir, results[-1].step, metrics)
    if files.is_writer():
        print(f"wrote {path}; TensorBoard: tensorboard --logdir={workdir}")
    return metrics


def load_stage_config(run_dir: str, stage: str, registry: Registry
                      ) -> ml_collections.ConfigDict:
    """The config stage ``stage`` of the run in ``run_dir`` trained with: its
    ``<stage>/config.json``, else the run's own ``config.json`` (a run from before the
    runner, whose config was the stage's, or a config with stages, resolved here)."""
    run_dir = files.resolve(run_dir)
    for path in (os.path.join(run_dir, stage, "config.json"), os.path.join(run_dir, "config.json")):
        if files.isfile(path):
            config = ml_collections.ConfigDict(json.loads(files.read_text(path)))
            if "stages" not in config:
                if path.endswith(os.path.join(stage, "config.json")) or \
                        config.get("task") == stage:
                    return config
                raise ValueError(f"{path}: the config of a {config.get('task')!r} run, not of "
                                 f"one with a {stage!r} stage")
            found = [s for s in resolve_stages(config, run_dir, registry) if s.name == stage]
            if not found:
                raise ValueError(f"{path}: the run has no enabled stage {stage!r}")
            return found[0].config
    raise FileNotFoundError(f"{run_dir}: no {stage}/config.json or config.json; is it the "
                            f"folder of a run?")


def find_stage(results: Sequence[StageResult], task_name: str) -> StageResult | None:
    """The last trained stage of ``task_name`` (a report's baseline), or None."""
    found = [r for r in results if r.task_name == task_name]
    return found[-1] if found else None
