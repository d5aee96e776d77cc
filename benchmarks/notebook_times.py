"""Run time of each notebook in colabs/ at its real defaults, under a fresh kernel.

    python benchmarks/notebook_times.py [NAME.ipynb ...]

Each notebook runs top to bottom with nbclient (as tests/test_colabs.py does, but with
no parameters injected) in a temporary WORKDIR; prints seconds per notebook. The figure
each notebook states in its first cell comes from here.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _notebooks import run  # noqa: E402


def main() -> None:
    names = sys.argv[1:] or sorted(p.name for p in (ROOT / "colabs").glob("*.ipynb"))
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            _, seconds = run(ROOT / "colabs" / name, {"WORKDIR": tmp}, timeout=3600)
        print(f"{name:32s} {seconds:7.0f} s", flush=True)


if __name__ == "__main__":
    main()
