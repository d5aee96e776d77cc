"""The real-data flow evaluation (Sintel / FlyingChairs samples) and its resizing."""

import pathlib

import numpy as np
import pytest

from vsegjax.evaluation import flow_real
from vsegjax.methods.efc import flow_real as efc_flow_real

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _shifted_pair(dx=3, h=40, w=60):
    rng = np.random.default_rng(0)
    b = (rng.uniform(size=(h, w, 3)) * 255).astype(np.uint8)
    a = np.roll(b, dx, axis=1)  # a(x) = b(x - dx): pixel x of a is at x - dx in b
    gt = np.zeros((1, h, w, 2), np.float32)
    gt[..., 0] = -dx
    return {"frames": np.stack([a, b]), "flow_fwd": gt}


def test_zero_flow_epe_is_the_flow_magnitude_and_resizing_rescales_the_flow():
    pair = _shifted_pair()
    fns = {"zero": lambda a, b: np.zeros(a.shape[:2] + (2,), np.float32),
           "true": lambda a, b: np.broadcast_to(np.float32([-3 * a.shape[1] / 60, 0]),
                                                a.shape[:2] + (2,))}
    result = flow_real.evaluate(fns, [("shift", pair)], max_side=30)
    assert result["mean"]["zero"]["epe_all"] == pytest.approx(3.0)
    # Computed at half size (x -1.5 px) and scaled back to full resolution: exact.
    assert result["mean"]["true"]["epe_all"] == pytest.approx(0.0, abs=1e-4)
    assert "shift" in flow_real.format_table(result)


@pytest.mark.skipif(not (DATA / "sintel").is_dir() or not (DATA / "flyingchairs").is_dir(),
                    reason="../shared/data/sintel and flyingchairs (real samples) not present")
def test_opencv_baselines_beat_zero_flow_on_the_real_samples():
    pairs = list(flow_real.real_pairs(str(DATA / "sintel"), str(DATA / "flyingchairs")))
    assert len(pairs) >= 4
    fns = flow_real.baseline_fns()
    result = flow_real.evaluate({k: fns[k] for k in ("zero", "dis")}, pairs, max_side=256)
    assert result["mean"]["dis"]["epe_all"] < result["mean"]["zero"]["epe_all"]


def test_learned_flow_needs_an_efc_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        efc_flow_real.learned_fn(str(tmp_path))
    (tmp_path / "config.json").write_text('{"task": "grfp"}')
    with pytest.raises(ValueError, match="'grfp' run, not of one with a 'efc' stage"):
        efc_flow_real.learned_fn(str(tmp_path))
