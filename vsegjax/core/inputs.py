"""Data glue shared by the tasks: config -> grain iterators and evaluation batches."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vsegjax.data import augment as augment_lib
from vsegjax.data import datasets, pipeline
from vsegjax.core import sharding
def train_augment(config: ml_collections.ConfigDict) -> augment_lib.Augment:
    return augment_lib.Augment.from_config(config.input.augment)


def eval_augment(config: ml_collections.ConfigDict) -> augment_lib.Augment:
    """Deterministic: only the resize to the working resolution (if any)."""
    size = config.input.augment.resize
    return augment_lib.Augment(resize=tuple(size) if size else None, scale_range=None,
                               crop_size=None, hflip=False, color=None)


def train_iterator(config: ml_collections.ConfigDict, seed: int, window: tuple[int, int],
                   label_frame: str | int,
                   batch_fn: Callable[[dict], dict] | None = None) -> Iterator[dict]:
    """A checkpointable grain iterator of augmented host batches of the train split."""
    source = datasets.open_split(config.data, config.input.train_split)
    ds = pipeline.make_dataset(source, batch_size=config.input.batch_size, seed=seed,
                               window=window, label_frame=label_frame,
                               augment=train_augment(config), batch_fn=batch_fn,
                               num_classes=config.model.num_classes,
                               class_uniform=config.input.class_uniform,
                               worker_count=config.input.worker_count)
    return iter(ds)


def eval_batches(config: ml_collections.ConfigDict, window: tuple[int, int] | None,
                 label_frame: str | int = "annotated",
                 batch_fn: Callable[[dict], dict] | None = None,
                 mesh: Mesh | None = None, per_process: bool = False
                 ) -> Iterator[dict[str, Any]]:
    """Yields the evaluation split as batches, in order, each example once.

    ``eval.num_snippets`` (0 = all) bounds the cost. Batches are padded by repeating the
    last example so every batch has the same rows; ``valid`` marks the real ones.

    Without ``mesh``: whole host batches of ``eval.batch_size`` rows. With ``mesh``: a
    global batch (``eval.batch_size`` rounded up to a multiple of the mesh's devices)
    of which this process reads and transforms only its own rows, placed on the mesh as
    global arrays sharded over all its devices; reduce over the batch on the device
    (e.g. ``evaluation.confusion_matrix``) and every process gets the whole sum.

    With ``per_process``: host batches of this process' rows of each global batch
    (``eval.batch_size`` rounded up to a multiple of the processes, or with ``mesh`` of
    its devices; process p takes rows p, p + P, ...), with ``index``, each row's snippet
    index; for host-side reports, which run their model on these rows over the whole
    mesh with ``sharding.rows_to_mesh``/``rows_from_mesh`` and pool their sums with
    ``vsegjax.evaluation.pooling``. One process without ``mesh`` gets exactly the
    batches of the default.
    """
    source = datasets.open_split(config.data, config.eval.split)
    n = len(source) if not config.eval.num_snippets else min(config.eval.num_snippets,
                                                             len(source))
    bs, rows_of = config.eval.batch_size, slice(None)
    if per_process:  # every P-th row, so a short split still spreads over the processes
        multiple = mesh.devices.size if mesh is not None else jax.process_count()
        bs = -(-bs // multiple) * multiple
        rows_of = slice(jax.process_index(), None, jax.process_count())
    elif mesh is not None:
        devices = mesh.devices.size
        bs = -(-bs // devices) * devices
        local = bs // jax.process_count()
        rows_of = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    transform = pipeline.SnippetTransform(window, label_frame, eval_augment(config),
                                          config.model.num_classes)
    rng = np.random.default_rng(0)  # unused by the deterministic transform
    for start in range(0, n, bs):
        # Global rows start..start+bs, the tail padded with the last real example.
        idx = [min(i, n - 1) for i in range(start, start + bs)][rows_of]
        # The padding repeats one example: transform each distinct one once.
        done = {i: transform.random_map(source[i], rng) for i in dict.fromkeys(idx)}
        rows = [done[i] for i in idx]
        batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        batch["valid"] = np.arange(start, start + bs)[rows_of] < n
        if per_process:
            batch["index"] = np.arange(start, start + bs)[rows_of]
        if batch_fn is not None:
            batch = batch_fn(batch)
        if mesh is not None and not per_process:
            batch = sharding.to_global_batch(batch, mesh)
        yield batch


def num_eval_snippets(config: ml_collections.ConfigDict) -> int:
    n = len(datasets.open_split(config.data, config.eval.split))
    return n if not config.eval.num_snippets else min(config.eval.num_snippets, n)
