"""Every notebook in colabs/ runs top to bottom (its code cells, in order, on the CPU)."""

import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    notebook = json.loads(path.read_text())
    code = [("".join(c["source"])) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    monkeypatch.chdir(ROOT)
    # The notebook reads these so a test can keep it short; defaults are the real ones.
    monkeypatch.setenv("VSEGJAX_COLAB_WORKDIR", str(tmp_path))
    monkeypatch.setenv("VSEGJAX_COLAB_STATIC_STEPS", "4")
    monkeypatch.setenv("VSEGJAX_COLAB_GRFP_STEPS", "2")
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(code):
        try:
            exec(compile(cell, f"{path.name}[cell {i}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the cell that failed
            pytest.fail(f"{path.name} code cell {i} failed: {type(e).__name__}: {e}")
    assert (tmp_path / "run" / "eval_metrics.json").exists()
    assert os.path.exists(tmp_path / "snippet_0.png")
