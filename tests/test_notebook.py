"""The walkthrough notebook runs top to bottom on a finished tiny run (nbclient), every cell without error."""

import os
from pathlib import Path

import nbformat
import pytest
from helpers import faig_train
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_walkthrough_notebook_runs_on_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    faig_train(tmp_path, "stage=both", "logger=csv", "attribution.methods=[faig,random]",
               "attribution.steps=2", "attribution.proportions=[1,3]", f"hydra.run.dir={run}")
    notebook = nbformat.read(ROOT / "notebooks" / "faig_walkthrough.ipynb", as_version=4)
    env = {"FAIG_NOTEBOOK_RUN": str(run), "FAIG_OUTPUT_DIR": str(tmp_path / "outputs"),
           "FAIG_CACHE_DIR": str(tmp_path / "cache")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # curves, Figure 2, modulation curves and strip, filter map, confusion matrix
