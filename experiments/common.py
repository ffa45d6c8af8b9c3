"""Shared by the experiment scripts: result files, the Sintel demo frames, a DEQ-RAFT builder."""
from __future__ import annotations

import csv
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(EXPERIMENTS, "results")
SINTEL_DEMO = os.path.join(os.path.dirname(EXPERIMENTS), "jflow", "data", "demo")  # in the repo
RANDOM_WEIGHTS_NOTE = ("RANDOM weights (no --checkpoint): solver behaviour on an untrained "
                       "operator says little about a trained DEQ-RAFT; rerun with --checkpoint")


def write_results(base: str, rows: Sequence[dict[str, Any]], **meta: Any) -> None:
    """``base.csv`` (the rows) and ``base.json`` (``meta``, the command line and the rows)."""
    os.makedirs(os.path.dirname(base), exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(base + ".csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    import jax

    meta = dict(meta, backend=jax.default_backend(),
                command=" ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                rows=list(rows))
    with open(base + ".json", "w") as fh:
        json.dump(meta, fh, indent=2, default=float)


def demo_frames(root: str = SINTEL_DEMO, scale: float = 0.25, count: int | None = None
                ) -> tuple[list[np.ndarray], list[str]]:
    """The Sintel demo frames (sorted), resized by ``scale`` and cropped to multiples of 8."""
    from PIL import Image

    if not os.path.isdir(root):
        raise FileNotFoundError(f"Sintel demo frames: no directory {root}")
    names = sorted(f for f in os.listdir(root) if f.lower().endswith(".png"))[:count]
    if len(names) < 2:
        raise ValueError(f"Sintel demo frames: need at least 2 PNG frames in {root}, "
                         f"found {len(names)}")
    frames = []
    for name in names:
        img = Image.open(os.path.join(root, name)).convert("RGB")
        w, h = round(img.width * scale), round(img.height * scale)
        arr = np.asarray(img.resize((w, h), Image.BILINEAR))
        frames.append(arr[: h // 8 * 8, : w // 8 * 8])
    return frames, names


def deq_raft(size: str = "T", **deq: Any):
    """A DEQ-RAFT module of ``size`` with ``DEQConfig(**deq)``."""
    from jflow.deq import DEQConfig
    from jflow.models import build_model

    return build_model({"name": "deq_raft", "size": size, "wnorm": True}, DEQConfig(**deq))


def load_or_random(model, checkpoint: str | None, seed: int = 0) -> dict:
    """Variables from a jflow checkpoint, or random ones (``random_variables``) when None."""
    if checkpoint:
        from jflow.predict import load_variables

        return load_variables(checkpoint, model)
    from jflow.models import random_variables

    return random_variables(model, seed=seed)


SOLVER_ALIASES = {"anderson_official": "anderson:relative_ridge=false"}


def parse_solver(spec: str) -> tuple[str, dict]:
    """``"anderson:relative_ridge,memory=5"`` -> ``("anderson", {"relative_ridge": True,
    "memory": 5})`` (``jflow.deq.parse_solver_spec``, after the aliases above)."""
    from jflow.deq import parse_solver_spec

    return parse_solver_spec(SOLVER_ALIASES.get(spec, spec))


def split_solvers(arg: str) -> list[str]:
    """``--solvers``: split on ';' when there is one (options may hold commas), else on ','."""
    return [s for s in arg.split(";" if ";" in arg else ",") if s]
