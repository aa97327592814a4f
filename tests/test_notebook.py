"""notebooks/lab.ipynb runs from its first cell to its last, on a real kernel, with short epochs."""

import json

import pytest

from .conftest import REPO, child_env

NOTEBOOK = REPO / "notebooks" / "lab.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in child_env(SRN_LAB_QUICK="1", SRN_LAB_DIR=str(tmp_path / "lab")).items():
        monkeypatch.setenv(key, value)  # the kernel's environment: this checkout, a few epochs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # the book's figure, grad-time, tanh', the cures, the sweep, the full sweep
    runs = tmp_path / "lab"
    assert sorted(p.name for p in next(runs.glob("20*")).iterdir()) == [
        "book", "memory_sweep", "norm", "norm_each", "value", "weight_decay"]
    assert not any(p.name in ("lab_runs", "outputs", "data") for p in tmp_path.iterdir())
