"""Warp-Refine's losses (seeds/002, sec. 3): cycle consistency and direct supervision.

A warp-refine step maps (new frame, previous soft label, flow new -> previous, prior) to
the new frame's soft label. ``chain`` runs it along a window as a ``lax.scan`` (compile
time does not grow with k). The cycle loss propagates the labelled frame's label k steps
forward and the result k steps back with the same step and penalises the NLL of the true
label at the start: it needs a label on one frame only.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vsegjax.losses.segmentation import IGNORE_LABEL, nll_loss

# (frame [B,H,W,3], probs [B,H,W,C], flow [B,H,W,2], prior [B,H,W,C]) -> probs [B,H,W,C]
StepFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
PROB_FLOOR = 1e-8  # log(0) guard in the NLL of probabilities


def label_probs(labels: jax.Array, num_classes: int,
                ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """One-hot probabilities [..., H, W, C] of a label map; ignore pixels are uniform."""
    valid = labels != ignore_index
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float32)
    return jnp.where(valid[..., None], onehot, 1.0 / num_classes)


def probs_nll(probs: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_LABEL
              ) -> jax.Array:
    """Mean NLL of ``labels`` under ``probs`` (probabilities, not logits)."""
    return nll_loss(jnp.log(jnp.maximum(probs, PROB_FLOOR)), labels, ignore_index)


def chain(step: StepFn, probs0: jax.Array, frames: jax.Array, flows: jax.Array,
          priors: jax.Array, unroll: bool = False) -> jax.Array:
    """Propagates ``probs0`` (frame 0's soft label) along a window.

    frames [B, L, H, W, 3]; flows [B, L-1, H, W, 2] with ``flows[:, j]`` from frame j+1's
    grid into frame j's; priors [B, L, H, W, C]. Returns [B, L, H, W, C], entry 0 = probs0.

    ``unroll=True`` for training: on XLA:CPU the gradient of convolutions inside a rolled
    scan runs ~50x slower (61 s vs 1.2 s for 6 refiner steps at 64x128, batch 4); the
    training windows are short, so unrolling costs little compile time. Inference (no
    gradient) keeps the rolled scan for any video length.
    """
    xs = (jnp.moveaxis(frames[:, 1:], 1, 0), jnp.moveaxis(flows, 1, 0),
          jnp.moveaxis(priors[:, 1:], 1, 0))

    def body(p, x):
        frame, flow, prior = x
        p = step(frame, p, flow, prior)
        return p, p

    _, out = jax.lax.scan(body, probs0, xs, unroll=bool(unroll))
    return jnp.concatenate([probs0[:, None], jnp.moveaxis(out, 0, 1)], axis=1)


def reverse_window(frames: jax.Array, flow_fwd: jax.Array, flow_bwd: jax.Array,
                   priors: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The same window played backwards: (frames, flows for ``chain``, priors).

    Forward in time ``chain`` needs flow j+1 -> j = ``flow_bwd[j]``; backwards, the step
    from frame j+1 to frame j needs flow j -> j+1 = ``flow_fwd[j]``, in reversed order.
    """
    del flow_bwd
    return frames[:, ::-1], flow_fwd[:, ::-1], priors[:, ::-1]


def cycle_terms(step: StepFn, labels0: jax.Array, frames: jax.Array, flow_fwd: jax.Array,
                flow_bwd: jax.Array, priors: jax.Array, num_classes: int,
                unroll: bool = True) -> tuple[jax.Array, jax.Array]:
    """(L_cycle, forward probs [B, L, H, W, C]) for a window whose frame 0 is labelled.

    Forward: frame 0's label to frame L-1 along ``flow_bwd``; back: to frame 0 along
    ``flow_fwd``, with the same step; L_cycle = NLL of ``labels0`` at the end.
    """
    p0 = label_probs(labels0, num_classes)
    fwd = chain(step, p0, frames, flow_bwd, priors, unroll)
    rf, rflow, rprior = reverse_window(frames, flow_fwd, flow_bwd, priors)
    back = chain(step, fwd[:, -1], rf, rflow, rprior, unroll)
    return probs_nll(back[:, -1], labels0), fwd


def warp_term(probs: jax.Array, warped: jax.Array) -> jax.Array:
    """Mean KL(warped || probs) over pixels: how far the refined chain ``probs`` has moved
    from ``warped``, the same label carried by soft warping alone (no refiner), both
    [B, L, H, W, C]. A regulariser towards the warp (L_warp): with one labelled frame per
    video the cycles cover a few frames, and unchecked corrections learnt there drift at
    longer range. ``warped`` is a target (no gradient)."""
    q = jax.lax.stop_gradient(warped)
    kl = jnp.sum(q * (jnp.log(jnp.maximum(q, PROB_FLOOR))
                      - jnp.log(jnp.maximum(probs, PROB_FLOOR))), -1)
    return jnp.mean(kl)


def direct_term(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """NLL of the propagated ``probs`` [B, L, H, W, C] where frames carry labels
    [B, L, H, W] (255 elsewhere): direct supervision wherever a label exists."""
    return probs_nll(probs, labels)
