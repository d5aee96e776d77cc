"""Compile a config's steps for a TPU topology on this machine, no TPU attached.

    python -m vsegjax.compile --config=configs/grfp_cityscapes.py --topology=v5e:4x4 \\
        [--out=report.json] [--config.mesh.fsdp=4 ...]

Needs libtpu (``pip install -e '.[tpu]'``). For each enabled stage it compiles the train
step as the trainer builds it and the evaluation step (``vsegjax.core.aot``), then prints
per chip: HBM (arguments, temporaries, outputs) against the chip's capacity, FLOPs and
bytes accessed per step, the roofline step time and the MFU it allows, and the compile
time. ``--out`` writes the same as JSON, one object per step. Topologies: libtpu's names
(``v5e:4x4``, ``v4:2x2x4``) or Cloud TPU's (``v5e-16``, ``v4-32``); see ``core/tpu.py``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from vsegjax.cli import parse_flags
from vsegjax.methods import REGISTRY

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4 or v4-32.")
_OUT = flags.DEFINE_string("out", None, "Write the reports here as JSON.")
_EVAL = flags.DEFINE_bool("eval", True, "Compile the evaluation step too.")
_HLO_DIR = flags.DEFINE_string("hlo_dir", None, "Write each compiled step's HLO text here "
                               "(libtpu's per-instruction estimated cycles are in it).")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # The host's own backend stays the CPU: only libtpu's compiler is used.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from vsegjax.core import aot, tpu
    if not tpu.libtpu_available():
        raise SystemExit("error: libtpu is not installed; pip install -e '.[tpu]' (it brings "
                         "jax[tpu]) to compile for a TPU topology")
    try:
        reports = aot.compile_config(_CONFIG.value, _TOPOLOGY.value, REGISTRY,
                                     eval_step=_EVAL.value, hlo_dir=_HLO_DIR.value)
    except (ValueError, RuntimeError, NotImplementedError) as e:
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    for r in reports:
        print(aot.format_report(r))
    if _OUT.value:
        config_file = config_flags.get_config_filename(flags.FLAGS["config"])
        overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
        with open(_OUT.value, "w") as f:
            json.dump([dict(r.as_dict(), config=config_file, overrides=overrides)
                       for r in reports], f, indent=2)
        print(f"wrote {_OUT.value}")
    if not all(r.fits for r in reports):
        raise SystemExit("error: a step does not fit the chip's HBM (see above)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
