"""Warp-Refine's refiner (seeds/002): corrects a label warped into a new frame.

Input: the new frame, the label of the previous frame warped into it (soft, [C] per
pixel) and a semantic prior (a segmenter's class probabilities on the new frame). Output:
corrected label logits. The output is ``log(warped + eps) + delta`` with the last conv of
``delta`` zero-initialised, so an untrained refiner is plain flow propagation and training
only has to learn where to deviate from the warp (occlusions, flow errors, drift).

``WarpRefineModel`` pairs it with the prior segmenter (parameters under ``static``, the
same key a static run uses, so ``train.init_from`` a segmentation run seeds the prior).
With ``static=None`` the prior is uniform: the refiner sees only the frame and the warp.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vsegjax.ops.warp import warp

WARPED_EPS = 1e-3  # floor of the warped probabilities inside the log (|log eps| ~ 6.9)


class Refiner(nn.Module):
    """A small U-Net (no normalisation layers: no state to carry through the scan)."""

    num_classes: int
    width: int = 32
    depth: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frame: jax.Array, warped: jax.Array, prior: jax.Array) -> jax.Array:
        """frame [B, H, W, 3] in [0, 1], warped / prior [B, H, W, C] probabilities ->
        logits [B, H, W, C] (float32)."""
        c = self.num_classes
        for name, x in (("warped", warped), ("prior", prior)):
            if x.shape[-1] != c or x.shape[:-1] != frame.shape[:-1]:
                raise ValueError(f"Refiner: {name} must be [B, H, W, {c}] like the frame "
                                 f"{frame.shape[:-1]}; got {x.shape}")
        x = jnp.concatenate([frame, warped, prior], -1).astype(self.dtype)
        skips = []
        for i in range(self.depth + 1):
            ch = self.width * 2 ** i
            if i:
                x = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
            x = nn.relu(nn.Conv(ch, (3, 3), dtype=self.dtype, name=f"down{i}_a")(x))
            x = nn.relu(nn.Conv(ch, (3, 3), dtype=self.dtype, name=f"down{i}_b")(x))
            skips.append(x)
        for i in reversed(range(self.depth)):
            skip = skips[i]
            x = jax.image.resize(x, skip.shape[:3] + (x.shape[-1],), "bilinear")
            x = jnp.concatenate([x, skip], -1)
            x = nn.relu(nn.Conv(self.width * 2 ** i, (3, 3), dtype=self.dtype,
                                name=f"up{i}")(x))
        delta = nn.Conv(c, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        name="delta")(x).astype(jnp.float32)
        return jnp.log(warped.astype(jnp.float32) + WARPED_EPS) + delta


def warp_probs(probs: jax.Array, flow: jax.Array) -> jax.Array:
    """Soft label [B, H, W, C] moved along ``flow`` (target grid -> source), renormalised.

    Border padding: a pixel whose source leaves the image takes the nearest edge's label,
    as label propagation does.
    """
    moved = warp(probs, flow, padding="border")
    return moved / jnp.maximum(jnp.sum(moved, -1, keepdims=True), 1e-12)


class WarpRefineModel(nn.Module):
    """The prior segmenter (``static``) and the refiner (``refiner``)."""

    static: nn.Module | None
    refiner: Refiner

    def prior(self, frames: jax.Array, train: bool = False) -> jax.Array:
        """Class logits of the segmenter on ``frames`` [B, H, W, 3] (zeros, i.e. a uniform
        prior, without a segmenter)."""
        if self.static is None:
            return jnp.zeros(frames.shape[:-1] + (self.refiner.num_classes,), jnp.float32)
        return self.static(frames, train=train)

    def step(self, frame: jax.Array, probs: jax.Array, flow: jax.Array,
             prior: jax.Array) -> jax.Array:
        """One warp-refine step: ``probs`` of the previous frame, ``flow`` from the new
        frame's grid into the previous one, ``prior`` probabilities of the new frame ->
        refined probabilities of the new frame."""
        logits = self.refiner(frame, warp_probs(probs, flow), prior)
        return jax.nn.softmax(logits, -1)

    def __call__(self, frames: jax.Array, probs: jax.Array, flow: jax.Array,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Initialisation path: (prior logits, one refined step)."""
        prior = self.prior(frames, train=train)
        return prior, self.step(frames, probs, flow, jax.nn.softmax(prior, -1))
