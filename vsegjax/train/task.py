"""What a method plugs into the shared trainer: one ``Task`` subclass per method."""

from __future__ import annotations

import abc
from typing import Any, Iterator, Mapping

import jax
import ml_collections
from absl import logging
from jax.sharding import Mesh

from vsegjax.train import sharding

Batch = Mapping[str, Any]
Variables = dict[str, Any]


class Task(abc.ABC):
    """A method's model, losses, data and evaluation, as the trainer needs them.

    The trainer owns the loop, sharding, optimiser, checkpoints and logging; a task owns
    everything that differs between GRFP, EFC, VPLR and Warp-Refine.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        self.config = config
        # The stage's folder (the runner sets it), for files a task caches beside its
        # checkpoints; None where a task is built outside a run.
        self.workdir = workdir
        # The trainer's mesh (``train`` sets it): ``evaluate`` shards its batches over it.
        self.mesh: Mesh | None = None

    def eval_mesh(self) -> Mesh:
        """Where evaluation runs: the trainer's mesh, else all devices."""
        return self.mesh if self.mesh is not None else sharding.make_mesh()

    def frozen_params(self) -> tuple[str, ...]:
        """Top-level parameter groups that get no gradient, so no optimiser state either
        (joined with ``optimizer.frozen`` by the trainer)."""
        return ()

    def input_shape(self) -> tuple[int, int]:
        """(H, W) of training examples: the crop, else the resize of ``input.augment``."""
        size = self.config.input.augment.get("crop_size") or self.config.input.augment.resize
        return int(size[0]), int(size[1])

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


def _shape_tree(tree: Any) -> str:
    text = str(jax.tree.map(lambda x: tuple(x.shape), tree))
    return text if len(text) < 300 else text[:300] + "..."


def _same_shapes(a: Any, b: Any) -> bool:
    try:
        shapes = jax.tree.map(lambda x, y: x.shape == y.shape, a, b)
    except ValueError:
        return False
    return all(jax.tree.leaves(shapes))
