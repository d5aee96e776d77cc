"""GRFP task: a static segmenter + STGRU propagation along optical flow (GRFP paper).

Stage 1 (``StaticSegmentationTask``) trains the static segmenter on labelled frames.
Stage 2 (``GRFPTask``) starts from it (``init_from``) and trains the STGRU on windows
of ``input.window`` = (frames before, frames after) the labelled frame, with the loss on
the labelled frame only; the flow is frozen (dataset, OpenCV or a frozen FlowNetS).
In ``fwbw`` mode one model holds the forward cell, the backward cell and the fusion, so
the loss is a dict of three terms: the fused estimate (``L_fwbw``) and each direction on
its own (``L_fwd``, ``L_bwd``), which keeps the forward model usable alone (the paper's
default model) and gives the fusion two trained inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import evaluation, losses
from vsegjax.methods.grfp.transforms import flow_batch_fn
from vsegjax.models import flow_providers
from vsegjax.models.segmenter import DTYPES
from vsegjax.methods.grfp.stgru import UPDATE_GATES
from vsegjax.methods.grfp.model import grfp_dtype, make_video_model
from vsegjax.core import config as core_config
from vsegjax.core import inputs as data
from vsegjax.methods.grfp import config as grfp_config
from vsegjax.core.task import Predictor
from vsegjax.methods.common import SegmenterTask
from vsegjax.methods.grfp.stgru import stgru_step
from vsegjax.models.segmenter import StaticModel

LOSS_KEYS = {"L_fwbw": "logits", "L_fwd": "logits_fwd", "L_bwd": "logits_bwd"}


class GRFPTask(SegmenterTask):
    """Stage 2 of GRFP: the STGRU (and optionally the static net) on labelled windows."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        return core_config.extend(super().config_template(), **grfp_config.template_blocks())

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        config = self.config
        validate_config(config)
        self.provider = flow_providers.make_flow_provider(config.flow)
        self.model = make_video_model(config.model, config.grfp, self.provider)
        self.before, self.after = (int(v) for v in config.input.window)
        self.batch_fn = flow_batch_fn(self.provider)
        self.train_static = bool(config.grfp.train_static)
        weights = dict(config.grfp.loss_weights)
        unknown = set(weights) - set(LOSS_KEYS)
        if unknown:
            raise ValueError(f"config field grfp.loss_weights: unknown terms {sorted(unknown)}; "
                             f"known: {sorted(LOSS_KEYS)}")
        mode = config.grfp.mode
        usable = {"forward": {"L_fwd", "L_fwbw"}, "backward": {"L_bwd", "L_fwbw"},
                  "fwbw": set(LOSS_KEYS)}[mode]
        # A term whose weight is zero or absent is not computed.
        self.weights = {k: float(v) for k, v in weights.items() if v and k in usable}
        if not self.weights:
            raise ValueError(f"config field grfp.loss_weights: no term with a weight for mode {mode!r}")

    def frozen_params(self) -> tuple[str, ...]:
        """The static net unless ``grfp.train_static``; a learned flow unless trainable."""
        frozen = [] if self.train_static else ["static"]
        if self.model.flow is not None and not self.model.flow_trainable:
            frozen.append("flow")
        return tuple(frozen)

    segments = True

    def predictor(self, params, model_state, flow=None) -> Predictor:
        """The static net on each frame and the forward cell along the flow from each
        frame to the one before (eqs. 2-6, the step training scans); ``flow`` ('dis' |
        'farneback') replaces the run's flow source."""
        if self.config.grfp.mode == "backward":
            raise ValueError("a backward-mode GRFP run needs the frames after each one; "
                             "segment and export stream forward (grfp.mode 'forward' or "
                             "'fwbw')")
        provider = self.provider
        if flow is not None:
            provider = flow_providers.make_flow_provider({"source": flow})
        elif isinstance(provider, flow_providers.DatasetFlow):
            raise ValueError("the run read the dataset's stored flow (flow.source='dataset'), "
                             "which a new video does not have; pass --flow=dis or "
                             "--flow=farneback")
        if isinstance(provider, flow_providers.LearnedFlow) and "flow" in params:
            provider = flow_providers.LearnedFlow(provider.module, {"params": params["flow"]})
        static = StaticModel(static=self.model.static)
        center = bool(self.config.grfp.center_inputs)

        def step(stgru, h_prev, x_logits, frame, prev_frame, flow_to_prev):
            x = jax.nn.softmax(x_logits.astype(jnp.float32), axis=-1)
            h, logits, _ = stgru_step(stgru, h_prev, x, frame, prev_frame, flow_to_prev,
                                      center_inputs=center)
            return h, jax.nn.log_softmax(logits, axis=-1)

        variables = {"params": {"static": params["static"]}}
        for collection, groups in model_state.items():
            if "static" in groups:
                variables[collection] = {"static": groups["static"]}
        return Predictor(variables=variables,
                         frame_logits=lambda v, x: static.apply(v, x, train=False),
                         step=step, step_params=dict(params["grfp"]["forward"]),
                         flow_provider=provider)

    @property
    def window_len(self) -> int:
        return self.before + 1 + self.after

    def init_variables(self, rng):
        h, w = self.input_shape()
        t = self.window_len
        frames = jnp.zeros((1, t, h, w, 3))
        flows = jnp.zeros((1, t - 1, h, w, 2))
        variables = dict(self.model.init(rng, frames, flows, flows, self.before))
        if isinstance(self.provider, flow_providers.LearnedFlow):
            # The flow network's own (loaded or fresh) parameters, not the random init.
            variables["params"] = dict(variables["params"], flow=self.provider.variables["params"])
        return variables

    def apply(self, params, model_state, batch, train: bool, rng=None):
        variables = {"params": params, **model_state}
        args = (batch["frames"], batch.get("flow_fwd"), batch.get("flow_bwd"), self.before)
        if train and self.train_static:
            out, new_state = self.model.apply(variables, *args, static_train=True,
                                              mutable=list(model_state), rngs={"dropout": rng})
            return out, {**model_state, **new_state}
        return self.model.apply(variables, *args), model_state

    def loss_fn(self, params, model_state, batch, rng):
        out, model_state = self.apply(params, model_state, batch, True, rng)
        labels = batch["labels"][:, self.before]
        # loss.relaxation_window > 0: VPLR's boundary label relaxation on every term.
        window = self.relaxation_window
        nll = (functools.partial(losses.relaxed_nll, window=window) if window
               else losses.nll_loss)
        terms = {k: nll(out[LOSS_KEYS[k]], labels) for k in self.weights}
        total = sum(self.weights[k] * terms[k] for k in terms)
        metrics = dict(terms, pixel_acc=losses.pixel_accuracy(out["logits"], labels),
                       static_pixel_acc=losses.pixel_accuracy(out["static_logits"], labels))
        return total, (metrics, model_state)

    def batch_spec(self, batch_size):
        t = self.before + 1 + self.after
        out = self.snippet_batch(batch_size, t)
        if self.model.flow is None:  # flow from the input pipeline, frame t -> t -+ 1
            h, w = self.input_shape()
            for key in ("flow_fwd", "flow_bwd"):
                out[key] = jax.ShapeDtypeStruct((batch_size, t - 1, h, w, 2), jnp.float32)
        return out

    def train_iterator(self, seed):
        return data.train_iterator(self.config, seed, window=(self.before, self.after),
                                   label_frame="annotated", batch_fn=self.batch_fn)

    @functools.cached_property
    def _confusion(self):
        @jax.jit
        def confusion(params, model_state, batch):
            pred = jnp.argmax(self.apply(params, model_state, batch, False)[0]["logits"], -1)
            return evaluation.confusion_matrix(pred, batch["labels"][:, self.before],
                                               self.config.model.num_classes,
                                               mask=batch["valid"])
        return confusion

    def evaluate(self, params, model_state, step) -> dict[str, float]:
        """mIoU of the annotated frame over the evaluation split, sharded over the mesh."""
        del step
        cms = evaluation.ConfusionMatrices(self.config.model.num_classes)
        for batch in data.eval_batches(self.config, (self.before, self.after),
                                       batch_fn=self.batch_fn, mesh=self.eval_mesh()):
            cms.add_counts("grfp", np.asarray(self._confusion(params, model_state, batch)))
        return {"miou": cms.miou("grfp")}


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the GRFP fields up front, naming the field at fault."""
    g = config.grfp
    if g.mode not in ("forward", "backward", "fwbw"):
        raise ValueError(f"config field grfp.mode: {g.mode!r}; choose forward, backward or fwbw")
    if not isinstance(g.kernel_size, int) or g.kernel_size < 1 or g.kernel_size % 2 == 0:
        raise ValueError(f"config field grfp.kernel_size: must be an odd positive int; "
                         f"got {g.kernel_size!r}")
    if g.update_gate not in UPDATE_GATES:
        raise ValueError(f"config field grfp.update_gate: {g.update_gate!r}; choose one of "
                         f"{', '.join(UPDATE_GATES)}")
    if grfp_dtype(config.model, g) not in DTYPES:
        raise ValueError(f"config field grfp.dtype: {g.dtype!r}; choose one of "
                         f"{', '.join(DTYPES)}")
    window = tuple(config.input.window)
    if len(window) != 2 or any(not isinstance(v, int) or v < 0 for v in window):
        raise ValueError(f"config field input.window: (frames before, frames after) as two "
                         f"ints >= 0; got {config.input.window!r}")
    if g.mode == "forward" and window[0] == 0 or g.mode == "backward" and window[1] == 0:
        raise ValueError(f"config field input.window: {window} gives the {g.mode} model no "
                         f"frame to propagate from")
