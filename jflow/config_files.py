"""Load a config file the way ``--config=`` does: ``load_config("configs/deq_raft.py:H,smoke")``.

The one loader for tests, notebooks and experiment scripts. A bare file name (``"raft.py:small"``)
is looked up in the ``configs/`` folder of the working directory, then of the repository this
package sits in (an editable install or a clone).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib

from jflow.errors import InputError

REPO_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def config_path(name: str) -> pathlib.Path:
    """The file ``name`` names: as given, else under ``./configs`` or the repository's ``configs``."""
    for candidate in (pathlib.Path(name), pathlib.Path("configs") / name, REPO_CONFIGS / name):
        if candidate.is_file():
            return candidate.resolve()
    raise InputError(f"config file {name}: not found (looked in the working directory, "
                     f"./configs and {REPO_CONFIGS})")


def config_module(name: str):
    """The config file ``name`` (``"raft.py"`` or ``"raft"``) as a module (``get_config``, doc)."""
    path = config_path(name if name.endswith(".py") else f"{name}.py")
    module_spec = importlib.util.spec_from_file_location(f"jflow_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str | os.PathLike):
    """``"file.py[:arg]"`` -> that file's ``get_config(arg)`` (an ml_collections ConfigDict)."""
    name, _, arg = os.fspath(spec).partition(":")
    return config_module(name).get_config(arg or None)
