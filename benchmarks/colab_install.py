"""The notebooks' install cell in a fresh venv that already holds a Colab-like stack.

    python benchmarks/colab_install.py [--keep=DIR]

Creates a venv, installs the packages Colab ships (``COLAB`` below: jax, flax,
TensorFlow, opencv-python, the notebook kernel) at fixed versions, then runs the
install cell of ``colabs/grfp_synthetic.ipynb`` verbatim with ``VSEGJAX_SOURCE`` set to
this checkout, and prints what it added and what it changed. Colab's packages must come
out unchanged and no second OpenCV may appear. Then ``segment_and_export.ipynb`` runs
under that venv's kernel at the test's sizes, to show vsegjax works on that stack.

The versions are the newest this machine's package index has; Colab's own list of the
day cannot be read from here (its jax may be newer than vsegjax's cap: that case is the
plan's unit test, tests/test_colab_install.py).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ["jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "tensorflow-cpu==2.21.0",
         "opencv-python==4.12.0.88", "matplotlib", "pillow", "ipykernel", "nbclient",
         "nbformat", "packaging"]
WATCHED = ["jax", "jaxlib", "flax", "tensorflow-cpu", "opencv-python", "numpy"]


def freeze(python: pathlib.Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], check=True,
                         capture_output=True, text=True).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default="", help="build the venv here and keep it")
    args = parser.parse_args()
    root = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="colab_venv_"))
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run([str(python), "-m", "pip", "install", "-q", *COLAB], check=True)
    before = freeze(python)
    print(f"Colab-like stack installed in {time.perf_counter() - t0:.0f} s")

    nb = json.loads((ROOT / "colabs" / "grfp_synthetic.ipynb").read_text())
    cell = "".join(nb["cells"][1]["source"])
    t0 = time.perf_counter()
    subprocess.run([str(python), "-c", cell], check=True, cwd=root,
                   env={"VSEGJAX_SOURCE": str(ROOT), "PATH": f"{root / 'bin'}:/usr/bin:/bin"})
    after = freeze(python)
    print(f"install cell: {time.perf_counter() - t0:.0f} s")
    added = sorted(set(after) - set(before))
    changed = sorted(n for n in before if n in after and before[n] != after[n])
    print("added:", ", ".join(f"{n}=={after[n]}" for n in added))
    print("changed:", ", ".join(f"{n} {before[n]} -> {after[n]}" for n in changed) or "none")
    for name in WATCHED:
        print(f"  {name:16s} {before.get(name, '-'):>12s} -> {after.get(name, '-')}")
    bad = [n for n in WATCHED if before.get(n) != after.get(n)]
    bad += [n for n in added if n.startswith("opencv")]
    if bad:
        raise SystemExit(f"the install cell changed the runtime's own packages: {bad}")

    t0 = time.perf_counter()
    code = ("import pathlib, sys, tempfile; sys.path.insert(0, %r); from _notebooks import "
            "run; d = tempfile.mkdtemp(); run(pathlib.Path(%r), {'TRAIN_STEPS': 4, "
            "'MAX_FRAMES': 6, 'WORKDIR': d})" % (str(ROOT / "tests"),
                                                  str(ROOT / "colabs/segment_and_export.ipynb")))
    subprocess.run([str(python), "-c", code], check=True, cwd=root)
    print(f"segment_and_export.ipynb ran in that venv's kernel: "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
