"""The main job's acceptance, by hand: `python -m pytest -m extended` (docs/development.md)."""

import json
import subprocess
import sys
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.extended
def test_main_job_grfp_beats_static(tmp_path):
    """The README's main job: GRFP forward beats its static net in mIoU and temporal
    consistency on the synthetic validation set, and seeing 5 frames beats seeing 1."""
    result = subprocess.run(
        [sys.executable, "-m", "vsegjax.main", "--config=configs/grfp_synthetic.py",
         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    static, grfp = metrics["static"], metrics["grfp"]
    assert grfp["miou"] > static["miou"]
    assert grfp["temporal_consistency"] > static["temporal_consistency"]
    by_t = metrics["grfp_miou_by_num_frames"]
    assert by_t["5"] > by_t["1"]
