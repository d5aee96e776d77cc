"""Orbax checkpoints of the train state and the grain iterator, written by process 0's plan.

A checkpoint is a step folder holding three items: ``state`` (params, optimiser state,
model state, step, RNG), ``data`` (the input iterator's position, per process) and
``meta`` (JSON). Orbax writes into a temporary folder and renames it when complete, so
an interrupted save never looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vsegjax import files


class _IteratorAdapter:
    """Presents any iterator with ``get_state``/``set_state`` to grain's orbax handler.

    grain's handler accepts dict states only from its own ``DatasetIterator`` class and
    bytes from anything else; this adapter speaks bytes (JSON of a dict state), so task
    wrappers around a grain iterator checkpoint as well as the iterator itself.
    """

    def __init__(self, iterator: Any):
        self._it = iterator
        self._dict_state = not isinstance(iterator.get_state(), bytes)

    def get_state(self) -> bytes:
        state = self._it.get_state()
        return json.dumps(state).encode() if self._dict_state else state

    def set_state(self, state: bytes) -> None:
        self._it.set_state(json.loads(state) if self._dict_state else state)

    def start_prefetch(self) -> None:
        if hasattr(self._it, "start_prefetch"):
            self._it.start_prefetch()


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names its folder and the way on."""


class Checkpointer:
    """Periodic and final checkpoints in ``directory``, keeping the newest ``max_to_keep``.

    Rotation is done here, not by orbax, because a checkpoint is known to be good only
    once the step after it has passed the trainer's guard (its loss is computed from the
    saved parameters). ``save(step)`` is called only after the guard passed ``step``, so
    every earlier checkpoint is good; it deletes old ones but never the newest of those,
    so a run that goes bad keeps its last good checkpoint (one more than ``max_to_keep``
    when it is 1).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
        self.directory = files.resolve(directory)
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {max_to_keep}")
        self._keep = max_to_keep
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=async_save),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def has_step(self, step: int) -> bool:
        return step in self._mngr.all_steps()

    def save(self, step: int, state: Any, data_iter: Any | None = None,
             meta: dict | None = None) -> None:
        """Saves ``step``; the earlier checkpoints are known good, and the newest of them
        is never rotated away."""
        self._rotate(step - 1)
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta or {})}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_IteratorAdapter(data_iter))
        self._mngr.save(step, args=ocp.args.Composite(**items), force=True)

    def _rotate(self, verified_through: int) -> None:
        if self._keep is None:
            return
        self._mngr.wait_until_finished()  # orbax waits for the previous save anyway
        good = self._steps_through(verified_through)
        # The save about to start counts towards max_to_keep, but the last good one stays.
        for old in good[:-max(self._keep - 1, 1)]:
            self._mngr.delete(old)

    def last_good(self, verified_through: int) -> int | None:
        """The newest saved step at or before ``verified_through``."""
        good = self._steps_through(verified_through)
        return good[-1] if good else None

    def _steps_through(self, step: int) -> list[int]:
        return [s for s in self.all_steps() if s <= step]

    def restore(self, abstract_state: Any, data_iter: Any | None = None,
                step: int | None = None) -> tuple[Any, dict]:
        """Restores ``state`` onto the shardings in ``abstract_state``; ``data_iter`` in place."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        positions = self._positions(step) if data_iter is not None else {}
        own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if data_iter is not None and (own in positions or not positions):
            items["data"] = grain.checkpoint.CheckpointRestore(_IteratorAdapter(data_iter))
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001  (TensorStore, orbax and grain raise many kinds)
            raise self._unreadable(step, e) from e
        if "data" not in items and data_iter is not None:
            self._continue_elsewhere(step, positions, _IteratorAdapter(data_iter))
        return restored["state"], restored["meta"]

    def _positions(self, step: int) -> dict[str, bytes]:
        """The input positions saved with ``step``, by file (one per process that wrote it)."""
        folder = epath.Path(self.directory) / str(step) / "data"
        if not folder.exists():
            return {}
        return {p.name: p.read_bytes() for p in folder.glob("process_*-of-*.json")}

    @staticmethod
    def _continue_elsewhere(step: int, positions: dict[str, bytes],
                            data_iter: _IteratorAdapter) -> None:
        """Sets the input position of a checkpoint written by another number of processes.

        The pipeline's stream of global batches is the same for any process count, and
        each process' position counts global batches, so when every writer was at one
        position any process of this run continues from it. Differing positions (worker
        processes, a pipeline not sharded by process) cannot be mapped: the model state is
        restored and the input stream starts again from its beginning.
        """
        states = set(positions.values())
        writers = f"{len(positions)} process(es) ({', '.join(sorted(positions))})"
        if len(states) == 1:
            data_iter.set_state(states.pop())
            data_iter.start_prefetch()
            logging.warning("checkpoint step %d was written by %s and this run has %d: every "
                            "writer was at the same input position, which this run continues "
                            "from", step, writers, jax.process_count())
        else:
            logging.warning("checkpoint step %d was written by %s at different input "
                            "positions, which cannot be mapped onto %d process(es): the model "
                            "state is restored and the input stream starts again from its "
                            "beginning", step, writers, jax.process_count())

    def _unreadable(self, step: int, error: Exception) -> "CheckpointError":
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        folder = os.path.join(self.directory, str(step))
        earlier = self._steps_through(step - 1)
        aside = f"{folder}.unreadable"
        how = (f"to resume from step {earlier[-1]}, move it aside (mv {folder} {aside}) and "
               f"run the same command again" if earlier else
               f"there is no earlier checkpoint; move it aside (mv {folder} {aside}) to "
               f"start the run again from step 0")
        return CheckpointError(f"checkpoint step {step} cannot be read ({type(error).__name__}: "
                               f"{cause}); {how}")

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


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
