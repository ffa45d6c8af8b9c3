"""Training-step time of the published recipes, with the trainer's own compiled update.

    python experiments/train_step.py [--configs="deq_raft.py:B,stage=chairs;raft.py:stage=chairs"]
        [--batch=1 --repeats=3 --crop=368x496]

For each config (``;``-separated, each ``file.py[:arg] [key=value ...]`` as in
``jflow.benchmark --compare``): builds the model with random weights, the trainer's jit-compiled
update (``jflow.train.make_update_fn``: loss, gradients, AdamW, metrics) and one synthetic batch
at the recipe's crop, then times the updates alternately (a warm-up round, then ``--repeats``
rounds of A B ...) and prints the median per config, its ratio to the first and the work per step
counted on the jaxpr (``jflow.flops``; the DEQ solver loop at its step limit). Also splits the
DEQ step's work into the forward solve (no gradient), the rest of the forward and the backward
by counting the model at two solver budgets. Writes ``experiments/results/train_step.{csv,json}``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from jflow import benchmark, sharding, train  # noqa: E402
from jflow.flops import count_flops  # noqa: E402
from jflow.models import is_deq, model_from_config, random_variables  # noqa: E402


def prepare(spec: str, batch: int, crop: tuple[int, int]) -> dict:
    label, config = benchmark.parse_compare(spec)
    config.train.batch_size = batch
    model = model_from_config(config)
    variables = random_variables(model, seed=0)
    mesh = sharding.make_mesh(1)
    state = train.state_from_weights(variables["params"], variables.get("batch_stats", {}),
                                     config, mesh)
    rng = np.random.default_rng(0)
    h, w = crop
    host = {"image1": rng.integers(0, 256, (batch, h, w, 3), np.uint8),
            "image2": rng.integers(0, 256, (batch, h, w, 3), np.uint8),
            "flow": rng.normal(0, 5, (batch, h, w, 2)).astype(np.float32),
            "valid": np.ones((batch, h, w), bool)}
    data = sharding.global_batch(host, mesh)
    update = train.make_update_fn(model, config, mesh)
    t0 = time.perf_counter()
    compiled = update.lower(state, data).compile()
    row = {"config": label, "model": benchmark.model_label(config), "batch": batch,
           "height": h, "width": w, "compile_s": round(time.perf_counter() - t0, 1)}
    fn = benchmark.step_fn(model, "train")
    args = benchmark.abstract_inputs(model, h, w, batch)
    row["train_gflops"] = count_flops(fn, *args) / 1e9
    if is_deq(config):  # the forward solve's share: the solver loop at two budgets
        n = int(config.deq.f_max_steps)
        infer = [count_flops(benchmark.step_fn(model, "infer", k), *args) / 1e9 for k in (n, 2 * n)]
        row["solve_gflops"] = infer[1] - infer[0]  # n solver steps, no gradient
        row["f_gflops"] = row["solve_gflops"] / n
    return {"row": row, "compiled": compiled, "state": state, "data": data, "times": []}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="deq_raft.py:B,stage=chairs;raft.py:stage=chairs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", default="368x496")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    crop = tuple(int(v) for v in a.crop.split("x"))
    runs = [prepare(s.strip(), a.batch, crop) for s in a.configs.split(";") if s.strip()]
    for r in range(a.repeats + 1):
        for run in runs:
            t0 = time.perf_counter()
            # the update donates its state: feed it the new one each time
            run["state"], metrics = run["compiled"](run["state"], run["data"])
            jax.block_until_ready(metrics)
            if r:  # round 0 is the warm-up
                run["times"].append(time.perf_counter() - t0)
    rows = []
    for run in runs:
        row = dict(run["row"], step_s=statistics.median(run["times"]), times_s=run["times"])
        row["ratio"] = row["step_s"] / (rows[0]["step_s"] if rows else row["step_s"])
        row["achieved_gflop_per_s"] = row["train_gflops"] / row["step_s"]
        rows.append(row)
        print(f"{row['ratio']:6.3f}x {row['step_s']:8.2f} s/step  {row['train_gflops']:8.1f} "
              f"GFLOP/step  {row['config']}" + (f"  (solve {row['solve_gflops']:.0f} GFLOP = "
                                                f"{row['solve_gflops'] / row['train_gflops']:.0%})"
                                                if "solve_gflops" in row else ""), flush=True)
    common.write_results(os.path.join(a.out, "train_step"), rows,
                         what="trainer update (loss, gradients, AdamW) per step, alternated; "
                              "GFLOPs counted on the jaxpr (jflow.flops)")
    return rows


if __name__ == "__main__":
    main()
