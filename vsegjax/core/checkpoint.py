"""Orbax checkpoints of the train state and the grain iterator, written by process 0's plan.

A checkpoint is a step folder holding three items: ``state`` (params, optimiser state,
model state, step, RNG), ``data`` (the input iterator's position, per process) and
``meta`` (JSON). Orbax writes into a temporary folder and renames it when complete, so
an interrupted save never looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vsegjax import files
# The readers, re-exported: this module is where the trainer, the apps and the tests read
# and write a run's checkpoints.
from vsegjax.checkpoint_io import (TreePath, at, check_shapes, latest_state_dir,  # noqa: F401
                                   load_groups, load_state_tree, load_variables, read_checked,
                                   saved_tree, variables_template)


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
