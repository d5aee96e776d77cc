"""Running ``vsegjax.autolabel`` on the ``clip`` fixture (conftest.py) in a test."""

import hashlib
import pathlib

from vsegjax import autolabel
from vsegjax.data import synthetic

C = len(synthetic.CLASSES)


def tree_digest(folder: pathlib.Path) -> str:
    """One hash of every file's path and bytes under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode() + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()


def run_autolabel(root, out, method="copy", **flags) -> int:
    """``autolabel.main``'s exit code on ``root``/frames and ``root``/labels."""
    argv = [f"--frames={root / 'frames'}", f"--labels={root / 'labels'}", f"--out={out}",
            f"--method={method}", f"--num_classes={C}", "--max_side=0",
            *(f"--{k}={v}" for k, v in flags.items())]
    return autolabel.main(argv)
