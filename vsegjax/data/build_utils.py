"""Pieces the real-dataset builders share: the bad-example error, a bounded parallel
reader and the report of what ``skip_bad`` left out."""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterable, Iterator


class BadExample(ValueError):
    """One example cannot be built from its files; the message names them."""


def bounded_map(fn: Callable, items: Iterable, workers: int, window: int,
                catch: tuple[type[BaseException], ...] = (BadExample,)) -> Iterator:
    """Ordered map over a thread pool (OpenCV decoding releases the GIL) with at most
    ``window`` items in flight; yields (item, result or the ``catch`` error it raised)."""
    def call(item):
        try:
            return fn(item)
        except catch as e:
            return e

    if workers <= 1:
        for item in items:
            yield item, call(item)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= window:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def format_report(name: str, skipped: dict[str, list[tuple[str, str]]],
                  what: str = "example") -> str:
    """What ``skip_bad`` skipped: the count, then per split one line per example."""
    total = sum(len(v) for v in skipped.values())
    lines = [f"{name}: skipped {total} bad {what}(s)"]
    for split, items in skipped.items():
        if items:
            lines.append(f"  {split}: {len(items)} skipped")
            lines.extend(f"    {key}: {reason}" for key, reason in items)
    return "\n".join(lines)
