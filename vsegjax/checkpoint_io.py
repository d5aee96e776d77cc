"""Reading a run's orbax checkpoints, each subtree checked against the shapes a config
expects before any array is read.

It sits below every layer (beside ``files``) so a model can load its weights from a run
(``models.flownet_checkpoint``) without importing the trainer; ``core.checkpoint`` writes
checkpoints and re-exports these readers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from vsegjax import files

TreePath = tuple[str, ...]


def _dotted(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def at(tree: Any, path: TreePath) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def check_shapes(found: Any, expected: Any, where: str, prefix: TreePath = ()) -> None:
    """``ValueError`` naming the first parameter whose shape in ``found`` (a checkpoint's
    metadata, or arrays) is not the one in ``expected``, one ``expected`` has and ``found``
    lacks, or one ``found`` has and ``expected`` does not; paths are ``a/b/kernel``."""
    def shapes(tree):
        return {_dotted((*prefix, *p)): tuple(x.shape)
                for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    want, got = shapes(expected), shapes(found)
    for name, shape in want.items():
        if name not in got:
            raise ValueError(f"{where}: the checkpoint has no parameter {name} (this config "
                             f"expects shape {shape})")
        if got[name] != shape:
            raise ValueError(f"{where}: parameter {name} has shape {got[name]} in the "
                             f"checkpoint, this config expects {shape}")
    extra = sorted(set(got) - set(want))
    if extra:
        raise ValueError(f"{where}: the checkpoint holds {len(extra)} parameter(s) this config "
                         f"does not, e.g. {extra[0]} {got[extra[0]]}")


def saved_tree(item_dir: str) -> Any:
    """The tree of array metadata (shape, dtype) of the pytree checkpoint in ``item_dir``;
    nothing of the arrays is read."""
    return ocp.PyTreeCheckpointHandler().metadata(epath.Path(item_dir)).tree


def read_checked(item_dir: str, expect: Mapping[TreePath, Any], where: str,
                 required: bool = True) -> dict[TreePath, Any]:
    """The subtrees at ``expect``'s paths of the pytree checkpoint in ``item_dir``, as host
    arrays; each is first checked against ``expect``'s shapes from the checkpoint's
    metadata (``check_shapes``), so a received file cannot choose what this process
    allocates. A path the checkpoint lacks is an error when ``required``, else left out."""
    metadata = saved_tree(item_dir)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target: dict = {}
    empty: dict[TreePath, Any] = {}
    for path, tree in expect.items():
        found = at(metadata, path)
        if not jax.tree.leaves(tree) and not jax.tree.leaves(found):
            empty[path] = tree  # e.g. the model_state of a model without BatchNorm
            continue
        if found is None:
            if required:
                raise ValueError(f"{where}: the checkpoint has no {'/'.join(path)} (it holds "
                                 f"{sorted(metadata)})")
            continue
        check_shapes(found, tree, where, path)
        node = target
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # The expected dtypes: orbax casts a checkpoint stored in another precision.
        node[path[-1]] = jax.tree.map(lambda e: jax.ShapeDtypeStruct(
            tuple(e.shape), e.dtype, sharding=device), tree)
    restored = {}
    if target:
        restored = ocp.PyTreeCheckpointHandler().restore(
            epath.Path(item_dir), args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True))
    out = {path: jax.tree.map(jax.device_get, at(restored, path)) for path in expect
           if at(restored, path) is not None}
    return {**out, **empty}


def latest_state_dir(workdir: str, step: int | None = None, what: str = "checkpoint") -> str:
    """The ``state`` item folder of ``step`` (default: the latest) of the run in
    ``workdir``; ``FileNotFoundError`` starting with ``what`` when there is none."""
    directory = epath.Path(files.resolve(workdir)) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{what}: no checkpoints folder in {workdir}")
    # Orbax renames a step's folder to its bare number once complete ("6.orbax-checkpoint-
    # tmp-..." while writing; "6.unreadable" is one moved aside).
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    if step is None and not steps or step is not None and step not in steps:
        which = "" if step is None else f" step {step}"
        raise FileNotFoundError(f"{what}: no checkpoint{which} in {directory}")
    return str(directory / str(steps[-1] if step is None else step) / "state")


def load_state_tree(workdir: str, step: int | None = None, what: str = "init_from") -> Any:
    """The whole saved train state of a run (optimiser state included), as host arrays,
    unsharded, whatever topology wrote it. For a checkpoint someone else wrote, read what
    a config expects with ``load_variables`` instead."""
    item_dir = latest_state_dir(workdir, step, what)
    metadata = saved_tree(item_dir)
    out = read_checked(item_dir, {(k,): v for k, v in metadata.items()}, item_dir)
    return {path[0]: tree for path, tree in out.items()}


def variables_template(variables: Mapping[str, Any]) -> dict[TreePath, Any]:
    """``read_checked`` paths of model variables ``{"params": ..., "batch_stats": ...}``
    in a saved train state (``params`` and ``model_state/<collection>``)."""
    return {(("params",) if c == "params" else ("model_state", c)): v
            for c, v in variables.items()}


def _as_variables(tree: Mapping[TreePath, Any]) -> dict:
    """``read_checked``'s {path: subtree} of ``variables_template`` paths (or of paths one
    group deeper) back as model variables ``{"params": ..., "batch_stats": ...}``."""
    out: dict = {}
    for path, value in tree.items():
        collection, rest = ("params", path[1:]) if path[0] == "params" else (path[1], path[2:])
        if rest:
            out.setdefault(collection, {})[rest[0]] = value
        else:
            out[collection] = value
    return out


def load_variables(workdir: str, expected: Mapping[str, Any], what: str,
                   step: int | None = None) -> tuple[dict, int]:
    """(variables, step) of a run's checkpoint, shaped as ``expected`` (model variables as
    ``jax.eval_shape`` of the model's init gives them), checked before anything is read."""
    paths = {**variables_template(expected), ("step",): jax.ShapeDtypeStruct((), jnp.int32)}
    tree = read_checked(latest_state_dir(workdir, step, what), paths, f"{what} {workdir}")
    step_value = int(tree.pop(("step",)))
    return _as_variables(tree), step_value


def load_groups(workdir: str, fresh: Mapping[str, Any], what: str = "train.init_from") -> dict:
    """Variables of another run for ``Task.init_from``: each top-level group
    (``params/static``, ``batch_stats/static``, ...) that this config's ``fresh``
    variables and the checkpoint share, checked against this config's shapes before it is
    read; groups only one side has are left out."""
    expect = {(*path, key): group for path, groups in variables_template(fresh).items()
              for key, group in groups.items()}
    item_dir = latest_state_dir(workdir, None, what)
    tree = read_checked(item_dir, expect, f"{what} {workdir}", required=False)
    if not any(path[0] == "params" for path in tree):
        saved = saved_tree(item_dir)
        raise ValueError(f"{what}: the run in {workdir} shares no parameter group with this "
                         f"model (it has {sorted(saved.get('params', {}))}, this model "
                         f"{sorted(fresh.get('params', {}))})")
    return _as_variables(tree)
