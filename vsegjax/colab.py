"""Installing vsegjax into a runtime that brings its own JAX stack (Colab).

Colab ships recent jax, flax, TensorFlow and opencv-python. A plain ``pip install`` of
vsegjax would resolve vsegjax's ranges against them: it would downgrade jax or flax to
fit an upper cap (breaking the jaxlib and libraries Colab built around them), and add
opencv-python-headless beside Colab's opencv-python (two packages owning one ``cv2``).
So the notebooks' first cell installs vsegjax with ``--no-deps`` and then calls
``install_missing()``, which installs only the requirements that are absent or older than
vsegjax's minimum. A package the runtime has at a version above vsegjax's cap is kept,
and said so: it is the runtime's choice, and vsegjax is tested only inside the ranges.

Only the standard library and ``packaging`` (which every such runtime has) are imported
here, because this runs before vsegjax's own requirements are installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from typing import Mapping, Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Distributions that all provide ``cv2``: any one of them satisfies an OpenCV requirement.
OPENCV = tuple(canonicalize_name(n) for n in (
    "opencv-python", "opencv-python-headless", "opencv-contrib-python",
    "opencv-contrib-python-headless"))
_LOWER = (">=", ">", "==", "~=", "===")


def installed_versions() -> dict[str, str]:
    """{canonical distribution name: version} of this Python's installed packages."""
    return {canonicalize_name(d.metadata["Name"]): d.version
            for d in importlib.metadata.distributions() if d.metadata["Name"]}


def plan(requirements: Sequence[str], installed: Mapping[str, str]
         ) -> tuple[list[str], list[str]]:
    """(requirements to install, notes on installed packages kept outside vsegjax's range).

    ``requirements`` are PEP 508 strings (vsegjax's ``install_requires``; those of extras
    are left out), ``installed`` maps canonical names to versions. An absent package is
    installed as required; one older than the minimum is upgraded to the minimum only (no
    upper cap, so pip does not pull the runtime's other packages down); a newer one is
    kept."""
    to_install, kept = [], []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or not for this platform
        name = canonicalize_name(req.name)
        if name in OPENCV:
            have = [n for n in OPENCV if n in installed]
            if have:
                name = have[0]
                if name != canonicalize_name(req.name):
                    kept.append(f"{name} {installed[name]} provides cv2 (instead of "
                                f"{req.name})")
                    continue
        version = installed.get(name)
        if version is None:
            to_install.append(str(req))
        elif req.specifier.contains(version, prereleases=True):
            continue
        else:
            lower = [s for s in req.specifier if s.operator in _LOWER]
            if any(not s.contains(version, prereleases=True) for s in lower):
                minimum = ",".join(str(s) for s in lower if s.operator != "==") or str(lower[0])
                to_install.append(f"{req.name}{minimum}")
            else:
                kept.append(f"{name} {version} kept (vsegjax is tested with "
                            f"{req.name}{req.specifier})")
    return to_install, kept


def install_missing(pip_args: Sequence[str] = ("-q",)) -> list[str]:
    """Installs what ``plan`` says is missing for the installed vsegjax; returns it."""
    requirements = importlib.metadata.requires("vsegjax") or []
    to_install, kept = plan(requirements, installed_versions())
    for note in kept:
        print(f"vsegjax: {note}")
    if to_install:
        print("vsegjax: installing", " ".join(to_install))
        subprocess.run([sys.executable, "-m", "pip", "install", *pip_args, *to_install],
                       check=True)
        importlib.invalidate_caches()
    return to_install

