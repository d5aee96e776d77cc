"""Trained FlowNetS variables and architecture from a file or a run folder.

``load_flownet_variables`` finds a FlowNetS parameter tree in a msgpack file, an orbax
checkpoint or a run's latest step, checking every shape; ``checkpoint_architecture``
reads the FlowNetS fields of the run that wrote it (its config.json), so a provider builds
the network the checkpoint was trained as (``residual`` and ``flow_scale`` change no
shape, so a mismatch would otherwise load silently).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import flax.serialization
import jax
import jax.numpy as jnp

from vsegjax import checkpoint_io as checkpoint
from vsegjax.models.flownet import FlowNetS, flow_decoder_config, init_flownet
def _find_params(tree: Any, want: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path in ``tree`` (parameters, or a checkpoint's metadata) of the sub-dict whose
    keys are those of ``want`` (a params dict), or None."""
    if isinstance(tree, Mapping):
        if set(tree) == set(want):
            return path
        preferred = [k for k in ("params", "flow", "flownet") if k in tree]
        for key in preferred + [k for k in tree if k not in preferred]:
            found = _find_params(tree[key], want, (*path, key))
            if found is not None:
                return found
    return None


def _item_dir(path: str) -> str:
    """The pytree checkpoint folder of ``path``: a run's workdir (its latest step's train
    state), a step folder of a CheckpointManager, or a checkpoint folder itself."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        try:
            return checkpoint.latest_state_dir(path, what="flow.checkpoint")
        except FileNotFoundError as e:
            raise ValueError(str(e)) from e
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    return path


def _read_params(path: str, template: Any, module: FlowNetS) -> Any:
    """FlowNetS parameters from a msgpack file or an orbax checkpoint; the latter read
    against ``template``'s shapes before anything is allocated."""
    arch = f"FlowNetS(width={module.width}, num_levels={module.num_levels})"
    missing = ValueError(f"flow.checkpoint: no FlowNetS parameters (top-level names "
                         f"{sorted(template)}) in {path}")
    hint = "; check flow.width / flow.num_levels"
    if os.path.isfile(path):  # its size bounds what reading it allocates
        with open(path, "rb") as f:
            tree = flax.serialization.msgpack_restore(f.read())
        where = _find_params(tree, template)
        if where is None:
            raise missing
        params = checkpoint.at(tree, where)
        try:
            checkpoint.check_shapes(params, template, f"flow.checkpoint: {path} for {arch}")
        except ValueError as e:
            raise ValueError(f"{e}{hint}") from e
        return jax.tree.map(lambda s, x: jnp.asarray(x, s.dtype), template, params)
    item_dir = _item_dir(path)
    metadata = checkpoint.saved_tree(item_dir)
    where = _find_params(metadata, template)
    if where is None:
        raise missing
    try:
        return checkpoint.read_checked(item_dir, {where: template},
                                       f"flow.checkpoint: {path} for {arch}")[where]
    except ValueError as e:
        raise ValueError(f"{e}{hint}") from e


def load_flownet_variables(path: str, module: FlowNetS, rng: jax.Array | None = None) -> dict:
    """FlowNetS variables from ``path``: a flax msgpack file, an orbax checkpoint folder,
    a step folder, or a run's workdir (its latest ``checkpoints/`` step). The parameter
    sub-tree is found by matching ``module``'s parameter names; its shapes are checked
    (from the metadata, for a checkpoint) before it is read."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.exists(path):
        raise ValueError(f"flow.checkpoint: {path} does not exist")
    template = jax.eval_shape(lambda: init_flownet(module, jax.random.key(0)))["params"]
    try:
        params = _read_params(path, template, module)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - surface any reader error with the file name
        raise ValueError(f"flow.checkpoint: cannot read {path}: {type(e).__name__}: {e}") from e
    return {"params": params}


# The FlowNetS fields that shape its parameters or its output (``residual`` and
# ``flow_scale`` do not change a shape, so a mismatch would load silently).
ARCH_FIELDS = ("width", "num_levels", "max_displacement", "occlusion", "residual", "flow_scale")
_ARCH_DEFAULTS = dict(width=1.0, num_levels=6, max_displacement=4, occlusion=False,
                      residual=False, flow_scale=20.0)


def checkpoint_architecture(path: str) -> tuple[dict[str, Any], str] | None:
    """(FlowNetS fields, the config.json read) of the run that wrote the checkpoint at
    ``path`` (a run's folder or one of its step folders), or None when there
    is no run config beside it (e.g. a msgpack file). EFC runs with a separate FlowNetS
    branch (``efc.flow_branch='separate'``, as its flow pre-training writes) and runs with
    a learned ``flow`` block are understood; an EFC run's shared decoder is no FlowNetS."""
    folder = os.path.abspath(os.path.expanduser(str(path)))
    for _ in range(4):  # run/, run/checkpoints, run/checkpoints/<step>, .../<step>/state
        config_path = os.path.join(folder, "config.json")
        if os.path.isfile(config_path):
            break
        folder = os.path.dirname(folder)
    else:
        return None
    with open(config_path) as f:
        config = json.load(f)
    if "stages" in config:  # a whole run's config: its stages' folders hold the weights
        return None
    efc = config.get("efc")
    if isinstance(efc, Mapping):
        # A stage's config.json is resolved (core.config): it has every efc field.
        if efc["flow_branch"] != "separate":
            raise ValueError(f"flow.checkpoint: {path} is an EFC run whose flow is the "
                             f"shared decoder (efc.flow_branch='shared' in {config_path}), "
                             f"not a FlowNetS; use a run with efc.flow_branch='separate'")
        fields = flow_decoder_config().to_dict()
        fields.update(efc["flow"])
        fields["occlusion"] = True  # EFC's FlowNetS always has the occlusion head
    elif isinstance(config.get("flow"), Mapping) and config["flow"]["source"] == "flownet":
        fields = config["flow"]
    else:
        return None
    return {k: fields.get(k, _ARCH_DEFAULTS[k]) for k in ARCH_FIELDS}, config_path


def architecture(get: Callable, checkpoint: str | None) -> dict[str, Any]:
    """FlowNetS fields: the checkpoint's run's where it has a config (a field the flow
    block sets to another value is an error), else the flow block's, else defaults."""
    found = checkpoint_architecture(checkpoint) if checkpoint else None
    if found is None:
        return {k: get(k, _ARCH_DEFAULTS[k]) for k in ARCH_FIELDS}
    arch, config_path = found
    for key in ARCH_FIELDS:
        mine = get(key, None)
        if mine is not None and mine != arch[key]:
            raise ValueError(f"flow.{key}={mine!r} but flow.checkpoint {checkpoint} was "
                             f"trained with {key}={arch[key]!r} ({config_path}); set "
                             f"flow.{key}={arch[key]!r} or leave it out")
    return arch
