"""Boundary label relaxation (VPLR, seeds/001 section 3.2).

Propagated labels are least reliable at object boundaries. Near a boundary the loss does
not insist on the single label: it maximises the summed probability of every class present
in a small window around the pixel, ``-log sum_{c in N(p)} P(c | p)``. Away from boundaries
the window holds one class and the term is the ordinary NLL, so one formula covers both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsegjax.losses.segmentation import IGNORE_LABEL, cross_entropy


def classes_in_window(labels: jax.Array, num_classes: int, window: int = 3,
                      ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """[..., H, W, C] bool: class c occurs within the ``window`` x ``window`` box of each pixel.

    Ignore pixels add no class; the box is clipped at the image border.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"relaxation window must be an odd size >= 1; got {window}")
    valid = labels != ignore_index
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float32)
    onehot = onehot * valid[..., None]
    lead = onehot.shape[:-3]
    x = onehot.reshape((-1,) + onehot.shape[-3:])
    pooled = jax.lax.reduce_window(x, 0.0, jax.lax.max, (1, window, window, 1), (1, 1, 1, 1),
                                   "SAME")
    return pooled.reshape(lead + pooled.shape[1:]) > 0


def boundary_mask(labels: jax.Array, num_classes: int, window: int = 3,
                  ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """[..., H, W] bool: more than one class within the window (where relaxation acts)."""
    present = classes_in_window(labels, num_classes, window, ignore_index)
    return jnp.sum(present, axis=-1) > 1


def relaxed_nll(log_probs: jax.Array, labels: jax.Array, window: int = 3,
                ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """Mean over non-ignored pixels of ``-log sum_{c in window} P(c)`` (VPLR eq. 3).

    ``log_probs`` [..., H, W, C] (``log_softmax`` of logits), ``labels`` [..., H, W].
    Equals ``nll_loss`` wherever the window holds one class.
    """
    if log_probs.shape[:-1] != labels.shape:
        raise ValueError(f"log_probs {log_probs.shape} and labels {labels.shape} differ in "
                         f"[..., H, W]")
    present = classes_in_window(labels, log_probs.shape[-1], window, ignore_index)
    # A pixel with no class in its window (ignore all around) would give log(0) and a NaN
    # gradient through the mask below; let it sum every class (it is masked out anyway).
    present = present | ~jnp.any(present, axis=-1, keepdims=True)
    masked = jnp.where(present, log_probs, -jnp.inf)
    per_pixel = -jax.nn.logsumexp(masked, axis=-1)
    valid = labels != ignore_index
    per_pixel = jnp.where(valid, per_pixel, 0.0)
    return jnp.sum(per_pixel) / jnp.maximum(jnp.sum(valid), 1)


def segmentation_loss(logits: jax.Array, labels: jax.Array, relaxation_window: int = 0,
                      ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """L_seg for any segmentation task: cross-entropy, or with ``relaxation_window`` > 0
    the boundary-relaxed NLL (config field ``loss.relaxation_window``, 3 in the paper)."""
    if not relaxation_window:
        return cross_entropy(logits, labels, ignore_index)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return relaxed_nll(log_probs, labels, int(relaxation_window), ignore_index)
