"""Notebooks: each py:percent twin runs (smoke sizes, no Jupyter), and each .ipynb's code cells
equal its twin's (regenerate with ``jupytext --to ipynb notebooks/<name>.py``)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart", "deq_solvers")


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
def test_notebook_runs(name, tmp_path, sintel_demo_dir):
    env = dict(os.environ, JFLOW_NOTEBOOK_SMOKE="1", JFLOW_NOTEBOOK_OUT=str(tmp_path),
               JAX_PLATFORMS="cpu")
    env.pop("JFLOW_CHECKPOINT", None)
    env.pop("JFLOW_CONFIG", None)
    proc = subprocess.run([sys.executable, f"{name}.py"], cwd=NOTEBOOKS, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    written = {p.name for p in tmp_path.iterdir()}
    if name == "quickstart":
        assert {"frame_0001.flo", "frame_0001.png"} <= written
        assert "(reused)" in proc.stdout  # the second pair started from the first's fixed point
    else:
        assert {"toy_traces.png", "deq_raft_traces.png"} <= written
        assert "ift" in proc.stdout and "phantom" in proc.stdout
