"""Notebooks: each .ipynb executes top to bottom in a Jupyter kernel (nbclient, smoke sizes), and its
code cells equal its py:percent twin's (regenerate with ``jupytext --to ipynb notebooks/<name>.py``)."""
import json
import pathlib

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart", "deq_solvers", "training")


def percent_code_cells(text: str) -> list[str]:
    """Code cells of a jupytext py:percent file (the YAML header and markdown cells dropped)."""
    cells, current, kind = [], None, None
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind == "code":
                cells.append(current)
            current, kind = [], "markdown" if "[markdown]" in line else "code"
        elif current is not None:
            current.append(line)
    if kind == "code":
        cells.append(current)
    return ["\n".join(c).strip("\n") for c in cells]


def ipynb_code_cells(path: pathlib.Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]).strip("\n") for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_matches_its_py_twin(name):
    py = percent_code_cells((NOTEBOOKS / f"{name}.py").read_text())
    nb = ipynb_code_cells(NOTEBOOKS / f"{name}.ipynb")
    assert len(py) >= 3
    assert nb == py, (f"notebooks/{name}.ipynb differs from notebooks/{name}.py: run "
                      f"`jupytext --to ipynb notebooks/{name}.py`")


def test_percent_parser_drops_markdown_and_header():
    text = "# ---\n# jupyter: x\n# ---\n\n# %% [markdown]\n# hi\n\n# %%\na = 1\n\n# %%\nb = 2\n"
    assert percent_code_cells(text) == ["a = 1", "b = 2"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, sintel_demo_dir, monkeypatch):
    """Executes the .ipynb itself (not its twin) in a Python kernel, as Jupyter / Colab would."""
    import nbclient
    import nbformat

    monkeypatch.setenv("JFLOW_NOTEBOOK_SMOKE", "1")  # the kernel inherits this environment
    monkeypatch.setenv("JFLOW_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("JFLOW_CHECKPOINT", raising=False)
    monkeypatch.delenv("JFLOW_CONFIG", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert images >= 2, "pictures and plots are shown inline"
    written = {p.name for p in tmp_path.iterdir()}
    if name == "quickstart":
        assert {"frame_0001.flo", "frame_0001.png"} <= written
        assert "(reused)" in text  # the second pair started from the first's fixed point
    elif name == "deq_solvers":
        assert {"toy_traces.png", "deq_raft_traces.png"} <= written
        assert "ift" in text and "phantom" in text
    else:
        assert {"loss.png", "solver.png", "run"} <= written
        assert "validation EPE: step 0:" in text
