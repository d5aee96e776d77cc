"""What a method plugs into the core: one ``Task`` subclass per method.

Who calls what (every member below is used by one of them, and by nothing else):

  the runner (``core.experiment``)  ``config_template`` (the blocks it reads, with their
                                     defaults), constructs it (checking its config),
                                     ``report`` scores the run after the last stage
  the trainer (``core.trainer``)     ``init_variables``, ``frozen_params``,
                                     ``pretrained_source``, ``load_pretrained``,
                                     ``init_from``, ``bind_mesh``, ``train_iterator``,
                                     ``loss_fn``, ``evaluate``
  ``vsegjax.compile``                 ``batch_spec`` (the batch ``loss_fn`` reads, as
                                     shapes) and ``predictor``
  the apps (``segment``, ``export``,  ``segments``, ``predictor`` (the per-frame function
  ``inference.trained``)             and, for a recurrent method, its streaming step)

The registry's report scores a run; the reports of a method may use more of its own task.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from jax.sharding import Mesh

from vsegjax.core import config as core_config
from vsegjax.core import sharding
from vsegjax.data import datasets

Batch = Mapping[str, Any]
Variables = dict[str, Any]


class Task(abc.ABC):
    """A method's model, losses, data and evaluation, as the trainer needs them.

    The trainer owns the loop, sharding, optimiser, checkpoints and logging; a task owns
    everything that differs between GRFP, EFC, VPLR and Warp-Refine.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        # Resolved (``core.config.resolve``): every field the task reads is there.
        self.config = self.resolve_config(config)
        # The stage's folder (the runner sets it), for files a task caches beside its
        # checkpoints; None where a task is built outside a run.
        self.workdir = workdir
        # The trainer's mesh (``bind_mesh``): ``evaluate`` shards its batches over it.
        self.mesh: Mesh | None = None

    # Whether a stage of this task gives a segmentation model (``predictor``); the apps
    # take a run's last such stage by default.
    segments: bool = False

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        """Every block and field this task (and the trainer for it) reads, with its
        default; a method adds its own blocks (``core.config.extend``)."""
        return core_config.extend(core_config.engine_template(), data=datasets.data_block())

    @classmethod
    def resolve_config(cls, config: Any) -> ml_collections.ConfigDict:
        """``config`` with every field of ``config_template`` (``core.config.resolve``);
        the data block's defaults are its dataset's (``datasets.resolve``)."""
        given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        if given.get("data") is not None:
            given["data"] = datasets.resolve(given["data"]).to_dict()
        return core_config.resolve(given, cls.config_template())

    def bind_mesh(self, mesh: Mesh) -> None:
        """The trainer hands over its mesh before it asks for the first batch."""
        self.mesh = mesh

    def eval_mesh(self) -> Mesh:
        """Where evaluation runs: the trainer's mesh, else all devices."""
        return self.mesh if self.mesh is not None else sharding.make_mesh()

    def frozen_params(self) -> tuple[str, ...]:
        """Top-level parameter groups that get no gradient, so no optimiser state either
        (joined with ``optimizer.frozen`` by the trainer)."""
        return ()

    def input_shape(self) -> tuple[int, int]:
        """(H, W) of training examples: the crop, else the resize of ``input.augment``."""
        size = self.config.input.augment.crop_size or self.config.input.augment.resize
        return int(size[0]), int(size[1])

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The global training batch of ``batch_size`` rows as ``loss_fn`` reads it: the
        shapes and dtypes ``train_iterator`` yields for those keys. ``vsegjax.compile``
        compiles the train step for it without reading any data."""
        raise NotImplementedError(f"{type(self).__name__} declares no batch_spec, so its step "
                                  f"cannot be compiled without data")

    def snippet_batch(self, batch_size: int, frames: int, *, labels: bool = True
                      ) -> dict[str, jax.ShapeDtypeStruct]:
        """``frames`` [B, T, H, W, 3] float32 (and ``labels`` [B, T, H, W] int32) at the
        training size: the pipeline's layout (``data.pipeline``)."""
        h, w = self.input_shape()
        out = {"frames": jax.ShapeDtypeStruct((batch_size, frames, h, w, 3), jnp.float32)}
        if labels:
            out["labels"] = jax.ShapeDtypeStruct((batch_size, frames, h, w), jnp.int32)
        return out

    @abc.abstractmethod
    def init_variables(self, rng: jax.Array) -> Variables:
        """Model variables (``params`` plus collections such as ``batch_stats``)."""

    @abc.abstractmethod
    def loss_fn(self, params: Any, model_state: Variables, batch: Batch,
                rng: jax.Array) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
        """(total loss, (named scalar metrics incl. each loss term, new model_state))."""

    @abc.abstractmethod
    def train_iterator(self, seed: int) -> Iterator[dict]:
        """Host-local batches; must support ``get_state``/``set_state`` (grain) for resume."""

    def evaluate(self, params: Any, model_state: Variables, step: int) -> dict[str, float]:
        """Scalars for the writer during training; the default evaluates nothing."""
        del params, model_state, step
        return {}

    def pretrained_source(self) -> str:
        """Where ``load_pretrained`` reads from (``model.pretrained``), "" for nothing: a
        task without a pretrained part has nothing to read."""
        return ""

    def load_pretrained(self, variables: Variables, source: str) -> Variables:
        """``variables`` with the pretrained weights of ``source`` (``model.pretrained``)
        merged in; the trainer asks only for a fresh run without ``train.init_from``.
        A task whose model has no pretrained part refuses it."""
        del variables
        raise ValueError(f"config field model.pretrained: {source!r}, but the "
                         f"{type(self).__name__} has no backbone to initialise from it")

    def predictor(self, params: Any, model_state: Variables, flow: str | None = None
                  ) -> "Predictor":
        """What ``segment``/``export`` run: the per-frame function and, for a recurrent
        method, the step that carries the estimate to the next frame. ``flow`` replaces
        the flow source a recurrent method trained with. Only tasks with ``segments``."""
        del params, model_state, flow
        raise ValueError(f"a {type(self).__name__} stage gives no segmentation model")

    def init_from(self, variables: Variables, loaded: Variables) -> Variables:
        """Merges variables of an earlier run (``train.init_from``) into fresh ones.

        The default copies every top-level group of each collection present in both, so
        a static segmenter trained alone seeds a video model whose ``params`` hold it under
        the same key. A shared group whose shapes differ (another backbone or class count)
        is an error, not a silent fresh start; groups of one side only are left alone.
        """
        out = dict(variables)
        copied = []
        for collection, groups in variables.items():
            src = loaded.get(collection, {})
            new = dict(groups)
            for key, value in groups.items():
                if key not in src:
                    continue
                if not _same_shapes(value, src[key]):
                    raise ValueError(
                        f"train.init_from: group {collection}/{key} has other shapes in the "
                        f"loaded run (a different model config?): {_shape_tree(src[key])} vs "
                        f"{_shape_tree(value)}")
                new[key] = src[key]
                copied.append(f"{collection}/{key}")
            out[collection] = new
        if not copied:
            raise ValueError("train.init_from: the loaded run shares no parameter group with "
                             f"this model (it has {sorted(loaded.get('params', {}))})")
        logging.info("init_from copied %s", ", ".join(copied))
        return out


@dataclasses.dataclass
class Predictor:
    """A trained stage as pure functions, for the apps (``inference.trained``).

    ``frame_logits(variables, frames)``: frames float32 [B, H, W, 3] in [0, 1] -> logits
    [B, H, W, C]. A recurrent method adds ``step_params`` and
    ``step(step_params, h_prev, x_logits, frame, prev_frame, flow) -> (h_t, log-probs_t)``,
    with h_prev in frame t-1's grid and ``flow`` from frame t to frame t-1, computed by
    ``flow_provider``.
    """

    variables: dict
    frame_logits: Callable[[dict, jax.Array], jax.Array]
    step: Callable[..., tuple[jax.Array, jax.Array]] | None = None
    step_params: dict | None = None
    flow_provider: Any = None


def _shape_tree(tree: Any) -> str:
    text = str(jax.tree.map(lambda x: tuple(x.shape), tree))
    return text if len(text) < 300 else text[:300] + "..."


def _same_shapes(a: Any, b: Any) -> bool:
    try:
        shapes = jax.tree.map(lambda x, y: x.shape == y.shape, a, b)
    except ValueError:
        return False
    return all(jax.tree.leaves(shapes))
