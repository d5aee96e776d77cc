"""Entry point: ``python -m vsegjax.main --config=configs/<file>.py --workdir=DIR``.

Every field of the config can be overridden, e.g. ``--config.data.data_dir=/data``;
an unknown field is rejected by ml_collections with its name.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from vsegjax.data import preview
from vsegjax.train import efc, grfp, sdc, segmentation, vplr, warp_refine

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])

# config.task -> runner(config, workdir); the training tasks join here as they land.
RUNNERS = {"preview": preview.run, "grfp": grfp.run, "static": segmentation.run,
           "efc": efc.run, "sdc": sdc.run, "warp_refine": warp_refine.run,
           "vplr": vplr.run}


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors naming the config file or field at fault."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        raise SystemExit(f"error: {e}") from None
    except (KeyError, AttributeError) as e:
        key = str(e).strip("\"'")
        bad = [a.split("=")[0] for a in argv if a.startswith("--config.")
               and key in a.split("=")[0].split(".")]
        where = f" ({', '.join(bad)})" if bad else ""
        raise SystemExit(f"error: unknown config field {key!r}{where}; see the config file "
                         f"for the fields it defines") from None
    except OSError as e:
        cause = e.__cause__ or e
        raise SystemExit(f"error: cannot load the config file: {cause}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, os.path.expanduser(_WORKDIR.value)
    if config.task not in RUNNERS:
        raise app.UsageError(f"config field task: unknown task {config.task!r}; "
                             f"known: {sorted(RUNNERS)}")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
    RUNNERS[config.task](config, workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
