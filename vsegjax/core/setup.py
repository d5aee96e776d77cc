"""What the trainer builds before its loop, as one value: the mesh's train step.

The trainer runs it on real devices; ``vsegjax.compile`` compiles it for a TPU topology
that is not attached (abstract devices), so both get the same optimiser, shardings of
state and batch, remat/dtype and gradient-accumulation settings from the same config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vsegjax.core import optim
from vsegjax.core import sharding
from vsegjax.core.step import Divergence, TrainState, make_train_step
from vsegjax.core.task import Task


def split_variables(variables: dict) -> tuple[Any, dict]:
    """(params, the other collections) of a model's variables."""
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


@dataclasses.dataclass
class StepSetup:
    """The train step of ``task`` on ``mesh`` and everything it was built from."""

    mesh: Mesh
    tx: optax.GradientTransformation
    schedule: optax.Schedule  # logged beside the loss
    rule: Divergence
    init_key: jax.Array
    create_state: Callable[[jax.Array], TrainState]  # the fresh state, from init_key
    abstract_state: Any  # ShapeDtypeStructs carrying the state's shardings
    state_sharding: Any
    # step_fn(state, global batch, guard) -> (state, metrics, guard), jitted, donating state
    step_fn: Callable


def build(config: ml_collections.ConfigDict, task: Task, mesh: Mesh) -> StepSetup:
    """The step the trainer runs for ``config`` (resolved) and ``task`` on ``mesh``.

    Only shapes are computed here (``jax.eval_shape``): nothing is allocated, so the same
    call serves abstract TPU devices.
    """
    num_steps = int(config.train.num_steps)
    root = jax.random.PRNGKey(config.seed)
    init_key, state_key = jax.random.split(root)
    abstract_vars = jax.eval_shape(task.init_variables, init_key)
    opt_cfg = ml_collections.ConfigDict(config.optimizer.to_dict())
    opt_cfg.frozen = tuple(sorted(set(opt_cfg.frozen) | set(task.frozen_params())))
    tx = optim.make_optimizer(opt_cfg, num_steps, abstract_vars["params"])
    schedule = optim.make_schedule(opt_cfg, num_steps)

    def create_state(key):
        params, model_state = split_variables(task.init_variables(key))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                          opt_state=tx.init(params), rng=state_key)

    abstract_state = jax.eval_shape(create_state, init_key)
    state_sharding = sharding.state_shardings(abstract_state, mesh, config.mesh.fsdp_min_size)
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state,
        state_sharding)
    accum = int(config.train.grad_accum_steps)
    if accum < 1:
        raise ValueError(f"train.grad_accum_steps must be >= 1, got {accum}")
    rule = Divergence.from_config(config.train.divergence)
    replicated = NamedSharding(mesh, P())
    step_fn = jax.jit(make_train_step(task.loss_fn, tx, accum, sharding.batch_size_over(mesh),
                                      rule),
                      donate_argnums=0, out_shardings=(state_sharding, replicated, replicated))
    return StepSetup(mesh=mesh, tx=tx, schedule=schedule, rule=rule, init_key=init_key,
                     create_state=create_state, abstract_state=abstract_state,
                     state_sharding=state_sharding, step_fn=step_fn)
