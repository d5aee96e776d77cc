"""The table of docs/scaling.md from ``vsegjax.compile --out`` reports.

    python benchmarks/compile_table.py report1.json [report2.json ...]

One row per compiled step: config, stage, step, topology, global batch, HBM per chip
(of the chip's), TFLOP and GB per chip per step, the roofline step time, the MFU bound
and the compile time (on the machine that compiled it).
"""

import json
import os
import sys


def main(paths: list[str]) -> None:
    print("| config | stage | step | topology | batch | HBM/chip GiB | TFLOP | GB | "
          "roofline ms | MFU bound | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            reports = json.load(f)
        for r in reports:
            name = os.path.basename(r.get("config", path)).removesuffix(".py")
            extra = " ".join(o.removeprefix("--config.") for o in r.get("overrides", []))
            figures = ["-"] * 4 if r.get("error") else [  # refused: only its HBM is known
                f"{r['flops_per_chip'] / 1e12:.3f}", f"{r['bytes_accessed_per_chip'] / 1e9:.1f}",
                f"{r['roofline_step_s'] * 1e3:.1f}", f"{r['mfu_bound']:.3f}"]
            print(f"| {name}{' (' + extra + ')' if extra else ''} | {r['stage']} | "
                  f"{r['step']} | {r['topology']} | {r['batch_size']} | "
                  f"{r['hbm_bytes_per_chip'] / 2 ** 30:.2f} of "
                  f"{r['hbm_capacity_bytes'] / 2 ** 30:.0f}{'' if r['fits'] else ' (no)'} | "
                  + " | ".join(figures) + f" | {r['compile_s']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
