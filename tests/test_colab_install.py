"""vsegjax.colab: what the notebooks' install cell adds to a runtime with its own stack."""

import importlib.metadata

from vsegjax import colab

REQS = ["jax<0.11,>=0.10.2", "flax<0.13,>=0.12.8", "opencv-python-headless>=4.9", "tqdm",
        "numpy>=2.0", 'jax[tpu]<0.11,>=0.10.2; extra == "tpu"', 'pytest>=8; extra == "test"']


def test_a_runtime_like_colabs_keeps_its_packages():
    """Newer jax/flax than the caps and Colab's opencv-python are kept; only what is
    absent is installed, and nothing from the extras."""
    runtime = {"jax": "0.12.1", "flax": "0.13.2", "opencv-python": "4.12.0.88",
               "numpy": "2.1.0"}
    to_install, kept = colab.plan(REQS, runtime)
    assert to_install == ["tqdm"]
    assert any(k.startswith("jax 0.12.1 kept") and "jax<0.11,>=0.10.2" in k for k in kept)
    assert any(k.startswith("flax 0.13.2 kept") for k in kept)
    assert any("opencv-python 4.12.0.88 provides cv2" in k for k in kept)


def test_an_old_package_is_raised_to_the_minimum_only():
    to_install, kept = colab.plan(REQS, {"jax": "0.7.2", "flax": "0.12.8", "numpy": "1.26.4",
                                         "opencv-python-headless": "4.10.0.84", "tqdm": "4"})
    # No upper cap: pip must not pull the runtime's other packages down to fit one.
    assert to_install == ["jax>=0.10.2", "numpy>=2.0"] and kept == []


def test_an_empty_runtime_gets_the_requirements_as_written():
    to_install, _ = colab.plan(REQS, {})
    assert to_install == ["jax<0.11,>=0.10.2", "flax<0.13,>=0.12.8",
                          "opencv-python-headless>=4.9", "tqdm", "numpy>=2.0"]


def test_this_environment_needs_nothing():
    """pip installed vsegjax here with its dependencies, so the plan is empty."""
    to_install, _ = colab.plan(importlib.metadata.requires("vsegjax"),
                               colab.installed_versions())
    assert to_install == []
