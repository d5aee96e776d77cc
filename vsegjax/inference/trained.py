"""A trained run's segmentation model as pure functions, for ``segment`` and ``export``.

``load(run_dir)`` reads a run folder (the runner's workdir, or one stage's folder) and
returns a ``TrainedModel``: the per-frame function ``frame_logits(variables, frames)``
(frames float32 [B, H, W, 3] in [0, 1] -> logits [B, H, W, C]) of the static segmenter,
of GRFP's static net or of EFC's segmentation branch (EFC computes no flow at inference),
and for a GRFP run the forward STGRU step (GRFP eqs. 2-6), so a video is segmented one
frame at a time, carrying the estimate along the flow from each frame to the one before.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import files, viz
from vsegjax.data import datasets
from vsegjax.models import flow_providers
from vsegjax.models.stgru import stgru_step
from vsegjax.models.video import StaticModel
from vsegjax.train import checkpoint, experiment

SEGMENT_TASKS = ("static", "grfp", "efc")


@dataclasses.dataclass
class TrainedModel:
    """What a stage of a run segments with (see the module doc)."""

    run_dir: str              # the stage's folder (holds checkpoints/)
    stage: str
    task_name: str            # one of SEGMENT_TASKS
    config: ml_collections.ConfigDict
    step: int
    variables: dict           # host arrays of the per-frame model: {"params": ..., ...}
    frame_logits: Callable[[dict, jax.Array], jax.Array]
    input_size: tuple[int, int]  # (H, W) the run trained at
    class_names: list[str]
    palette: np.ndarray       # uint8 [C, 3]
    stgru: dict | None = None    # GRFP: the forward cell's parameters (W_ir, ..., lambda)
    center_inputs: bool = True
    flow_provider: Any = None    # GRFP: the run's flow (a FlowProvider)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def recurrent(self) -> bool:
        return self.stgru is not None

    def stgru_step(self, stgru: dict, h_prev: jax.Array, x_logits: jax.Array,
                   frame: jax.Array, prev_frame: jax.Array, flow: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """(h_t, log-probabilities_t) from ``h_prev`` [B, H, W, C] (probabilities in frame
        t-1's grid), frame t's static logits, I_t, I_{t-1} (float [0, 1]) and the flow
        [B, H, W, 2] from frame t to frame t-1 (GRFP eqs. 2-6; the same step as training)."""
        x = jax.nn.softmax(x_logits.astype(jnp.float32), axis=-1)
        h, logits, _ = stgru_step(stgru, h_prev, x, frame, prev_frame, flow,
                                  center_inputs=self.center_inputs)
        return h, jax.nn.log_softmax(logits, axis=-1)

    def signature(self) -> dict[str, Any]:
        """Names, palette and resolution of the model, for an export's signature.json."""
        return {"run": self.run_dir, "stage": self.stage, "task": self.task_name,
                "step": self.step, "num_classes": self.num_classes,
                "class_names": self.class_names, "palette": self.palette.tolist(),
                "input_size": list(self.input_size)}


def find_stage(run_dir: str, stage: str | None = None
               ) -> tuple[str, str, str, ml_collections.ConfigDict]:
    """(stage folder, stage name, task name, stage config): ``stage`` of the run in
    ``run_dir``, by default its last stage that segments; ``run_dir`` may also be one
    stage's folder."""
    path = os.path.join(run_dir, "config.json")
    if not files.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no config.json; is it the folder of a run?")
    config = ml_collections.ConfigDict(json.loads(files.read_text(path)))
    if "stages" not in config:  # one stage's folder, or a run from before the runner
        name = os.path.basename(os.path.normpath(run_dir))
        task = config.get("task") or _task_of(name, config)
        if stage not in (None, name):
            raise ValueError(f"{run_dir} is the folder of stage {name!r}, not {stage!r}")
        return run_dir, name, task, config
    stages = experiment.resolve_stages(config, run_dir)
    if stage is not None:
        found = [s for s in stages if s.name == stage]
        if not found:
            raise ValueError(f"{path}: no enabled stage {stage!r}; stages: "
                             f"{[s.name for s in stages]}")
    else:
        found = [s for s in stages if s.task_name in SEGMENT_TASKS]
        if not found:
            raise ValueError(f"{path}: no stage of the run segments (tasks "
                             f"{list(SEGMENT_TASKS)}); stages: {[s.name for s in stages]}")
    s = found[-1]
    return s.workdir, s.name, s.task_name, experiment.load_stage_config(run_dir, s.name)


def _task_of(folder_name: str, config: ml_collections.ConfigDict) -> str:
    """A stage config names no task: its folder does (the runner names stage folders
    after their stages, usually the task), else its task's own config block."""
    if folder_name in experiment.TASKS:
        return folder_name
    for task in ("warp_refine", "vplr", "sdc", "efc", "grfp"):
        if task in config:
            return task
    return "static"


def _branch(params: dict, model_state: dict, name: str) -> dict:
    """The variables under top-level module ``name``, shaped for a ``StaticModel``."""
    out = {"params": {name: params[name]}}
    for col, groups in model_state.items():
        if name in groups:
            out[col] = {name: groups[name]}
    return out


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
    task = experiment.task_class(task_name)(config, workdir=folder)
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
    latest checkpoint. ``flow`` ('dis' | 'farneback') replaces a GRFP run's flow source,
    which it must where the run read the dataset's stored flow."""

    folder, name, task_name, _ = find_stage(files.resolve(run_dir), stage)
    if task_name not in SEGMENT_TASKS:
        raise ValueError(f"{folder}: stage {name!r} is a {task_name!r} run; segment and "
                         f"export take {list(SEGMENT_TASKS)} runs")
    task, params, model_state, step, folder, name = load_task(run_dir, stage)
    return from_state(task, task_name, params, model_state, step=step, run_dir=folder,
                      stage=name, flow=flow)


def from_state(task: Any, task_name: str, params: dict, model_state: dict, step: int = 0,
               run_dir: str = "", stage: str = "", flow: str | None = None) -> TrainedModel:
    """The ``TrainedModel`` of a task's parameters (``load`` reads them from a run)."""

    config = task.config
    where = run_dir or f"the {task_name} task"
    names = list(config.data.get("class_names", [])) or \
        [str(k) for k in range(int(config.model.num_classes))]
    common = dict(run_dir=run_dir, stage=stage or task_name, task_name=task_name,
                  config=config, step=int(step), input_size=task.input_shape(),
                  class_names=names,
                  palette=viz.palette_for(datasets.palette_name(config.data))[:len(names)])
    if task_name == "static":
        model = task.model
        return TrainedModel(variables={"params": params, **model_state},
                            frame_logits=lambda v, x: model.apply(v, x, train=False), **common)
    if task_name == "efc":
        if task.flow_only:
            raise ValueError(f"{where}: a flow-only EFC run (efc.mode='flow_only') has no "
                             f"segmentation branch")
        return TrainedModel(variables=task.inference_variables(params, model_state),
                            frame_logits=task.inference_fn(), **common)
    # GRFP: its static net per frame, its forward cell along the flow.
    if config.grfp.mode == "backward":
        raise ValueError(f"{where}: a backward-mode GRFP run needs the frames after each "
                         f"one; segment and export stream forward (grfp.mode 'forward' "
                         f"or 'fwbw')")
    static = StaticModel(static=task.model.static)
    provider = task.provider
    if flow is not None:
        provider = flow_providers.make_flow_provider({"source": flow})
    elif isinstance(provider, flow_providers.DatasetFlow):
        raise ValueError(f"{where}: the run read the dataset's stored flow "
                         f"(flow.source='dataset'), which a new video does not have; pass "
                         f"--flow=dis or --flow=farneback")
    if isinstance(provider, flow_providers.LearnedFlow) and "flow" in params:
        provider = flow_providers.LearnedFlow(provider.module, {"params": params["flow"]})
    return TrainedModel(variables=_branch(params, model_state, "static"),
                        frame_logits=lambda v, x: static.apply(v, x, train=False),
                        stgru=dict(params["grfp"]["forward"]),
                        center_inputs=bool(config.grfp.center_inputs),
                        flow_provider=provider, **common)
