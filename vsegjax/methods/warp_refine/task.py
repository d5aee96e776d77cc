"""Warp-Refine task: the refiner trained by cycle consistency from sparse labels.

Each training example is a window of ``k + 1`` frames that starts at the snippet's
labelled frame (played backwards in time when the labelled frame is near the end), with
flow computed on the host by the configured provider (DIS by default: the flow a user
has, not the synthetic ground truth). Loss terms (weights in ``warp_refine.loss_weights``):

  L_cycle   label -> k steps forward -> k steps back, NLL of the true label (sec. 3.2)
  L_direct  NLL of the forward propagation wherever the window carries a label
  L_warp    KL from the label carried by soft warping alone to the refined chain, along
            the forward propagation (a regulariser towards the warp; off by default)
  L_prior   cross-entropy of the prior segmenter on the labelled frames (0 when the prior
            comes frozen from a static stage, as in configs/warp_refine_synthetic.py)

The configs train the static segmenter (the semantic prior) as a first stage, then the
refiner with the prior frozen; ``evaluation.propagation.report`` scores propagation
against copy and flow.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vsegjax import losses
from vsegjax.methods.warp_refine import losses as wr_losses
from vsegjax.methods.warp_refine.transforms import CycleWindows
from vsegjax.methods.warp_refine.model import Refiner, WarpRefineModel, warp_probs
from vsegjax.models.segmenter import make_segmenter
from vsegjax.core import config as core_config
from vsegjax.core import inputs as data
from vsegjax.methods.warp_refine import config as wr_config
from vsegjax.methods.common import SegmenterTask

IGNORE_LABEL = 255


PRIORS = ("segmenter", "none")
TERMS = ("L_cycle", "L_direct", "L_warp", "L_prior")


def make_model(model: ml_collections.ConfigDict, w: ml_collections.ConfigDict
               ) -> WarpRefineModel:
    """``warp_refine.prior``: "segmenter" (a static segmenter's probabilities, the paper's
    semantic prior) or "none" (uniform). "none" is for a single video labelled on one
    frame: a prior trained on that frame is exact at the frame where every training cycle
    ends, so the refiner learns to trust it, and it is not exact anywhere else."""
    prior = w.prior
    if prior not in PRIORS:
        raise ValueError(f"config field warp_refine.prior: one of {PRIORS}; got {prior!r}")
    static = make_segmenter(model) if prior == "segmenter" else None
    return WarpRefineModel(static=static,
                           refiner=Refiner(num_classes=int(model.num_classes),
                                           width=int(w.refiner_width), depth=int(w.refiner_depth)))


class WarpRefineTask(SegmenterTask):
    """The prior segmenter (``static``) and the refiner, trained on cycle windows."""

    @classmethod
    def config_template(cls) -> ml_collections.ConfigDict:
        return core_config.extend(super().config_template(), **wr_config.template_blocks())

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
        super().__init__(config, workdir)
        self.w = self.config.warp_refine
        self.model = make_model(self.config.model, self.w)
        self.num_classes = int(self.config.model.num_classes)
        self.weights = {k: float(v) for k, v in dict(self.w.loss_weights).items() if v}
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"config field warp_refine.loss_weights: unknown terms "
                             f"{sorted(unknown)}; known: {', '.join(TERMS)}")
        negative = sorted(k for k, v in self.weights.items() if v < 0)
        if negative:
            raise ValueError(f"config field warp_refine.loss_weights: {negative} must be >= 0")
        if self.model.static is None:
            self.weights.pop("L_prior", None)  # no segmenter to train

    def init_variables(self, rng):
        h, w = self.input_shape()
        c = self.num_classes
        x = jnp.zeros((1, h, w, 3))
        p = jnp.full((1, h, w, c), 1.0 / c)
        return dict(jax.jit(functools.partial(self.model.init, train=False))(
            rng, x, p, jnp.zeros((1, h, w, 2))))

    def priors(self, variables: dict, frames: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """(prior logits [B, L, H, W, C], new model_state) for windows [B, L, H, W, 3]."""
        b, l_, h, w = frames.shape[:4]
        if self.model.static is None:
            return jnp.zeros((b, l_, h, w, self.num_classes), jnp.float32), {}
        mutable = [k for k in variables if k != "params"] if train else False
        out = self.model.apply(variables, frames.reshape(b * l_, h, w, 3), train=train,
                               method=WarpRefineModel.prior, mutable=mutable,
                               rngs={"dropout": rng} if rng is not None else None)
        logits, state = out if train else (out, {})
        return logits.reshape(b, l_, h, w, -1), state

    def prior_probs(self, logits: jax.Array) -> jax.Array:
        """Prior probabilities from ``priors``' logits. Without a segmenter the uniform
        prior is built directly: XLA constant-folds a softmax of constant zeros, 77 s for
        76 frames at 180x240 (benchmarks/propagate_compile.py)."""
        if self.model.static is None:
            return jnp.full(logits.shape, 1.0 / self.num_classes, jnp.float32)
        return jax.nn.softmax(logits, -1)

    def step_fn(self, variables: dict) -> wr_losses.StepFn:
        return lambda frame, probs, flow, prior: self.model.apply(
            variables, frame, probs, flow, prior, method=WarpRefineModel.step)

    def loss_fn(self, params, model_state, batch, rng):
        variables = {"params": params, **model_state}
        frames, labels = batch["frames"], batch["labels"]
        train_prior = "L_prior" in self.weights
        logits, new_state = self.priors(variables, frames, train=train_prior, rng=rng)
        prior = jax.lax.stop_gradient(self.prior_probs(logits))
        terms = {}
        cycle, fwd = wr_losses.cycle_terms(self.step_fn(variables), labels[:, 0], frames,
                                           batch["flow_fwd"], batch["flow_bwd"], prior,
                                           self.num_classes)
        if "L_cycle" in self.weights:
            terms["L_cycle"] = cycle
        if "L_direct" in self.weights:
            terms["L_direct"] = wr_losses.direct_term(fwd[:, 1:], labels[:, 1:])
        if "L_warp" in self.weights:
            warped = wr_losses.chain(lambda f, p, fl, pr: warp_probs(p, fl),
                                     wr_losses.label_probs(labels[:, 0], self.num_classes),
                                     frames, batch["flow_bwd"], prior, unroll=True)
            terms["L_warp"] = wr_losses.warp_term(fwd[:, 1:], warped[:, 1:])
        if train_prior:
            terms["L_prior"] = losses.cross_entropy(logits, labels)
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, (dict(terms), {**model_state, **new_state})

    def batch_spec(self, batch_size):
        k = int(self.w.k)
        out = self.snippet_batch(batch_size, k + 1)  # a cycle window: k + 1 frames
        h, w = self.input_shape()
        for key in ("flow_fwd", "flow_bwd"):
            out[key] = jax.ShapeDtypeStruct((batch_size, k, h, w, 2), jnp.float32)
        return out

    def train_iterator(self, seed):
        return data.train_iterator(
            self.config, seed, window=None, label_frame="annotated",
            batch_fn=CycleWindows(int(self.w.k), self.w.flow, self.w.labels))

    # ------------------------------------------------------------------ inference

    @functools.cached_property
    def _propagate(self):
        @jax.jit
        def propagate(variables, probs0, frames, flows):
            prior = self.prior_probs(self.priors(variables, frames)[0])
            return wr_losses.chain(self.step_fn(variables), probs0, frames, flows, prior)
        return propagate

    def propagate(self, variables: dict, label: np.ndarray, frames: np.ndarray,
                  flows_to_prev: np.ndarray) -> np.ndarray:
        """Soft labels [L, H, W, C] of ``frames`` [L, H, W, 3] from frame 0's ``label``;
        ``flows_to_prev[j]`` maps frame j+1's grid into frame j's."""
        p0 = wr_losses.label_probs(jnp.asarray(label)[None], self.num_classes)
        out = self._propagate(variables, p0, jnp.asarray(frames, jnp.float32)[None],
                              jnp.asarray(flows_to_prev)[None])
        return np.asarray(out[0])
