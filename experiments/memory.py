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

The paper's setting (Bai et al. 2022 compare training memory at the FlyingChairs crop):

    python experiments/memory.py --paper

measures DEQ-RAFT-B (36 naive solver steps, one phantom step, one supervised state; and with
deq-flow v2's Chairs recipe of 6 correction states), each without and with the training-memory
options (``model.remat_encoder``; ``+ model.remat_states``; ``+ model.corr_feature_grad``),
against RAFT with 12 update
iterations at 368x496, batch 1, and merges those rows into the existing results (the step sweep
is kept). ``--all_options --steps=12,36,60`` only prints DEQ-RAFT-B with 6 states and
every training-memory option at those solver steps (still constant?).

XLA's CPU compiler schedules for concurrency by default, which keeps recomputed activations
alive as long as stored ones (a rematerialised step then looks no lighter, or heavier).
``--scheduler=memory`` (the default here) compiles with
``--xla_cpu_enable_concurrency_optimized_scheduler=false``, XLA's memory-minimising order, the
closer stand-in for an accelerator's allocator; ``--scheduler=default`` keeps XLA's CPU default.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "--scheduler=default" not in sys.argv:  # XLA reads its flags once, before jax is imported
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {MEMORY_SCHEDULER}".strip()

import jax  # noqa: E402

import common  # noqa: E402
from jflow import benchmark  # noqa: E402
from jflow.deq import DEQConfig  # noqa: E402
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
    from jflow.plots import line_plot

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
    p.add_argument("--paper", action="store_true",
                   help="only the paper's setting (368x496, DEQ-RAFT-B vs RAFT 12 iterations), "
                        "merged into the existing results")
    p.add_argument("--scheduler", choices=("memory", "default"), default="memory",
                   help="XLA CPU scheduling: memory-minimising (default) or XLA's default")
    p.add_argument("--all_options", action="store_true",
                   help="only print DEQ-RAFT-B (6 states, every training-memory option) at "
                        "--steps solver steps, --height x --width: constant in the steps?")
    a = p.parse_args(argv)
    if a.paper:
        return paper(a.out, a.scheduler)
    steps = [int(s) for s in a.steps.split(",")]
    if a.all_options:
        rows = []
        for n in steps:
            model = paper_deq(6, f_max_steps=n, **dict(REMATS[-1][1]))
            rows.append({"steps": n, **measure(model, a.height, a.width, a.batch, None)})
            print(f"deq_raft-B, 6 states, all options, {n:3d} steps: temp "
                  f"{rows[-1]['temp_mib']:8.1f} MiB", flush=True)
        return rows
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
                         "backward), CPU buffer assignment, compiled on ShapeDtypeStructs",
                         scheduler=a.scheduler)
    plot(rows, base + ".png", f"Training-step memory, {a.height}x{a.width}, batch {a.batch}")
    print(f"wrote {base}.csv, .json, .png")
    return rows


REMATS = (("", {}), (", remat encoder", {"remat_encoder": True}),
          (", remat encoder + states", {"remat_encoder": True, "remat_states": True}),
          (", remat encoder + states + corr feature grad",
           {"remat_encoder": True, "remat_states": True, "corr_feature_grad": True}))


def paper_deq(n_states: int, f_max_steps: int = 36, **remat):
    """DEQ-RAFT-B as ``configs/deq_raft.py:B,stage=chairs`` trains it, with ``n_states``."""
    deq = DEQConfig(solver="naive", f_max_steps=f_max_steps, f_stop_mode="abs",
                    return_rule="official_naive",
                    grad="phantom", phantom_steps=1, b_solver="naive", n_states=n_states)
    return build_model({"name": "deq_raft", "size": "B", "wnorm": True, **remat}, deq)


def paper(out: str, scheduler: str = "memory", height: int = 368, width: int = 496) -> list[dict]:
    """The paper's comparison at the Chairs crop, merged into ``out``/memory.{csv,json}."""
    import json

    settings = [(f"paper: deq_raft-B phantom, {n} state{'s' * (n > 1)}"
                 f"{' (v2 chairs)' if n == 6 else ''}{label}", paper_deq(n, **remat), None, 36)
                for n in (1, 6) for label, remat in REMATS]
    settings.append(("paper: raft 12 iterations", build_model({"name": "raft"}), 12, 12))
    new = []
    for label, model, iters, n in settings:
        row = {"setting": label, "steps": n, "height": height, "width": width, "batch": 1,
               "scheduler": scheduler, **measure(model, height, width, 1, iters)}
        new.append(row)
        print(f"{label:48s}: temp {row['temp_mib']:8.1f} MiB, total {row['total_mib']:8.1f} MiB "
              f"(compile {row['compile_s']} s)", flush=True)
    base = os.path.join(out, "memory")
    old = []
    if os.path.isfile(base + ".json"):
        with open(base + ".json") as fh:
            old = [r for r in json.load(fh)["rows"] if not str(r["setting"]).startswith("paper:")]
    rows = old + new
    common.write_results(base, rows, what="XLA temp memory of one training step (forward + "
                         "backward), CPU buffer assignment, compiled on ShapeDtypeStructs; "
                         "'paper:' rows at 368x496 (python experiments/memory.py --paper)",
                         scheduler=scheduler)
    sweep = [r for r in rows if not str(r["setting"]).startswith("paper:")]
    if sweep:
        h, w, b = sweep[0]["height"], sweep[0]["width"], sweep[0]["batch"]
        plot(sweep, base + ".png", f"Training-step memory, {h}x{w}, batch {b}")
    return rows


if __name__ == "__main__":
    main()
