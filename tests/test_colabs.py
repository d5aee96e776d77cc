"""Every notebook in colabs/ runs top to bottom under a real Jupyter kernel (nbclient),
with smaller parameters injected after its ``parameters`` cell, as papermill does."""

import pathlib

import nbformat
import pytest

from _notebooks import NotebookFailed, run, with_parameters

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))

# Per notebook: the short sizes for the test (the notebooks keep their real defaults), and
# files the run must leave in WORKDIR.
SHORT = {
    "autolabel_davis.ipynb": ({"NUM_FRAMES": 4, "MAX_SIDE": 64, "TRAIN_STEPS": 2},
                              ["warp_refine/autolabel.json", "copy/labels"]),
    "efc_flow.ipynb": ({"STATIC_STEPS": 4, "EFC_STEPS": 2},
                       ["run/eval_metrics.json", "run/panels/example_000.png"]),
    "grfp_synthetic.ipynb": ({"STATIC_STEPS": 4, "GRFP_STEPS": 2},
                             ["run/eval_metrics.json", "snippet_0.png"]),
    "vplr_propagation.ipynb": ({"SDC_STEPS": 4, "NUM_VIDEOS": 2},
                               ["sdc_run/eval_metrics.json"]),
    "segment_and_export.ipynb": ({"TRAIN_STEPS": 4, "MAX_FRAMES": 6},
                                 ["segmented/overlay.mp4", "exported/model.jax_exported"]),
}


def test_every_notebook_has_short_parameters():
    assert sorted(SHORT) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    """Outputs would be figures of another run; the notebooks keep none."""
    nb = nbformat.read(path, as_version=4)
    stale = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stale, f"{path.name}: cells {stale} hold outputs; clear them before committing"
    assert nb.cells[0].cell_type == "markdown" and "Run time" in nb.cells[0].source
    assert "colab.install_missing()" in nb.cells[1].source, f"{path.name}: install cell first"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_under_a_kernel(path, tmp_path):
    params, products = SHORT[path.name]
    # The kernel gets this machine's one CPU device, as on Colab, not the suite's eight.
    nb, seconds = run(path, dict(params, WORKDIR=str(tmp_path)), env={"XLA_FLAGS": None})
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 2, f"{path.name} showed {images} pictures"
    for name in products:
        assert (tmp_path / name).exists(), f"{path.name} did not write {name}"


def test_a_failing_cell_is_named(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("N = 1"), nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("x = N + 1"), nbformat.v4.new_code_cell("1 / 0")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookFailed, match=r"bad.ipynb cell 3 .* ZeroDivisionError"):
        run(path, {"N": 2})
    with pytest.raises(NotebookFailed, match="parameter M is not in its parameters cell"):
        with_parameters(nbformat.read(path, as_version=4), {"M": 1}, "bad.ipynb")
