"""Segmentation losses on per-pixel class scores (labels: int ids, 255 = ignore)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE_LABEL = 255


def nll_loss(log_probs: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_LABEL,
             weights: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood over non-ignored pixels (eq. 7 of GRFP, eq. 8 of EFC).

    ``log_probs`` [..., H, W, C] are log-probabilities (pass ``log_softmax(logits)``);
    ``labels`` [..., H, W]. ``weights`` [...] (e.g. per example) scale each example's
    pixels. Averaged over valid pixels so the learning rate does not depend on crop size.
    """
    if log_probs.shape[:-1] != labels.shape:
        raise ValueError(f"log_probs {log_probs.shape} and labels {labels.shape} differ in "
                         f"[..., H, W]")
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    picked = jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    mask = valid.astype(log_probs.dtype)
    if weights is not None:
        mask = mask * weights.reshape(weights.shape + (1,) * (labels.ndim - weights.ndim))
    return -jnp.sum(picked * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  ignore_index: int = IGNORE_LABEL) -> jax.Array:
    """``nll_loss`` of ``log_softmax(logits)``."""
    return nll_loss(jax.nn.log_softmax(logits.astype(jnp.float32)), labels, ignore_index)


def pixel_accuracy(scores: jax.Array, labels: jax.Array,
                   ignore_index: int = IGNORE_LABEL) -> jax.Array:
    valid = labels != ignore_index
    hit = (jnp.argmax(scores, -1) == labels) & valid
    return jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)
