"""One optimiser step: the loss and its gradient (over micro-batches if asked), the
update, and a device-side guard that records the first non-finite step.

The guard is why the loop need not wait for the device: rather than the host reading
``isfinite(loss)`` after every step, the step itself freezes the state from the first bad
step on and remembers which step that was; the trainer reads the guard now and then and
always before saving, so a bad state is never saved and the error still names the step.
A step is bad when its loss or gradient norm is not finite, when the parameters it
produces are not (an update can overflow from finite gradients), or when its loss
diverges: above ``factor`` times the median of the last ``window`` accepted losses
(``train.divergence``; the median is floored at ``min_reference`` so a loss near zero
does not flag noise; ``factor = 0`` turns the rule off).

Gradient accumulation (``train.grad_accum_steps = k``) splits the global batch into k
micro-batches and sums their gradients in a ``lax.scan``, so only one micro-batch's
activations are live at a time: the papers' batch sizes fit small hosts. For a loss that
is a mean over equally sized examples the step equals one step on the whole batch;
batch-norm statistics are those of each micro-batch (as on k separate devices) and the
running averages are updated k times.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    model_state: Any  # non-parameter collections, e.g. {"batch_stats": ...}
    opt_state: Any
    rng: jax.Array  # the root key; each step uses fold_in(rng, step)


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The divergence rule (``train.divergence``): a loss above ``factor`` x
    max(median of the last ``window`` accepted losses, ``min_reference``) is bad."""
    factor: float = 100.0
    window: int = 50
    min_reference: float = 0.01

    @classmethod
    def from_config(cls, cfg: Any) -> "Divergence":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"train.divergence: unknown fields {sorted(unknown)} (it takes "
                             f"factor, window, min_reference)")
        rule = cls(**cfg)
        if rule.factor < 0 or (rule.factor and rule.factor <= 1) or rule.window < 1 \
                or rule.min_reference < 0:
            raise ValueError(f"train.divergence: factor must be 0 (off) or > 1, window >= 1 "
                             f"and min_reference >= 0; got {rule}")
        return rule


def initial_guard(rule: Divergence = Divergence()) -> dict[str, jax.Array]:
    """No bad step yet (``step == -1``) and no loss history (``seen == 0``). The history is
    zeros, not NaN: several processes check that they place equal values, and NaN is not
    equal to itself."""
    return {"step": jnp.int32(-1), "loss": jnp.float32(0), "grad_norm": jnp.float32(0),
            "why": jnp.int32(0), "reference": jnp.float32(0),
            "recent": jnp.zeros((rule.window,), jnp.float32), "seen": jnp.int32(0)}


# guard["why"]: the reason a step was bad.
WHY = {1: "non-finite loss or gradient", 2: "non-finite parameters after the update",
       3: "diverging loss"}


def split_micro_batches(batch: Batch, k: int, num_devices: int = 1) -> Batch:
    """``[B, ...] -> [k, B / k, ...]``, micro-batch ``j`` holding rows ``j, j + k, ...``.

    Reshaping to ``[B / k, k]`` first keeps each row on the device that holds it: the
    batch is sharded in contiguous blocks, and ``B / k`` a multiple of ``num_devices``
    makes every micro-batch sharded the same way, with no data moved.
    """
    def split(x):
        b = x.shape[0]
        if b % k or (b // k) % num_devices:
            raise ValueError(
                f"train.grad_accum_steps={k}: the global batch of {b} does not split into "
                f"{k} micro-batches that are each a multiple of the {num_devices} devices "
                f"the batch is sharded over")
        x = x.reshape((b // k, k) + x.shape[1:])
        return jnp.moveaxis(x, 1, 0)
    return jax.tree.map(split, batch)


def loss_and_grads(loss_fn: LossFn, params: Any, model_state: Any, batch: Batch,
                   rng: jax.Array, k: int = 1, num_devices: int = 1):
    """``(loss, metrics, model_state, grads)`` over the whole batch, in ``k`` micro-batches.

    With ``k == 1`` this is ``value_and_grad(loss_fn)`` itself (same key, same numbers).
    Micro-batch ``j`` gets the key ``fold_in(rng, j)``; loss, metrics and gradients are
    means over the micro-batches.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if k == 1:
        (loss, (metrics, model_state)), grads = grad_fn(params, model_state, batch, rng)
        return loss, metrics, model_state, grads

    def body(carry, xs):
        grad_sum, state = carry
        micro, j = xs
        (loss, (metrics, state)), grads = grad_fn(params, state, micro,
                                                  jax.random.fold_in(rng, j))
        return (jax.tree.map(jnp.add, grad_sum, grads), state), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grad_sum, model_state), (losses, metrics) = jax.lax.scan(
        body, (zeros, model_state), (split_micro_batches(batch, k, num_devices),
                                     jnp.arange(k)))
    grads = jax.tree.map(lambda g: g / k, grad_sum)
    return losses.mean(), jax.tree.map(jnp.mean, metrics), model_state, grads


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, k: int = 1,
                    num_devices: int = 1, divergence: Divergence = Divergence()):
    """``step(state, batch, guard) -> (state, metrics, guard)``, to be jitted; ``guard``
    comes from ``initial_guard(divergence)``."""
    def train_step(state: TrainState, batch: Batch, guard: dict):
        rng = jax.random.fold_in(state.rng, state.step)
        loss, metrics, model_state, grads = loss_and_grads(
            loss_fn, state.params, state.model_state, batch, rng, k, num_devices)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        grad_norm = optax.global_norm(grads)
        new = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, model_state=model_state)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        finite_state = _all_finite((new.params, new.model_state))
        filled = jnp.arange(divergence.window) < guard["seen"]
        reference = jnp.maximum(jnp.nanmedian(jnp.where(filled, guard["recent"], jnp.nan)),
                                divergence.min_reference)
        diverged = ((divergence.factor > 0) & (guard["seen"] > 0)
                    & (loss > divergence.factor * reference))
        why = jnp.where(~finite, 1, jnp.where(~finite_state, 2, jnp.where(diverged, 3, 0)))
        clean = guard["step"] < 0  # no bad step yet
        ok = clean & (why == 0)
        # From the first bad step on the state stays as it was, so what is saved stays
        # good; the host reads the guard only now and then.
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
        first = clean & (why > 0)

        def pick(now, before):
            return jnp.where(first, now, before)
        guard = {"step": pick(state.step + 1, guard["step"]), "loss": pick(loss, guard["loss"]),
                 "grad_norm": pick(grad_norm, guard["grad_norm"]), "why": pick(why, guard["why"]),
                 "reference": pick(reference, guard["reference"]),
                 "recent": jnp.where(ok, guard["recent"].at[guard["seen"] % divergence.window]
                                     .set(loss), guard["recent"]),
                 "seen": guard["seen"] + ok.astype(jnp.int32)}
        return new, dict(metrics, loss=loss, grad_norm=grad_norm), guard
    return train_step
