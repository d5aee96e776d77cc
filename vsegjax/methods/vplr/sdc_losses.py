"""Self-supervised losses of the SDC-Net video reconstruction model (VPLR, METHODS.md §3).

The model is trained on unlabelled video to synthesise frame t+1; the target is the real
frame t+1. ``L_rec`` is the L1 colour error; ``L_grad`` the L1 error of the image
gradients, which rewards sharp edges in the right place (plain L1 tolerates a blur).
Each function returns a scalar; the task weights them by name (``loss_terms`` +
``vsegjax.methods.efc.losses.combine``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vsegjax.ops.gradients import image_gradients

DEFAULT_WEIGHTS = {"L_rec": 1.0, "L_grad": 1.0}


def _check_pair(pred: jax.Array, target: jax.Array) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"images must be [..., H, W, C]; got shape {tuple(pred.shape)}")


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error over every pixel and channel."""
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    _check_pair(pred, target)
    return jnp.mean(jnp.abs(pred - target))


def gradient_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean |d/dx pred - d/dx target| + mean |d/dy pred - d/dy target| (forward differences).

    Zero when the images differ by a constant: it scores structure, not brightness.
    """
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    _check_pair(pred, target)
    pdx, pdy = image_gradients(pred)
    tdx, tdy = image_gradients(target)
    return jnp.mean(jnp.abs(pdx - tdx)) + jnp.mean(jnp.abs(pdy - tdy))


def loss_terms(pred: jax.Array, target: jax.Array) -> dict[str, Callable[[], jax.Array]]:
    """Named zero-argument terms for ``losses.efc.combine`` (unweighted terms are skipped)."""
    return {"L_rec": lambda: l1_loss(pred, target),
            "L_grad": lambda: gradient_loss(pred, target)}


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB per image of [..., H, W, C] -> [...]."""
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    _check_pair(pred, target)
    mse = jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))
    # Floor the MSE so identical images give a large finite value, not inf.
    return 10.0 * jnp.log10(max_value ** 2 / jnp.maximum(mse, 1e-10))
