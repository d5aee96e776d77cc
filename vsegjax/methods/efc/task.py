"""EFC task: joint segmentation and unsupervised flow on frame pairs (the EFC paper).

One trainer (``vsegjax.core.trainer``); this module only says what a step computes:
whole snippets come from the pipeline, ``efc_pairs.sample_pairs`` draws pairs
(I_i, I_{i+dt}) from them, the ``EFCModel`` segments both frames and predicts flow and
occlusion both ways, and ``losses.efc.joint_loss_terms`` + ``combine`` give eq. (9) with
every computed term logged. Config fields (``config.efc``; defaults in
``methods/efc/config.py``):

  mode: "joint" | "flow_only" (unsupervised flow alone: no L_seg, no L_cons, no O_seg).
  flow_branch: "shared" (decoder on the shared encoder) | "separate" (own FlowNetS).
  fixed_flow: no gradient reaches the flow branch (TCC_fix: a pretrained, fixed FlowNetS).
  loss_weights: eq. (9)'s lambdas; a zero or absent weight means the term is not computed.
  pairs_per_snippet, dt_range, labelled_share: pair sampling (``efc_pairs``).
  labels: "annotated" | "all": which frames of a snippet keep their labels.
  unlabelled_data / unlabelled_split / unlabelled_batch_size: extra unlabelled snippets
  per batch (+UD).
  occlusion_in_cons, occlusion_in_pm, seg_occlusion, cons_occlusion_grad, cons_flow_grad,
  cons_normalize, cons_on,
  num_scales, scale_weights: see ``losses.efc.joint_loss_terms``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import evaluation, losses
from vsegjax.data import datasets, pipeline
from vsegjax.methods.efc import losses as efc_losses
from vsegjax.methods.efc.model import EFCModel, make_efc_model
from vsegjax.core import config as core_config
from vsegjax.core import inputs as data
from vsegjax.methods.efc import config as efc_config
from vsegjax.data.transforms import MixedIterator
from vsegjax.methods.efc.transforms import PrepareSnippets
from vsegjax.methods.efc.pairs import gather_frames, sample_pairs
from vsegjax.models.segmenter import StaticModel
from vsegjax.core.task import Predictor
from vsegjax.methods.common import SegmenterTask

MODES = ("joint", "flow_only")
SEG_TERMS = ("L_seg", "L_cons")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.efc`` up front, naming the field at fault."""
    e = config.efc
    if e.mode not in MODES:
        raise ValueError(f"config field efc.mode: {e.mode!r}; choose from {list(MODES)}")
    weights = {k: float(v) for k, v in dict(e.loss_weights).items() if v}
    unknown = set(weights) - set(efc_losses.DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"config field efc.loss_weights: unknown terms {sorted(unknown)}; "
                         f"known: {sorted(efc_losses.DEFAULT_WEIGHTS)}")
    if not weights:
        raise ValueError("config field efc.loss_weights: every weight is zero")
    if e.mode == "flow_only" and (set(weights) & set(SEG_TERMS) or e.seg_occlusion):
        raise ValueError(f"config field efc.loss_weights / efc.seg_occlusion: mode 'flow_only' "
                         f"trains no segmentation; drop {sorted(set(weights) & set(SEG_TERMS))}"
                         f"{' and seg_occlusion' if e.seg_occlusion else ''}")
    if e.mode == "flow_only" and e.flow_branch == "shared" and e.fixed_flow:
        raise ValueError("config field efc.fixed_flow: a fixed flow branch leaves nothing to "
                         "train in mode 'flow_only'")
    if e.cons_on not in efc_losses.CONS_ON:
        raise ValueError(f"config field efc.cons_on: {e.cons_on!r}; choose from "
                         f"{list(efc_losses.CONS_ON)}")
    if not isinstance(e.pairs_per_snippet, int) or e.pairs_per_snippet < 1:
        raise ValueError(f"config field efc.pairs_per_snippet: must be >= 1; got "
                         f"{e.pairs_per_snippet!r}")
    if (not isinstance(e.pairs_per_pass, int) or e.pairs_per_pass < 0
            or (e.pairs_per_pass and e.pairs_per_snippet % e.pairs_per_pass)):
        raise ValueError(f"config field efc.pairs_per_pass: 0 (all at once) or a divisor of "
                         f"efc.pairs_per_snippet={e.pairs_per_snippet}; got "
                         f"{e.pairs_per_pass!r}")
    if not 0.0 <= float(e.labelled_share) <= 1.0:
        raise ValueError(f"config field efc.labelled_share: must be in [0, 1]; got "
                         f"{e.labelled_share!r}")


class EFCTask(SegmenterTask):
    """The EFC joint model trained on pairs from whole snippets."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        return core_config.extend(super().config_template(), **efc_config.template_blocks())

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        validate_config(self.config)
        self.e = self.config.efc
        self.model: EFCModel = make_efc_model(self.config.model, self.e)
        self.flow_only = self.e.mode == "flow_only"
        self.weights = {k: float(v) for k, v in dict(self.e.loss_weights).items() if v}

    def init_variables(self, rng):
        h, w = self.input_shape()
        x = jnp.zeros((1, h, w, 3))
        # A flow-only separate FlowNetS has no segmenter variables (so a later run's
        # init_from copies only the flow branch).
        init = functools.partial(self.model.init, train=False, segmentation=self._segments)
        return dict(jax.jit(init)(rng, x, x))

    @property
    def _segments(self) -> bool:
        return not (self.flow_only and self.e.flow_branch == "separate")

    # ------------------------------------------------------------------ training step

    def pairs(self, batch: dict, rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(images [2N, H, W, 3], labels [2N, H, W], dt [N]) of the step's N = B x P pairs,
        first frames then second frames."""
        frames = batch["frames"]
        first, second = sample_pairs(
            rng, frames.shape[1], batch["label_pos"], batch["labelled"],
            self.e.pairs_per_snippet, tuple(self.e.dt_range), float(self.e.labelled_share))
        images = jnp.concatenate([gather_frames(frames, first), gather_frames(frames, second)])
        labels = jnp.concatenate([gather_frames(batch["labels"], first),
                                  gather_frames(batch["labels"], second)])
        return images, labels, (second - first).reshape(-1)

    def _pass(self, params, model_state, images, labels, k_drop):
        """Eq. (9) over one set of pairs: ``images`` [2N, H, W, 3] (first frames, then
        second frames), ``labels`` [2N, H, W]."""
        n = images.shape[0] // 2
        variables = {"params": params, **model_state}
        out, new_state = self.model.apply(
            variables, images[:n], images[n:], train=True,
            segmentation=self._segments,
            mutable=list(model_state), rngs={"dropout": k_drop})
        if self.e.fixed_flow:
            for key in ("flow", "pyramid", "occlusion", "occlusion_full", "occlusion_logits"):
                out[key] = jax.lax.stop_gradient(out[key])
        terms = efc_losses.joint_loss_terms(
            out, images, labels, num_scales=int(self.e.num_scales),
            scale_weights=tuple(self.e.scale_weights),
            occlusion_in_cons=bool(self.e.occlusion_in_cons),
            occlusion_in_pm=bool(self.e.occlusion_in_pm),
            seg_occlusion=bool(self.e.seg_occlusion),
            cons_occlusion_grad=bool(self.e.cons_occlusion_grad),
            cons_flow_grad=bool(self.e.cons_flow_grad),
            cons_normalize=bool(self.e.cons_normalize),
            cons_on=str(self.e.cons_on),
            edge_alpha=float(self.e.edge_alpha),
            relaxation_window=self.relaxation_window)
        total, values = efc_losses.combine(self.weights, terms)
        metrics = dict(values, occlusion_mean=jnp.mean(out["occlusion_full"]))
        if "logits" in out and not self.flow_only:
            metrics["pixel_acc"] = losses.pixel_accuracy(out["logits"], labels)
        return total, (metrics, {**model_state, **new_state})

    def loss_fn(self, params, model_state, batch, rng):
        k_pairs, k_drop = jax.random.split(rng)
        images, labels, dt = self.pairs(batch, k_pairs)
        pairs = int(self.e.pairs_per_snippet)
        per_pass = int(self.e.pairs_per_pass) or pairs
        if per_pass == pairs:
            total, (metrics, state) = self._pass(params, model_state, images, labels, k_drop)
        else:
            total, (metrics, state) = self._passes(params, model_state, images, labels,
                                                   k_drop, pairs // per_pass)
        return total, (dict(metrics, mean_dt=jnp.mean(dt.astype(jnp.float32))), state)

    def _passes(self, params, model_state, images, labels, k_drop, passes: int):
        """Eq. (9) averaged over ``passes`` sets of pairs, one set at a time: each set is
        the same slice of every snippet's pairs (so every chip keeps its rows), and its
        forward pass is recomputed for the backward one (``jax.checkpoint``), so only one
        set's activations are alive. Batch statistics are each set's."""
        def split(x):  # [2 B P, ...], first frames then second -> [passes, 2 B P / passes, ...]
            pairs = int(self.e.pairs_per_snippet)
            x5 = x.reshape((2, -1, passes, pairs // passes) + x.shape[1:])
            return jnp.moveaxis(x5, 2, 0).reshape((passes, -1) + x.shape[1:])

        @jax.checkpoint
        def one(carry, xs):
            state, total, metrics = carry
            index, images_k, labels_k = xs
            loss, (values, state) = self._pass(params, state, images_k, labels_k,
                                               jax.random.fold_in(k_drop, index))
            metrics = jax.tree.map(jnp.add, metrics, values)
            return (state, total + loss, metrics), None

        shapes = jax.eval_shape(lambda: self._pass(params, model_state, split(images)[0],
                                                   split(labels)[0], k_drop))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1][0])
        (state, total, metrics), _ = jax.lax.scan(
            one, (model_state, jnp.zeros((), jnp.float32), zeros),
            (jnp.arange(passes), split(images), split(labels)))
        return total / passes, (jax.tree.map(lambda m: m / passes, metrics), state)

    def batch_spec(self, batch_size):
        # Whole snippets (pairs are drawn on the device), the unlabelled ones appended.
        rows = batch_size + (int(self.e.unlabelled_batch_size) if self.e.unlabelled_data else 0)
        out = self.snippet_batch(rows, datasets.snippet_length(self.config.data))
        t = out["frames"].shape[1]
        out.update(label_pos=jax.ShapeDtypeStruct((rows,), jnp.int32),
                   labelled=jax.ShapeDtypeStruct((rows,), jnp.bool_),
                   has_label=jax.ShapeDtypeStruct((rows, t), jnp.bool_))
        return out

    def train_iterator(self, seed):
        labelled = data.train_iterator(self.config, seed, window=None, label_frame="annotated",
                                       batch_fn=PrepareSnippets(self.e.labels))
        if not self.e.unlabelled_data:
            return labelled
        cfg = ml_collections.ConfigDict(self.config.to_dict())
        cfg.data = self.e.unlabelled_data
        cfg.input.batch_size = int(self.e.unlabelled_batch_size)
        cfg.input.class_uniform = False
        source = datasets.open_split(cfg.data, self.e.unlabelled_split)
        unlabelled = iter(pipeline.make_dataset(
            source, batch_size=cfg.input.batch_size, seed=seed + 1, window=None,
            label_frame="annotated", augment=data.train_augment(cfg),
            batch_fn=PrepareSnippets("none"), worker_count=cfg.input.worker_count))
        return MixedIterator(labelled, unlabelled)

    # ------------------------------------------------------------------ inference

    segments = True

    def predictor(self, params, model_state, flow=None) -> Predictor:
        """The segmentation branch alone: EFC computes no flow at inference."""
        if self.flow_only:
            raise ValueError("a flow-only EFC run (efc.mode='flow_only') has no "
                             "segmentation branch")
        return Predictor(variables=self.inference_variables(params, model_state),
                         frame_logits=self.inference_fn())

    def inference_variables(self, params: Any, model_state: dict) -> dict:
        """The segmentation branch's variables alone, shaped for ``StaticModel``."""
        out = {"params": {"static": params["static"]}}
        for col, groups in model_state.items():
            if "static" in groups:
                out[col] = {"static": groups["static"]}
        return out

    def inference_fn(self):
        """``fn(variables, images) -> logits``: the exported model, segmentation branch only
        (``variables`` from ``inference_variables``). It computes no flow."""
        model = StaticModel(static=self.model.static)
        return lambda variables, images: model.apply(variables, images, train=False)

    @functools.cached_property
    def _predict(self):
        fn = self.inference_fn()
        return jax.jit(lambda v, images: jnp.argmax(fn(v, images), -1))

    @functools.cached_property
    def _flow(self):
        @jax.jit
        def flow(params, model_state, frames1, frames2):
            out = self.model.apply({"params": params, **model_state}, frames1, frames2,
                                   segmentation=False)
            b = frames1.shape[0]
            return out["flow"][:b], out["occlusion_full"][:b]
        return flow

    def predict_flow(self, params, model_state, frames1, frames2):
        """(F_{1->2} [B, H, W, 2], O_est of frame 1 [B, H, W]) as numpy arrays."""
        flow, occ = self._flow(params, model_state, frames1, frames2)
        return np.asarray(flow), np.asarray(occ)

    @functools.cached_property
    def _eval_sums(self):
        """``fn(params, model_state, batch) -> {"cm": [C, C], "flow": flow-error sums}``
        over a global batch, reduced on the device (so over every device and process)."""
        segment = self.inference_fn()
        num_classes = self.config.model.num_classes

        @jax.jit
        def sums(params, model_state, batch):
            valid, out = batch["valid"], {}
            if not self.flow_only:
                pos = batch["label_pos"]
                rows = jnp.arange(pos.shape[0])
                logits = segment(self.inference_variables(params, model_state),
                                 batch["frames"][rows, pos])
                out["cm"] = evaluation.confusion_matrix(
                    jnp.argmax(logits, -1), batch["labels"][rows, pos], num_classes,
                    mask=valid)
            if "flow_fwd" in batch:
                frames, gt = batch["frames"], batch["flow_fwd"]  # gt [B, T - 1, H, W, 2]
                f1 = frames[:, :-1].reshape((-1,) + frames.shape[2:])
                f2 = frames[:, 1:].reshape((-1,) + frames.shape[2:])
                flow, _ = self._flow(params, model_state, f1, f2)
                pixels = jnp.broadcast_to(valid[:, None, None, None], gt.shape[:-1])
                occ = batch.get("occ_fwd")
                out["flow"] = evaluation.flow_error_sums(
                    flow, gt.reshape((-1,) + gt.shape[2:]),
                    pixels.reshape((-1,) + gt.shape[2:-1]),
                    None if occ is None else occ.reshape((-1,) + occ.shape[2:]))
            return out
        return sums

    def evaluate(self, params, model_state, step) -> dict[str, float]:
        """mIoU on the labelled frames and the flow's EPE on consecutive validation pairs,
        sharded over the mesh."""
        del step
        cms = evaluation.ConfusionMatrices(self.config.model.num_classes)
        acc = evaluation.FlowErrorAccumulator()
        for batch in data.eval_batches(self.config, window=None, mesh=self.eval_mesh()):
            sums = self._eval_sums(params, model_state, batch)
            if "cm" in sums:
                cms.add_counts("efc", np.asarray(sums["cm"]))
            if "flow" in sums:
                acc.add_sums(sums["flow"])
        out = {}
        if not self.flow_only:
            out["miou"] = cms.miou("efc")
        if acc.sums["count_all"]:
            out.update({k: v for k, v in acc.compute().items() if k in ("epe_all", "epe_noc")})
        return out


def consecutive_pairs(batch: dict) -> tuple[np.ndarray, ...]:
    """(frames t, frames t+1, flow_fwd, occ_fwd or None) of the valid rows, flattened."""
    v = batch["valid"]
    frames = batch["frames"][v]
    t = frames.shape[1]
    f1 = frames[:, :-1].reshape((-1,) + frames.shape[2:])
    f2 = frames[:, 1:].reshape((-1,) + frames.shape[2:])
    gt = batch["flow_fwd"][v].reshape((-1,) + batch["flow_fwd"].shape[2:])
    occ = batch.get("occ_fwd")
    occ = None if occ is None else occ[v].reshape((-1,) + occ.shape[2:])
    assert gt.shape[0] == f1.shape[0] == (t - 1) * frames.shape[0]
    return f1, f2, gt, occ
