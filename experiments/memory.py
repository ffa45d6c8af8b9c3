"""Training-step memory vs solver steps: DEQ-RAFT (phantom / IFT / unrolled gradients) vs RAFT.

    python experiments/memory.py [--height=128 --width=192 --steps=4,8,16,32 --size=T]

Compiles one training step (forward + backward of the loss, gradients w.r.t. the parameters) per
setting on ``ShapeDtypeStruct`` inputs, so nothing big is allocated or run, and reads XLA's
buffer assignment (``compiled.memory_analysis()``): ``temp`` is the activation memory the step
needs on top of its arguments (parameters, images) and outputs (gradients). DEQ-RAFT runs
``f_max_steps`` solver steps with one supervised state (``n_states=1``) and one phantom step;
RAFT runs ``iters`` update iterations. The claim under test: DEQ training memory does not grow
with the solver steps (phantom / IFT gradients), while unrolled backprop and RAFT grow linearly.
Writes ``experiments/results/memory.{csv,json,png}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import common  # noqa: E402
from jflow import benchmark  # noqa: E402
from jflow.models import build_model, count_params  # noqa: E402

GRADS = ("phantom", "ift", "unrolled")


def measure(model, height: int, width: int, batch: int, iters: int | None) -> dict:
    """XLA memory (MiB) and compile time of one training step of ``model``."""
    variables, im1, im2 = benchmark.abstract_inputs(model, height, width, batch)
    fn = jax.jit(benchmark.step_fn(model, "train", iters))
    t0 = time.perf_counter()
    compiled = fn.lower(variables, im1, im2).compile()
    mem = benchmark.compiled_memory(compiled)
    return {**{f"{k}_mib": round(v, 3) for k, v in mem.items()},
            "compile_s": round(time.perf_counter() - t0, 1), "params": count_params(variables)}


def deq_model(size: str, grad: str, steps: int):
    return common.deq_raft(size, solver="naive", f_max_steps=steps, grad=grad, n_states=1,
                           phantom_steps=1, b_solver="naive", b_max_steps=steps)


def plot(rows: list[dict], path: str, title: str) -> None:
    from lineplot import line_plot

    series = []
    for label in dict.fromkeys(r["setting"] for r in rows):
        pts = sorted((r["steps"], r["temp_mib"]) for r in rows if r["setting"] == label)
        series.append({"x": [p[0] for p in pts], "y": [p[1] for p in pts], "label": label})
    line_plot(path, series, title=title, xlabel="solver steps (DEQ) / update iterations (RAFT)",
              ylabel="training-step temp memory (MiB)")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", default="T", help="DEQ-RAFT size (T, B, L, H)")
    p.add_argument("--steps", default="4,8,16,32")
    p.add_argument("--grads", default=",".join(GRADS))
    p.add_argument("--raft", default="raft", help="baseline: raft, raft_small or '' for none")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    steps = [int(s) for s in a.steps.split(",")]
    os.makedirs(a.out, exist_ok=True)

    rows = []
    settings = [(f"deq_raft-{a.size} {g}", lambda n, g=g: (deq_model(a.size, g, n), None))
                for g in a.grads.split(",") if g]
    if a.raft:
        settings.append((a.raft, lambda n: (build_model({"name": a.raft}), n)))
    for label, make in settings:
        for n in steps:
            model, iters = make(n)
            row = {"setting": label, "steps": n, "height": a.height, "width": a.width,
                   "batch": a.batch, **measure(model, a.height, a.width, a.batch, iters)}
            rows.append(row)
            print(f"{label:24s} steps {n:3d}: temp {row['temp_mib']:8.1f} MiB, total "
                  f"{row['total_mib']:8.1f} MiB (compile {row['compile_s']} s)", flush=True)

    base = os.path.join(a.out, "memory")
    common.write_results(base, rows, what="XLA temp memory of one training step (forward + "
                         "backward), CPU buffer assignment, compiled on ShapeDtypeStructs")
    plot(rows, base + ".png", f"Training-step memory, {a.height}x{a.width}, batch {a.batch}")
    print(f"wrote {base}.csv, .json, .png")
    return rows


if __name__ == "__main__":
    main()
