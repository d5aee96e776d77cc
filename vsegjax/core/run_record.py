"""A run folder's record of its config, kept across resumes.

``<stage>/config.json`` says what a stage's checkpoints are: ``vsegjax.segment`` and
``vsegjax.export`` rebuild the model from it. Rewriting it unread on resume could make it
describe another model than the one saved. So a resumed stage is compared with its
record first:

- a change outside ``train``, ``eval`` and ``mesh`` (model, data, input, optimizer, the
  method's blocks, seed) is refused, naming the fields, unless the run is started with
  ``--allow_config_change``, in which case the new config becomes the record;
- an accepted change (more steps, another evaluation split, another device count) keeps
  the original ``config.json``.

Either way the change is appended to ``<stage>/config_changes.jsonl`` with the old and
new values.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from vsegjax import files

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
# {"stage": name, "task": task name}: what a stage's folder holds, read where the folder is
# used on its own (``vsegjax.segment --workdir=<stage folder>``).
STAGE_FILE = "stage.json"
# Blocks a resumed run may change without changing what its checkpoints are.
ACCEPTED = ("train", "eval", "mesh")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_json(config: Any) -> dict:
    """A config as the JSON the record holds (tuples as lists)."""
    return json.loads(config.to_json_best_effort())


def changes(old: dict, new: dict) -> dict[str, list]:
    """Dotted field -> [old, new] for every field that differs (absent = None)."""
    a, b = _flatten(old), _flatten(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _has_checkpoints(workdir: str) -> bool:
    ckpts = os.path.join(workdir, "checkpoints")
    if not files.isdir(ckpts):
        return False
    if not files.is_local(ckpts):
        return True  # a bucket: assume saved steps rather than list them
    return any(n.isdigit() for n in os.listdir(ckpts))


def check_resume(workdir: str, new: dict, where: str, allow: bool = False,
                 resolve: Callable[[dict], Any] | None = None) -> dict[str, list]:
    """The changes from ``workdir``'s record to ``new``; raises ``ValueError`` naming the
    fields when they change what the saved checkpoints are and ``allow`` is not set.
    The record is passed through ``resolve`` first (the task's ``resolve_config``), so a
    field an older vsegjax did not write counts as its default."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not files.isfile(path) or not _has_checkpoints(workdir):
        return {}
    old = json.loads(files.read_text(path))
    if resolve is not None:
        old = config_json(resolve(old))
    diff = changes(old, new)
    refused = [k for k in diff if k.split(".")[0] not in ACCEPTED]
    if refused and not allow:
        shown = "; ".join(f"{k}: {diff[k][0]!r} -> {diff[k][1]!r}" for k in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ValueError(f"{where}: {workdir} holds checkpoints of another config ({shown}"
                         f"{more}); use another --workdir, or pass --allow_config_change to "
                         f"resume with the new one (the change is recorded in "
                         f"{CHANGES_FILE})")
    return diff


def write(workdir: str, new: dict, diff: dict[str, list], stage: dict | None = None) -> None:
    """Writes the record: ``new`` if there is none or a refused change was allowed; any
    change appended to the changes file; ``stage`` (its name and task) as ``stage.json``."""
    if stage is not None:
        files.atomic_write_text(os.path.join(workdir, STAGE_FILE), json.dumps(stage))
    path = os.path.join(workdir, CONFIG_FILE)
    forced = any(k.split(".")[0] not in ACCEPTED for k in diff)
    if not files.isfile(path) or forced or not _has_checkpoints(workdir):
        files.atomic_write_text(path, json.dumps(new, indent=2))
    if diff and files.is_writer() and files.is_local(workdir):
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kept_original": not forced,
                 "changes": diff}
        with open(os.path.join(workdir, CHANGES_FILE), "a") as f:
            f.write(json.dumps(entry) + "\n")
