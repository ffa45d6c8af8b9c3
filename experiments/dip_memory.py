"""Inference memory and CPU time at high resolution: DIP vs RAFT (all-pairs and on-the-fly).

    python experiments/dip_memory.py [--sizes=448x1024,1088x1920 --iters=12 --time_size=448x1024]

DIP exists for high resolution (paper: 3.70 GB at 1088x1920 where all-pairs RAFT runs out of
11 GB). For each model and size the inference forward pass (``jflow.benchmark.step_fn(model,
"infer", iters)``) is compiled on ``ShapeDtypeStruct`` inputs, so nothing big is allocated or
run, and XLA's buffer assignment is read (``compiled.memory_analysis()``): ``temp`` is the
activation memory on top of the arguments (weights, images) and outputs. At ``--time_size`` the
models are also run (random weights, ``jflow.benchmark.benchmark``: median of ``--repeats``
runs after a warm-up) for the CPU time. Every model runs the same number of update iterations
(``--iters``; inference memory does not grow with it, the buffers are reused). Writes
``experiments/results/dip_memory.{csv,json}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections as mlc  # noqa: E402

import common  # noqa: E402
from jflow import benchmark  # noqa: E402
from jflow.models import build_model, count_params  # noqa: E402

MODELS = {  # label -> config.model
    "dip": {"name": "dip"},
    "raft (all_pairs)": {"name": "raft", "corr": "all_pairs"},
    "raft (on_the_fly)": {"name": "raft", "corr": "on_the_fly"},
}


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def measure(label: str, height: int, width: int, iters: int) -> dict:
    model = build_model(mlc.ConfigDict(MODELS[label]))
    variables, im1, im2 = benchmark.abstract_inputs(model, height, width, 1)
    t0 = time.perf_counter()
    compiled = jax.jit(benchmark.step_fn(model, "infer", iters)).lower(
        variables, im1, im2).compile()
    mem = benchmark.compiled_memory(compiled)
    return {"model": label, "height": height, "width": width, "iters": iters,
            "params": count_params(variables),
            **{f"{k}_mib": round(v, 1) for k, v in mem.items()},
            "compile_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="448x1024,1088x1920")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--time_size", default="448x1024", help="run and time here ('' for none)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    rows = []
    for size in a.sizes.split(","):
        h, w = _size(size)
        for label in a.models.split(","):
            row = measure(label, h, w, a.iters)
            if a.time_size and (h, w) == _size(a.time_size):
                cfg = mlc.ConfigDict({"model": MODELS[label]})
                rec = benchmark.benchmark(cfg, h, w, iters=a.iters, repeats=a.repeats)
                row["cpu_time_ms"] = round(rec["time_ms"], 1)
            rows.append(row)
            print(row, flush=True)
    by = {(r["model"], r["height"], r["width"]): r for r in rows}
    for h, w in (_size(s) for s in a.sizes.split(",")):
        dip, ap = by.get(("dip", h, w)), by.get(("raft (all_pairs)", h, w))
        if dip and ap:
            print(f"{h}x{w}: DIP temp {dip['temp_mib']:.0f} MiB = "
                  f"{dip['temp_mib'] / ap['temp_mib']:.3f} x all-pairs RAFT "
                  f"({ap['temp_mib']:.0f} MiB)")
    common.write_results(os.path.join(a.out, "dip_memory"), rows,
                         note="XLA temp memory of the compiled inference forward (CPU backend), "
                              "random weights; cpu_time_ms: median run on this machine")
    return rows


if __name__ == "__main__":
    main()
