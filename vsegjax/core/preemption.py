"""Stopping early and cleanly: SIGTERM (a TPU preemption notice, ``kill``, a scheduler)
and Ctrl-C.

On one process a SIGTERM handler sets a flag the loop reads after each step. On several,
JAX's preemption sync manager (started by ``jax.distributed.initialize``) catches the
signal and ``reached_preemption_sync_point(step)`` turns True at the same step on every
process, so they all save the same step together and stop.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preempted(Exception):
    """Training stopped on SIGTERM after saving ``step``; the same command resumes it."""

    def __init__(self, step: int, directory: str):
        super().__init__(f"preempted (SIGTERM): saved step {step} to {directory}; run the "
                         f"same command again to resume")
        self.step = step
        self.directory = directory


class StopSignal:
    """``should_stop(step)`` after each step; ``close()`` restores the old handlers.

    On one process a first Ctrl-C (SIGINT) only sets ``interrupted``, read at the same
    point: a ``KeyboardInterrupt`` raised by Python's own handler can land between the
    step call that donated the old state and the assignment of the new one, and then
    there is no state left to save. A second Ctrl-C interrupts at once.
    """

    def __init__(self):
        self._requested = False
        self.interrupted = False
        self._previous: Any = None
        self._previous_int: Any = None
        self._multi = jax.process_count() > 1
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._previous_int = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_signal(self, signum, frame) -> None:
        if not self._requested:
            logging.warning("SIGTERM: finishing the step in progress, then saving")
        self._requested = True

    def _on_interrupt(self, signum, frame) -> None:
        logging.warning("Ctrl-C: finishing the step in progress, then saving (press it "
                        "again to stop at once)")
        print("\nCtrl-C: finishing the step in progress, then saving (again: stop at once)",
              flush=True)
        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous_int)

    def should_stop(self, step: int) -> bool:
        if self._multi:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self._requested

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            signal.signal(signal.SIGINT, self._previous_int)
            self._previous = None
