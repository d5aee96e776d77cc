"""Entry point: ``python -m vsegjax.main --config=configs/<file>.py[:variant] --workdir=DIR``.

A config with ``stages`` runs through the one experiment runner
(``vsegjax.core.experiment``) with the methods' registry (``vsegjax.methods``);
``configs/synthetic_preview.py`` (``task="preview"``) only builds the dataset and draws
its snippets. Every config field can be overridden,
e.g. ``--config.data.data_dir=/data``; an unknown field is rejected with its name.

Several processes (a TPU pod's workers, or CPU processes on one machine) run the same
command with ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``
(``vsegjax.core.distributed``); on a Cloud TPU VM no flag is needed.

Only absl and ml_collections are imported before the flags are parsed, so ``--help``
answers at once; the configs and tasks it lists are read from the files and the registry.
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app, flags
from ml_collections import config_flags

from vsegjax.cli import parse_flags
from vsegjax.methods import REGISTRY

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _configs_help() -> str:
    names = sorted(p.name for p in CONFIG_DIR.glob("*.py")
                   if p.name not in ("__init__.py", "common.py")) if CONFIG_DIR.is_dir() else []
    return (f"Configs in {CONFIG_DIR}: {', '.join(names) or '(none found)'}. "
            f"Tasks a stage can name: {', '.join(sorted(REGISTRY))}.")


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py, optionally :variant). " + _configs_help(),
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run "
    "(jax.distributed.initialize); not needed on a Cloud TPU VM.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process' index in 0..num_processes-1.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a run whose stages were saved with another model, "
    "data or optimizer config (the change is recorded in <stage>/config_changes.jsonl).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for the coordinator and every process.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, os.path.expanduser(_WORKDIR.value)
    if "stages" not in config and config.get("task") != "preview":
        raise app.UsageError("the config declares no stages (config.stages) and is not the "
                             "preview job (task='preview'); build it with configs/common.py")
    from vsegjax.core import distributed  # before anything starts a JAX backend
    process = distributed.ProcessFlags(_COORDINATOR.value, _NUM_PROCESSES.value,
                                       _PROCESS_ID.value, _INIT_TIMEOUT.value)
    try:
        distributed.initialize(process)
    except (ValueError, TimeoutError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    if "stages" in config:
        from vsegjax.core import experiment  # the heavy imports come with the run
        try:  # the runner writes config.json, keeping a resumed run's record
            prepared = experiment.prepare(config, workdir, REGISTRY,
                                          _ALLOW_CHANGE.value)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        from vsegjax.core.checkpoint import CheckpointError
        from vsegjax.core.preemption import Preempted
        from vsegjax.core.trainer import NonFiniteLossError
        try:
            experiment.run(config, workdir, REGISTRY, prepared)
        except Preempted as e:  # saved; exit 0 so a scheduler does not count a failure
            print(e, flush=True)
            return
        except (CheckpointError, NonFiniteLossError) as e:  # one line, the way on in it
            raise SystemExit(f"error: {e}") from None
    else:
        from vsegjax import files
        from vsegjax.data import preview
        files.atomic_write_text(os.path.join(workdir, "config.json"),
                                json.dumps(json.loads(config.to_json_best_effort()), indent=2))
        preview.run(config, workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
