"""A trained run's segmentation model as pure functions, for ``segment`` and ``export``.

``load(run_dir)`` reads a run folder (the runner's workdir, or one stage's folder) and
returns a ``TrainedModel``: what the stage's task gives as its ``predictor`` (the
per-frame function ``frame_logits(variables, frames)``, frames float32 [B, H, W, 3] in
[0, 1] -> logits [B, H, W, C], and for a recurrent method such as GRFP the step that
carries the estimate along the flow from each frame to the one before), with the run's
names, palette and resolution. Which stages segment is the task's to say
(``Task.segments``); nothing here knows a method.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from vsegjax import experiments, files, viz
from vsegjax.core import checkpoint, run_record
from vsegjax.core.task import Predictor
from vsegjax.data import datasets


@dataclasses.dataclass
class TrainedModel:
    """What a stage of a run segments with (see the module doc)."""

    run_dir: str              # the stage's folder (holds checkpoints/)
    stage: str
    task_name: str
    config: ml_collections.ConfigDict
    step: int
    predictor: Predictor
    input_size: tuple[int, int]  # (H, W) the run trained at
    class_names: list[str]
    palette: np.ndarray       # uint8 [C, 3]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def variables(self) -> dict:
        """Host arrays of the per-frame model: {"params": ..., ...}."""
        return self.predictor.variables

    @property
    def frame_logits(self) -> Callable[[dict, jax.Array], jax.Array]:
        return self.predictor.frame_logits

    @property
    def recurrent(self) -> bool:
        return self.predictor.step is not None

    @property
    def stgru(self) -> dict | None:
        """The recurrent step's parameters (GRFP: the forward cell's W_ir, ..., lambda)."""
        return self.predictor.step_params

    @property
    def flow_provider(self) -> Any:
        """A recurrent model's flow (a ``FlowProvider``)."""
        return self.predictor.flow_provider

    def stgru_step(self, stgru: dict, h_prev: jax.Array, x_logits: jax.Array,
                   frame: jax.Array, prev_frame: jax.Array, flow: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """(h_t, log-probabilities_t) from ``h_prev`` [B, H, W, C] (probabilities in frame
        t-1's grid), frame t's static logits, I_t, I_{t-1} (float [0, 1]) and the flow
        [B, H, W, 2] from frame t to frame t-1 (for GRFP, its eqs. 2-6 as in training)."""
        return self.predictor.step(stgru, h_prev, x_logits, frame, prev_frame, flow)

    def signature(self) -> dict[str, Any]:
        """Names, palette and resolution of the model, for an export's signature.json."""
        return {"run": self.run_dir, "stage": self.stage, "task": self.task_name,
                "step": self.step, "num_classes": self.num_classes,
                "class_names": self.class_names, "palette": self.palette.tolist(),
                "input_size": list(self.input_size)}


def _segments(task_name: str) -> bool:
    return bool(experiments.task_class(task_name).segments)


def find_stage(run_dir: str, stage: str | None = None
               ) -> tuple[str, str, str, ml_collections.ConfigDict]:
    """(stage folder, stage name, task name, stage config): ``stage`` of the run in
    ``run_dir``, by default its last stage that segments; ``run_dir`` may also be one
    stage's folder."""
    path = os.path.join(run_dir, "config.json")
    if not files.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no config.json; is it the folder of a run?")
    config = ml_collections.ConfigDict(json.loads(files.read_text(path)))
    if "stages" not in config:  # one stage's folder: stage.json, else its run, names it
        name = os.path.basename(os.path.normpath(run_dir))
        record = os.path.join(run_dir, run_record.STAGE_FILE)
        parent = os.path.dirname(os.path.normpath(run_dir))
        if files.isfile(record):
            name, task = (json.loads(files.read_text(record))[k] for k in ("stage", "task"))
        elif files.isfile(os.path.join(parent, "config.json")):
            _, name, task, _ = find_stage(parent, name)
        else:
            raise FileNotFoundError(f"{run_dir}: a stage's folder without its "
                                    f"{run_record.STAGE_FILE} or its run's config.json; pass "
                                    f"the run's folder")
        if stage not in (None, name):
            raise ValueError(f"{run_dir} is the folder of stage {name!r}, not {stage!r}")
        return run_dir, name, task, config
    stages = experiments.resolve_stages(config, run_dir)
    if stage is not None:
        found = [s for s in stages if s.name == stage]
        if not found:
            raise ValueError(f"{path}: no enabled stage {stage!r}; stages: "
                             f"{[s.name for s in stages]}")
    else:
        found = [s for s in stages if _segments(s.task_name)]
        if not found:
            raise ValueError(f"{path}: no stage of the run segments; stages: "
                             f"{[(s.name, s.task_name) for s in stages]}")
    s = found[-1]
    return s.workdir, s.name, s.task_name, experiments.load_stage_config(run_dir, s.name)


def load_task(run_dir: str, stage: str | None = None
              ) -> tuple[Any, dict, dict, int, str, str]:
    """(task, params, model_state, step, stage folder, stage name) of ``stage`` of a run
    (default: its last segmenting stage) at its latest checkpoint, for calling the task's
    own functions (EFC's ``predict_flow``, say) on a trained run."""
    run_dir = files.resolve(run_dir)
    folder, name, task_name, config = find_stage(run_dir, stage)
    if not files.isdir(os.path.join(folder, "checkpoints")):
        raise FileNotFoundError(f"{folder}: no checkpoints/ folder; has stage {name!r} "
                                f"trained?")
    task = experiments.task_class(task_name)(config, workdir=folder)
    # Read against the shapes the run's config implies (and only the model's variables).
    expected = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
    try:
        variables, step = checkpoint.load_variables(folder, expected, "checkpoint")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{folder}: no checkpoint to load ({e})") from e
    params = variables.pop("params")
    return task, params, variables, step, folder, name


def load(run_dir: str, stage: str | None = None, flow: str | None = None) -> TrainedModel:
    """The trained model of ``stage`` (default: the run's last segmenting stage) at its
    latest checkpoint. ``flow`` ('dis' | 'farneback') replaces a recurrent run's flow
    source, which it must where the run read the dataset's stored flow."""

    folder, name, task_name, _ = find_stage(files.resolve(run_dir), stage)
    if not _segments(task_name):
        raise ValueError(f"{folder}: stage {name!r} is a {task_name!r} run, which gives no "
                         f"segmentation model; segment and export take a stage of "
                         f"{sorted(n for n in experiments.REGISTRY if _segments(n))}")
    task, params, model_state, step, folder, name = load_task(run_dir, stage)
    return from_state(task, task_name, params, model_state, step=step, run_dir=folder,
                      stage=name, flow=flow)


def from_state(task: Any, task_name: str, params: dict, model_state: dict, step: int = 0,
               run_dir: str = "", stage: str = "", flow: str | None = None) -> TrainedModel:
    """The ``TrainedModel`` of a task's parameters (``load`` reads them from a run)."""
    config = task.config
    where = run_dir or f"the {task_name} task"
    try:
        predictor = task.predictor(params, model_state, flow)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    names = list(config.data.class_names) or \
        [str(k) for k in range(int(config.model.num_classes))]
    return TrainedModel(
        run_dir=run_dir, stage=stage or task_name, task_name=task_name, config=config,
        step=int(step), predictor=predictor, input_size=task.input_shape(), class_names=names,
        palette=viz.palette_for(datasets.palette_name(config.data))[:len(names)])
