"""Static (per-frame) segmentation: GRFP's stage 1 and the baseline every method beats."""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import evaluation, files, losses, viz
from vsegjax.data import datasets
from vsegjax.evaluation import pooling
from vsegjax.models.segmenter import make_segmenter
from vsegjax.models.segmenter import StaticModel, apply_static
from vsegjax.core import inputs as data
from vsegjax.core import experiment
from vsegjax.core import sharding
from vsegjax.core.task import Predictor
from vsegjax.methods.common import SegmenterTask


class StaticSegmentationTask(SegmenterTask):
    """Trains a segmenter on single labelled frames (``input.label_frame`` of each snippet)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        self.model = StaticModel(static=make_segmenter(self.config.model))
        self.num_classes = self.config.model.num_classes

    def init_variables(self, rng):
        h, w = self.input_shape()
        return dict(self.model.init(rng, jnp.zeros((1, h, w, 3)), train=False))

    def loss_fn(self, params, model_state, batch, rng):
        images, labels = batch["frames"][:, 0], batch["labels"][:, 0]
        logits, model_state = apply_static(self.model, params, model_state, images, True, rng)
        # loss.relaxation_window > 0: VPLR's boundary label relaxation (losses/relaxation.py).
        terms = {"L_seg": losses.segmentation_loss(logits, labels, self.relaxation_window)}
        metrics = dict(terms, pixel_acc=losses.pixel_accuracy(logits, labels))
        return terms["L_seg"], (metrics, model_state)

    segments = True

    def predictor(self, params, model_state, flow=None) -> Predictor:
        """The segmenter on each frame (``flow`` is unused: nothing is carried)."""
        model = self.model
        return Predictor(variables={"params": params, **model_state},
                         frame_logits=lambda v, x: model.apply(v, x, train=False))

    def batch_spec(self, batch_size):
        return self.snippet_batch(batch_size, 1)

    def train_iterator(self, seed):
        return data.train_iterator(self.config, seed, window=(0, 0),
                                   label_frame=self.config.input.label_frame)

    @functools.cached_property
    def _predict(self):
        @jax.jit
        def predict(params, model_state, images):
            logits, _ = apply_static(self.model, params, model_state, images, False)
            return jnp.argmax(logits, -1)
        return predict

    @functools.cached_property
    def _confusion(self):
        @jax.jit
        def confusion(params, model_state, batch):
            pred = self._predict(params, model_state, batch["frames"][:, 0])
            return evaluation.confusion_matrix(pred, batch["labels"][:, 0], self.num_classes,
                                               mask=batch["valid"])
        return confusion

    def evaluate(self, params, model_state, step) -> dict[str, float]:
        """mIoU on the labelled frames of the evaluation split, sharded over the mesh."""
        del step
        cms = evaluation.ConfusionMatrices(self.num_classes)
        for batch in data.eval_batches(self.config, window=(0, 0), mesh=self.eval_mesh()):
            cms.add_counts("static", np.asarray(self._confusion(params, model_state, batch)))
        return {"miou": cms.miou("static")}


def report(config: ml_collections.ConfigDict, workdir: str,
           stages: Sequence[experiment.StageResult]) -> dict[str, Any]:
    """The static segmenter against the positional-prior baseline (``eval_metrics.json``:
    {"static": {...}, "positional_prior": {...}}) and a few panels (frame, prediction,
    ground truth) in ``workdir/panels``."""
    result = stages[-1]
    task = result.task
    c = config.model.num_classes
    palette = viz.palette_for(datasets.palette_name(config.data))
    names = list(config.data.class_names) or [str(k) for k in range(c)]

    # The baseline learns its per-pixel prior from the training labels at eval resolution.
    train_cfg = ml_collections.ConfigDict(config.to_dict())
    train_cfg.eval.split = config.input.train_split
    # Each process takes its rows of every global batch; the counts are pooled below.
    prior = None
    for batch in data.eval_batches(train_cfg, window=(0, 0), per_process=True):
        labels = batch["labels"][batch["valid"], 0]
        prior = prior or evaluation.PositionalPrior(c, batch["labels"].shape[2:])
        prior.update(labels)
    prior.counts = pooling.sum_over_processes({"prior": prior.counts})["prior"]
    prior_map = prior.predict()

    cms = evaluation.ConfusionMatrices(c, ["static", "positional_prior"])
    shown = local = 0
    mesh = task.eval_mesh()  # each device predicts its rows of the global batch
    params, model_state = sharding.to_mesh((result.state.params, result.state.model_state),
                                           mesh)
    for batch in data.eval_batches(config, window=(0, 0), per_process=True, mesh=mesh):
        valid = batch["valid"]
        pred = sharding.rows_from_mesh(task._predict(
            params, model_state, sharding.rows_to_mesh(batch["frames"][:, 0], mesh)), mesh)
        for i in np.flatnonzero(valid):
            label = batch["labels"][i, 0]
            cms.add("static", pred[i], label)
            cms.add("positional_prior", prior_map, label)
            local += 1
            if files.is_writer() and shown < config.eval.num_panels:
                frame = (batch["frames"][i, 0] * 255).astype(np.uint8)
                panel = viz.make_panel([frame, viz.colorize_labels(pred[i], palette),
                                        viz.colorize_labels(label, palette)],
                                       ["frame", "prediction", "ground truth"], ncols=3)
                viz.save_png(os.path.join(workdir, "panels", f"example_{shown:03d}.png"), panel)
                shown += 1
    cms = cms.pooled()
    per_process = pooling.per_process(local)
    results: dict[str, Any] = {m: {"miou": cms.miou(m), "per_class_iou": cms.per_class(m, names)}
                               for m in ("static", "positional_prior")}
    results["split"] = config.eval.split
    results["resolution"] = list(prior_map.shape)
    results["num_snippets"] = int(sum(per_process))
    results["snippets_per_process"] = per_process
    print(f"{config.data.name} {config.eval.split} at {prior_map.shape[0]}x{prior_map.shape[1]}: "
          f"static mIoU {results['static']['miou']:.4f}, positional prior "
          f"{results['positional_prior']['miou']:.4f}")
    return results

