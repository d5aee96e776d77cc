"""Shared test set-up: 8 fake CPU devices so mesh code is exercised, and the real-data path."""

import os
import pathlib

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import pytest  # noqa: E402

from vsegjax.data import synthetic as _synthetic  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the repository; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (only present in the "
                    "development checkout, never in the repository)")
    return SHARED_DATA


@pytest.fixture
def clip(tmp_path):
    """clip/frames (6 frames 32x48) and clip/labels (frames 0 and 5, palette-free ids)."""
    ex = _synthetic.generate_snippet(_synthetic.SyntheticConfig(height=32, width=48,
                                                              num_frames=6, seed=3), "train", 0)
    root = tmp_path / "clip"
    (root / "frames").mkdir(parents=True)
    (root / "labels").mkdir()
    for t, f in enumerate(ex["frames"]):
        cv2.imwrite(str(root / "frames" / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    for t in (0, 5):
        cv2.imwrite(str(root / "labels" / f"{t:05d}.png"), ex["labels"][t])
    return root


@pytest.fixture
def forbid_reads(monkeypatch):
    """Call it to make reading any array of a checkpoint an error from then on: what is
    raised after that was found from the metadata alone."""
    def forbid():
        import orbax.checkpoint as ocp
        monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "restore",
                            lambda *a, **k: pytest.fail("read before the shapes were checked"))
    return forbid
