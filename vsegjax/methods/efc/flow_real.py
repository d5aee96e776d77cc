"""EFC's flow branch on real data (Sintel / FlyingChairs) beside the OpenCV baselines.

    python -m vsegjax.methods.efc.flow_real --workdir=runs/efc_synthetic \\
        --sintel=DIR --chairs=DIR [--max_side=512]

Prints the end-point error of every pair (all pixels, and non-occluded where the data
marks occlusion) for the zero flow, Farneback, DIS and the learned flow, then the means,
and writes ``<workdir>/flow_real.json``. Without ``--workdir`` only the baselines run.
``--max_side`` computes every flow at reduced size and scales it back to full resolution
(the EPE is always measured at the ground truth's resolution).
"""

from __future__ import annotations

import json
import os

import numpy as np

from vsegjax.core import checkpoint, experiment
from vsegjax.evaluation.flow_real import FlowFn, baseline_fns, evaluate, format_table, real_pairs
from vsegjax.methods import REGISTRY
from vsegjax.methods.efc.task import EFCTask


def learned_fn(workdir: str) -> FlowFn:
    """The flow branch of the EFC run in ``workdir`` (its stage config and checkpoints)."""
    config = experiment.load_stage_config(workdir, "efc", REGISTRY)
    task = EFCTask(config)
    state = checkpoint.load_state_tree(os.path.join(workdir, "efc"))
    params, model_state = state["params"], state["model_state"]

    def fn(a, b):
        x1 = (a.astype(np.float32) / 255.0)[None]
        x2 = (b.astype(np.float32) / 255.0)[None]
        return task.predict_flow(params, model_state, x1, x2)[0][0]
    return fn


def main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="an EFC run (config.json + efc/checkpoints)")
    parser.add_argument("--sintel", help="Sintel sample folder")
    parser.add_argument("--chairs", help="FlyingChairs sample folder")
    parser.add_argument("--max_side", type=int, default=0, help="compute flows at this size")
    args = parser.parse_args(argv)
    if not args.sintel and not args.chairs:
        parser.error("give --sintel and/or --chairs")
    for folder in (args.sintel, args.chairs):
        if folder and not os.path.isdir(folder):
            parser.error(f"no such folder: {folder}")
    fns = baseline_fns()
    if args.workdir:
        fns["efc"] = learned_fn(args.workdir)
    result = evaluate(fns, real_pairs(args.sintel, args.chairs), args.max_side or None)
    print(format_table(result))
    if args.workdir:
        out = os.path.join(args.workdir, "flow_real.json")
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
