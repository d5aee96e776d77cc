"""GRFP's video model: the static segmenter on every frame, then the STGRU over the
window (GRFP sec. 3, fig. 2)."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vsegjax.models import flow_providers
from vsegjax.models.segmenter import DTYPES, make_segmenter
from vsegjax.methods.grfp.stgru import GRFP


class VideoModel(nn.Module):
    """Static segmenter on every frame, then GRFP over the window.

    With a ``flow`` module (FlowNetS) the flows are computed here from the frames, every
    consecutive pair in both directions in one call; otherwise they come with the batch.
    """

    static: nn.Module
    grfp: GRFP
    flow: nn.Module | None = None
    flow_trainable: bool = False

    def compute_flows(self, frames):
        b, t, h, w, _ = frames.shape
        first = frames[:, :-1].reshape((-1, h, w, 3))
        second = frames[:, 1:].reshape((-1, h, w, 3))
        out = self.flow(jnp.concatenate([first, second]), jnp.concatenate([second, first]))
        flows = out["flow"].reshape((2, b, t - 1, h, w, 2))
        if not self.flow_trainable:
            flows = jax.lax.stop_gradient(flows)
        return flows[0], flows[1]

    def __call__(self, frames, flow_fwd, flow_bwd, label_pos: int, train: bool = False,
                 static_train: bool = False):
        b, t, h, w, _ = frames.shape
        if self.flow is not None:
            flow_fwd, flow_bwd = self.compute_flows(frames)
        logits = self.static(frames.reshape((b * t, h, w, 3)), train=static_train)
        logits = logits.reshape((b, t) + logits.shape[1:])
        if not static_train:
            # A frozen static net: no gradient through T copies of it (saves most compute).
            logits = jax.lax.stop_gradient(logits)
        return self.grfp(logits, frames, flow_fwd, flow_bwd, label_pos)


def grfp_dtype(model: ml_collections.ConfigDict, grfp: ml_collections.ConfigDict) -> str:
    """The STGRU's computation dtype: ``grfp.dtype``, else the static net's ``model.dtype``."""
    return grfp.dtype or model.dtype


def make_video_model(model: ml_collections.ConfigDict, grfp: ml_collections.ConfigDict,
                     provider: flow_providers.FlowProvider | None = None) -> VideoModel:
    """The video model from the ``model`` and ``grfp`` blocks (``config.grfp_block``)."""
    learned = isinstance(provider, flow_providers.LearnedFlow)
    return VideoModel(
        static=make_segmenter(model),
        grfp=GRFP(num_classes=model.num_classes, mode=grfp.mode, kernel_size=grfp.kernel_size,
                  identity_init=grfp.identity_init, center_inputs=grfp.center_inputs,
                  remat=grfp.remat, update_gate=grfp.update_gate,
                  dtype=DTYPES[grfp_dtype(model, grfp)]),
        flow=provider.module if learned else None,
        flow_trainable=bool(learned and provider.trainable))
