"""VPLR task: a segmenter trained on labelled frames plus propagated (image, label) pairs.

From each training snippet's labelled frame, labels are propagated to the frames within
``vplr.k`` of it along the motion source (``vplr.motion``: "dis", "farneback", or "sdc"
with ``vplr.sdc_workdir``), at the training size or, with ``vplr.propagate_at="native"``,
at the dataset's own size:

  label  (true frame t, label moved to t)             label propagation (LP)
  joint  (anchor image moved to t, label moved to t)  joint propagation (JP)

The pairs are computed once (cached as ``<workdir>/propagated_<hash>.npz``) and served
as one-frame snippets through the same grain pipeline and augmentation as the original
frames; each step concatenates ``input.batch_size`` original and ``vplr.propagated_batch_size``
propagated examples (the mixing ratio). Boundary relaxation is ``loss.relaxation_window``
(losses/relaxation.py), on every example or, with ``loss.relaxation_on="propagated"``,
only on the propagated pairs; class-uniform sampling is ``input.class_uniform``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from etils import epath

from vsegjax import files, losses
from vsegjax.data import datasets, pipeline, transforms
from vsegjax.models import propagate as prop
from vsegjax.losses.segmentation import IGNORE_LABEL
from vsegjax.methods.vplr.sdc import load_sdc_flow
from vsegjax.core import config as core_config
from vsegjax.core import inputs as data
from vsegjax.core import experiment
from vsegjax.methods.vplr import config as vplr_config
from vsegjax.models.segmenter import apply_static
from vsegjax.methods.static.task import StaticSegmentationTask

MODES = ("none", "label", "joint")
# Where labels are moved: "train" at the training size (``input.augment.resize``),
# "native" at the dataset's own size, then resized (labels by nearest). On synthetic data
# (128x256 stored, 64x128 trained) native DIS propagation is more accurate: mIoU of the
# moved labels (60 train snippets) 0.920 / 0.880 / 0.837 vs 0.880 / 0.825 / 0.780 at k = 1 / 2 / 3.
PROPAGATE_AT = ("train", "native")


def _resize_frames(frames: np.ndarray, labels: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames, labels
    h, w = int(size[0]), int(size[1])
    return (np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]),
            np.stack([cv2.resize(l, (w, h), interpolation=cv2.INTER_NEAREST) for l in labels]))


def motion_source(v: ml_collections.ConfigDict):
    if v.motion == "sdc":
        return load_sdc_flow(v.sdc_workdir)
    return v.motion


def propagated_pairs(config: ml_collections.ConfigDict, cache_dir: str) -> dict[str, np.ndarray]:
    """{"frames" [N, H, W, 3] uint8, "labels" [N, H, W], "k" [N]} for the train split."""
    v = config.vplr
    size = config.input.augment.resize
    at = v.propagate_at
    if at not in PROPAGATE_AT:
        raise ValueError(f"config field vplr.propagate_at: {at!r}; choose from "
                         f"{list(PROPAGATE_AT)}")
    key = json.dumps({"data": config.data.to_dict(), "size": list(size or []), "k": int(v.k),
                      "mode": v.mode, "motion": v.motion, "sdc": v.sdc_workdir,
                      "split": config.input.train_split, "at": at},
                     sort_keys=True)
    path = os.path.join(cache_dir, f"propagated_{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz")
    if files.isfile(path):
        with np.load(io.BytesIO(epath.Path(path).read_bytes())) as z:
            return {k: z[k] for k in z.files}
    source = datasets.open_split(config.data, config.input.train_split)
    motion = motion_source(v)
    out_f, out_l, out_k = [], [], []
    for i in tqdm.trange(len(source), desc=f"{v.mode} propagation", unit="snippet"):
        ex = source[i]
        frames, labels = np.asarray(ex["frames"]), np.asarray(ex["labels"])
        if at == "train":
            frames, labels = _resize_frames(frames, labels, size)
        a = int(ex["label_index"])
        targets = [t for t in range(len(frames)) if t != a and abs(t - a) <= int(v.k)]
        flows = prop.video_flows(frames.astype(np.float32) / 255.0, motion)
        if v.mode == "label":
            moved = prop.propagate_labels(labels[a], a, *flows, targets)
            pairs = [(frames[t], moved[t]) for t in targets]
        else:
            moved = prop.propagate_joint(frames[a], labels[a], a, *flows, targets)
            pairs = [moved[t] for t in targets]
        for t, (img, lab) in zip(targets, pairs):
            if at == "native":  # stored at the training size: sharper and 4x smaller
                img, lab = (x[0] for x in _resize_frames(np.asarray(img)[None],
                                                          np.asarray(lab)[None], size))
            out_f.append(img)
            out_l.append(lab)
            out_k.append(abs(t - a))
    result = {"frames": np.stack(out_f).astype(np.uint8), "labels": np.stack(out_l),
              "k": np.asarray(out_k, np.int32)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result)
    # Whole or not at all, by process 0 only, on a disk or a bucket.
    files.atomic_write_bytes(path, buffer.getvalue())
    return result


class VPLRTask(StaticSegmentationTask):
    """``StaticSegmentationTask`` whose batches mix in propagated pairs."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        return core_config.extend(super().config_template(),
                                  **vplr_config.vplr_template_blocks())

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        config = self.config
        v = config.vplr
        if v.mode not in MODES:
            raise ValueError(f"config field vplr.mode: {v.mode!r}; choose from {list(MODES)}")
        if v.mode != "none" and not workdir:
            raise ValueError("VPLRTask needs a workdir to cache the propagated pairs in")
        self.cache_dir = workdir
        where = config.loss.relaxation_on
        if where not in ("all", "propagated"):
            raise ValueError(f"config field loss.relaxation_on: 'all' or 'propagated'; got "
                             f"{where!r}")
        self.relax_propagated_only = where == "propagated" and v.mode != "none"

    def loss_fn(self, params, model_state, batch, rng):
        if not self.relax_propagated_only:
            return super().loss_fn(params, model_state, batch, rng)
        # Plain NLL on the labelled frames, the relaxed NLL on the propagated pairs.
        images, labels = batch["frames"][:, 0], batch["labels"][:, 0]
        logits, model_state = apply_static(self.model, params, model_state, images, True, rng)
        window = self.relaxation_window
        propagated = batch["propagated"][:, None, None]
        true_labels = jnp.where(propagated, IGNORE_LABEL, labels)
        moved_labels = jnp.where(propagated, labels, IGNORE_LABEL)
        n_true = jnp.sum(true_labels != IGNORE_LABEL)
        n_moved = jnp.sum(moved_labels != IGNORE_LABEL)
        l_seg = (losses.segmentation_loss(logits, true_labels, 0) * n_true
                 + losses.segmentation_loss(logits, moved_labels, window) * n_moved
                 ) / jnp.maximum(n_true + n_moved, 1)
        metrics = {"L_seg": l_seg, "pixel_acc": losses.pixel_accuracy(logits, labels)}
        return l_seg, (metrics, model_state)

    def batch_spec(self, batch_size):
        if self.config.vplr.mode == "none":
            return super().batch_spec(batch_size)
        rows = batch_size + int(self.config.vplr.propagated_batch_size)  # labelled + moved
        return dict(self.snippet_batch(rows, 1),
                    propagated=jax.ShapeDtypeStruct((rows,), jnp.bool_))

    def train_iterator(self, seed):
        v = self.config.vplr
        if v.mode == "none":
            return super().train_iterator(seed)
        original = data.train_iterator(self.config, seed, window=(0, 0),
                                       label_frame=self.config.input.label_frame,
                                       batch_fn=transforms.Tagged(False))
        pairs = propagated_pairs(self.config, self.cache_dir)
        ds = pipeline.make_dataset(
            transforms.PairSource(pairs), batch_size=int(v.propagated_batch_size), seed=seed + 1,
            window=(0, 0), label_frame="annotated", augment=data.train_augment(self.config),
            num_classes=self.num_classes,
            class_uniform=self.config.input.class_uniform,
            worker_count=self.config.input.worker_count, batch_fn=transforms.Tagged(True))
        return transforms.MixedIterator(original, iter(ds))


def report(config: ml_collections.ConfigDict, workdir: str,
           stages: Sequence[experiment.StageResult]) -> dict[str, Any]:
    """One row of the VPLR table: the segmenter's mIoU with the variant that trained it."""
    del workdir
    result = stages[-1]
    scores = result.task.evaluate(result.state.params, result.state.model_state, result.step)
    out = {"variant": config.variant, "seed": int(config.seed),
           "mode": config.vplr.mode,
           "relaxation_window": result.task.relaxation_window,
           "steps": result.step, **scores}
    print(json.dumps(out))
    return out
