"""Runs a notebook under a real Jupyter kernel (nbclient), papermill-style parameters.

The cell tagged ``parameters`` keeps the notebook's real defaults; ``run`` inserts a cell
after it that assigns the given values, as papermill does, so a test runs the notebook
smaller without editing it.
"""

from __future__ import annotations

import os
import pathlib
import re
import time
from typing import Any, Mapping

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


class NotebookFailed(Exception):
    """A cell raised: names the notebook, the cell and the error."""


def with_parameters(nb: Any, params: Mapping[str, Any], name: str) -> int:
    """Inserts ``params`` after the ``parameters`` cell; returns that cell's index."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise NotebookFailed(f"{name}: needs exactly one cell tagged 'parameters', has "
                             f"{len(tagged)}")
    known = nb.cells[tagged[0]].source
    for key in params:
        if f"{key} =" not in known:
            raise NotebookFailed(f"{name}: parameter {key} is not in its parameters cell")
    source = "# Injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return tagged[0]


def run(path: pathlib.Path, params: Mapping[str, Any] | None = None,
        timeout: int = 900, env: Mapping[str, str | None] | None = None) -> tuple[Any, float]:
    """Executes the notebook at ``path`` top to bottom in a fresh python3 kernel started in
    its folder; returns (the executed notebook, seconds). ``env`` entries set (or, with
    None, remove) the kernel's environment variables."""
    nb = nbformat.read(path, as_version=4)
    tagged = with_parameters(nb, params, path.name) if params else None
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    saved = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))]
        index = failed[0] if failed else None
        if index is not None and tagged is not None and index > tagged:
            index -= 1  # the notebook's own numbering, without the injected cell
        where = f"cell {index} (counting from 0, markdown included)" if failed else "a cell"
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the traceback's colours
        raise NotebookFailed(f"{path.name} {where} failed: {e.ename}: {e.evalue}\n{detail}"
                             ) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb, time.perf_counter() - t0
