"""The EFC joint model ("Every Frame Counts"): one encoder, a segmentation and a flow decoder.

    model = make_efc_model(config.model, config.efc)
    out = model.apply(variables, frames1, frames2)  # training: both frames, both flows
    logits = model.apply(variables, images, method=EFCModel.segment)   # inference

Layout (section "Network" of the paper and METHODS.md section 2):

* The segmenter (``make_segmenter(config.model)``, parameters under ``static`` as in every
  video model here) is run on both frames with ``return_features=True``. Its backbone's
  stem..layer3 are the *shared encoder*; layer4 + head are the segmentation decoder.
* The flow decoder (``FlowDecoder`` with occlusion heads) correlates the two frames' shared
  features at ``corr_feature`` (layer3), takes ``skip_features`` (layer1) of the first
  frame as skip connections, and refines flow and occlusion from its coarsest level down
  to the finest skip level. Forward and backward flow come from one decoder call on the
  pair stacked both ways (shared weights).
* ``flow.private_channels > 0`` adds a flow-only input level: two 3x3 convs on the frames
  at stride 2 (FlowNetS's conv1, parameters under ``private``), the decoder's finest skip
  and refinement level. The shared encoder's features are shaped by L_seg and lose the
  texture that sub-pixel flow needs (docs/efc.md); the segmentation
  never reads this level, so inference costs the same. ``flow.private_levels = n > 1``
  continues that private pyramid to stride ``2**n`` (channels doubling per level); each
  deeper private level is concatenated with the shared features on its grid (stride 4:
  layer1, whose cost volume refines the flow; stride 8: layer3, the correlation), so the
  flow decoder still reads the shared encoder but also matches on features L_seg never
  shapes.
* ``flow_branch="separate"`` replaces the shared-encoder decoder with a standalone
  FlowNetS (own encoder, parameters under ``flownet``): the paper's TCC_fix ablation, where
  a fixed pretrained FlowNetS supplies the flow.

Inference (``segment``) runs the segmenter alone, so the deployed model costs exactly what
the plain segmenter costs (tested on the compiled programs' FLOPs).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vsegjax.models.flownet import FlowDecoder, FlowEncoder, FlowNetS, flow_decoder_config
from vsegjax.models.segmenter import make_segmenter

FLOW_BRANCHES = ("shared", "separate")


class EFCModel(nn.Module):
    """Segmenter with a flow decoder on its shared encoder features.

    Attributes:
      static: the segmenter (must accept ``return_features=True``).
      flow: a ``FlowDecoder`` (shared branch) or a ``FlowNetS`` (separate branch).
      flow_branch: "shared" or "separate".
      corr_feature: backbone feature correlated between the frames (the shared encoder's
        output S of eq. 1-2).
      skip_features: finer backbone features used as flow-refinement skips, finest first.
      private: optional flow-only encoder on the frames (a ``FlowEncoder``); a level on
        the grid of a shared feature is concatenated with it, a finer one becomes a skip
        below ``skip_features`` (``_merge_private``).
    """

    static: nn.Module
    flow: nn.Module
    flow_branch: str = "shared"
    corr_feature: str = "layer3"
    skip_features: Sequence[str] = ("layer1",)
    private: nn.Module | None = None

    def segment(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Logits [B, H, W, C] of the segmentation branch alone (the inference model)."""
        return self.static(images, train=train)

    def __call__(self, frames1: jax.Array, frames2: jax.Array, train: bool = False,
                 segmentation: bool = True) -> dict[str, Any]:
        """Both frames segmented and the flow between them in both directions.

        Args:
          frames1, frames2: [B, H, W, 3] in [0, 1] (pairs I_i, I_{i+dt}).
          segmentation: False skips the segmenter where the flow does not need it
            (flow-only training of a separate FlowNetS).

        Returns a dict; leading dims are 2B, frame 1's rows first: ``logits`` [2B, H, W, C]
        and ``features`` (the shared feature S, [2B, h, w, C']) of (frames1, frames2);
        ``flow`` [2B, H, W, 2] holding F_{1->2} then F_{2->1}, ``pyramid``,
        ``occlusion`` (lists, finest first), ``occlusion_full`` [2B, H, W] (O_est of frame
        1 then frame 2), and ``corr_level``: the index in ``pyramid`` of S's resolution.
        """
        if frames1.shape != frames2.shape or frames1.ndim != 4:
            raise ValueError(f"EFCModel needs two [B, H, W, 3] batches of one shape; got "
                             f"{frames1.shape} and {frames2.shape}")
        b, h, w = frames1.shape[:3]
        both = jnp.concatenate([frames1, frames2], axis=0)
        out: dict[str, Any] = {}
        feats = None
        if segmentation or self.flow_branch == "shared":
            logits, feats = self.static(both, train=train, return_features=True)
            out["logits"] = logits
            out["features"] = feats[self.corr_feature]
        # Pairs stacked both ways: rows [0, B) give F_{1->2}, rows [B, 2B) give F_{2->1}.
        swapped = jnp.concatenate([frames2, frames1], axis=0)
        if self.flow_branch == "shared":
            names = tuple(self.skip_features) + (self.corr_feature,)
            missing = [n for n in names if n not in feats]
            if missing:
                raise ValueError(f"EFCModel: backbone has no feature {missing}; it has "
                                 f"{sorted(feats)}")
            firsts = [feats[n] for n in names]
            if self.private is not None:
                firsts = _merge_private(list(self.private(both - 0.5, train=train)), firsts)
            second = [_swap_halves(f, b) for f in firsts]
            flow_out = self.flow(firsts, second, (h, w), train=train)
            corr_level = len(firsts) - 1
        else:
            flow_out = self.flow(both, swapped, train=train)
            corr_level = None
        out.update(flow_out)
        out["corr_level"] = corr_level
        return out


def _merge_private(private: list[jax.Array], shared: list[jax.Array]) -> list[jax.Array]:
    """Private levels (finest first) into the shared pyramid (finest first).

    A private level on a shared feature's grid is concatenated with it (channels last);
    one finer than every shared feature becomes a new finest skip.
    """
    merged = list(shared)
    finer = []
    for p in private:
        grid = p.shape[1:3]
        hits = [i for i, f in enumerate(merged) if f.shape[1:3] == grid]
        for i in hits:
            merged[i] = jnp.concatenate([merged[i], p.astype(merged[i].dtype)], axis=-1)
        if hits:
            continue
        if grid[0] <= shared[0].shape[1] or grid[1] <= shared[0].shape[2]:
            raise ValueError(f"EFCModel: private flow level of grid {tuple(grid)} matches no "
                             f"shared feature (grids {[tuple(f.shape[1:3]) for f in shared]}) "
                             f"and is not finer than all of them; lower "
                             f"efc.flow.private_levels")
        finer.append(p)
    return finer + merged


def _swap_halves(x: jax.Array, b: int) -> jax.Array:
    return jnp.concatenate([x[b:], x[:b]], axis=0)


def make_efc_model(model: ml_collections.ConfigDict, e: ml_collections.ConfigDict
                   ) -> EFCModel:
    """``EFCModel`` from the ``model`` block (the segmenter) and the ``efc`` block.

    Fields of the ``efc`` block read here: ``flow_branch`` ("shared" | "separate"),
    ``corr_feature``, ``skip_features`` and ``flow`` (see ``flow_decoder_config``).
    """
    branch = e.flow_branch
    if branch not in FLOW_BRANCHES:
        raise ValueError(f"config field efc.flow_branch: {branch!r}; choose from "
                         f"{list(FLOW_BRANCHES)}")
    f = flow_decoder_config()
    f.update(dict(e.flow))  # read whole: the fields it lacks keep their defaults
    if branch == "shared":
        flow = FlowDecoder(joint_channels=int(f.joint_channels),
                           extra_channels=tuple(int(c) for c in f.extra_channels),
                           redir_channels=int(f.redir_channels),
                           max_displacement=int(f.max_displacement), occlusion=True,
                           occlusion_channels=int(f.occlusion_channels),
                           flow_scale=float(f.flow_scale),
                           refine_displacement=int(f.refine_displacement),
                           residual=bool(f.residual))
    else:
        flow = FlowNetS(width=float(f.width), num_levels=int(f.num_levels),
                        max_displacement=int(f.max_displacement), occlusion=True,
                        flow_scale=float(f.flow_scale), residual=bool(f.residual))
    private = None
    channels = int(f.private_channels)
    if channels < 0:
        raise ValueError(f"config field efc.flow.private_channels must be >= 0; got {channels}")
    if channels and branch != "shared":
        raise ValueError("config field efc.flow.private_channels: only the shared flow branch "
                         "takes a private level (a separate FlowNetS has its own encoder)")
    levels = int(f.private_levels)
    if levels < 1:
        raise ValueError(f"config field efc.flow.private_levels must be >= 1; got {levels}")
    if levels > 1 and not channels:
        raise ValueError(f"config field efc.flow.private_levels = {levels} needs "
                         f"efc.flow.private_channels > 0")
    if channels:
        private = FlowEncoder(channels=tuple(channels * 2**i for i in range(levels)))
    return EFCModel(static=make_segmenter(model), flow=flow, flow_branch=branch,
                    corr_feature=e.corr_feature, skip_features=tuple(e.skip_features),
                    private=private)
