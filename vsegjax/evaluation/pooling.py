"""A host-side evaluation split over processes: each process evaluates its own rows of
every global batch (``vsegjax.core.inputs.eval_batches(per_process=True)``) and the additive
accumulators (confusion matrices, consistency counts, flow-error sums) are summed over the
processes here, so every process ends with the totals and a pod does not evaluate on one
host. With one process nothing moves."""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np


def sum_over_processes(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``values`` (the same names and shapes on every process) summed over all processes:
    integers as int64, anything else as float64, exactly (each process' numbers arrive bit
    for bit, and the sum is taken here)."""
    values = {k: np.asarray(v, np.int64 if np.issubdtype(np.asarray(v).dtype, np.integer)
                            else np.float64) for k, v in values.items()}
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils
    # JAX moves 32-bit words (x64 is off): send each 64-bit number as two int32 words.
    words = {k: np.ascontiguousarray(v).reshape(-1).view(np.int32) for k, v in values.items()}
    gathered = multihost_utils.process_allgather(words)
    return {k: np.ascontiguousarray(np.asarray(gathered[k], np.int32)).view(v.dtype)
            .reshape((-1,) + v.shape).sum(0) for k, v in values.items()}


def per_process(count: int) -> list[int]:
    """Each process' ``count`` (e.g. the snippets it evaluated), in process order."""
    counts = {f"{p:05d}": np.asarray(count if p == jax.process_index() else 0)
              for p in range(jax.process_count())}
    pooled = sum_over_processes(counts)
    return [int(pooled[k]) for k in sorted(pooled)]
