"""Optimisers and learning-rate schedules from a config's ``optimizer`` block (optax; its
fields and defaults: ``core.config.adam``)."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import optax


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """``constant``, ``poly`` (lr * (1 - step/num_steps)^power, as in PSPNet/EFC) or ``cosine``,
    each after ``warmup_steps`` of linear warm-up."""
    lr = cfg.learning_rate
    warmup = cfg.warmup_steps
    decay_steps = max(1, num_steps - warmup)
    name = cfg.schedule
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "poly":
        main = optax.polynomial_schedule(lr, cfg.end_learning_rate,
                                         power=cfg.power, transition_steps=decay_steps)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.alpha)
    else:
        raise ValueError(f"optimizer.schedule: unknown {name!r}; choose constant, poly or cosine")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def _trainable_labels(params: Any, frozen: Sequence[str]) -> Any:
    """'frozen' for every leaf under a top-level key listed in ``frozen``, else 'train'."""
    unknown = [k for k in frozen if k not in params]
    if unknown:
        raise ValueError(f"optimizer.frozen: {unknown} are not top-level parameter groups; "
                         f"the model has {sorted(params)}")
    return {k: jax.tree.map(lambda _, k=k: "frozen" if k in frozen else "train", v)
            for k, v in params.items()}


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int,
                   params: Any | None = None) -> optax.GradientTransformation:
    """Adam/AdamW/SGD(+momentum) with a schedule, weight decay, clipping and frozen groups.

    ``cfg.frozen`` lists top-level parameter groups that get no update (and no optimiser
    state), e.g. a frozen flow network or a frozen static segmenter.
    """
    schedule = make_schedule(cfg, num_steps)
    name = cfg.name
    wd = cfg.weight_decay
    if name == "adam":
        # The GRFP paper trains the STGRU with Adam(beta1=0.95, beta2=0.99).
        tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
        if wd:
            tx = optax.chain(optax.add_decayed_weights(wd), tx)
    elif name == "adamw":
        tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=wd)
    elif name == "sgd":
        # L2 weight decay added to the gradient, as in the PSPNet/EFC SGD recipes.
        tx = optax.sgd(schedule, momentum=cfg.momentum or None,
                       nesterov=cfg.nesterov)
        if wd:
            tx = optax.chain(optax.add_decayed_weights(wd), tx)
    else:
        raise ValueError(f"optimizer.name: unknown {name!r}; choose adam, adamw or sgd")
    if cfg.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    frozen = tuple(cfg.frozen)
    if frozen:
        if params is None:
            raise ValueError("optimizer.frozen needs the parameter tree")
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   _trainable_labels(params, frozen))
    return tx
