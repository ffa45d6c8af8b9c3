"""Training-step time of the published recipes, with the trainer's own compiled update.

    python experiments/train_step.py [--configs="deq_raft.py:B,stage=chairs;raft.py:stage=chairs"]
        [--batch=1 --repeats=3 --crop=368x496] [--checkpoint=DIR --data=synthetic]

For each config (``;``-separated, each ``file.py[:arg] [key=value ...]`` as in
``jflow.benchmark --compare``, including ``deq.<DEQConfig field>=value`` for fields a recipe does
not set, e.g. ``deq.unroll_impl=python``): builds the model (random weights, or ``--checkpoint``'s for every
config whose model and size match it: the other configs keep random weights, said in the
``weights`` column), the trainer's jit-compiled update (``jflow.train.make_update_fn``: loss,
gradients, AdamW, metrics) and one batch at the recipe's crop (``--data=random``: noise images
and flow; ``synthetic``: ``SyntheticFlow`` pairs, the quick-start's training distribution;
``demo``: consecutive Sintel demo frames with zero target flow, real images on which a trained
operator's solves converge), then times the updates alternately (a
warm-up round, then ``--repeats`` rounds of A B ...) and prints the median per config, its ratio
to the first, the work per step counted on the jaxpr (``jflow.flops``; the DEQ solver loop at its
step limit) and, for DEQ configs, the forward solver steps the update actually took (the
trainer's ``nstep`` metric: batch mean, summed over the correction segments; it ends early when
per-sample stopping stops every sample). Also splits the DEQ step's work into the forward solve
(no gradient), the rest of the forward and the backward by counting the model at two solver
budgets. Writes ``experiments/results/train_step.{csv,json}`` (``--out``, ``--name``).

Trained-operator command (results ``train_step_trained``; configs on the quick-start Tiny model
with the Jacobian-penalised weights of ``experiments/jacobian.py``):

    python experiments/train_step.py --checkpoint=runs/jac/jac_2 --data=demo --crop=184x248 \
        --batch=2 --repeats=4 --name=train_step_trained --configs="deq_raft.py:T,stage=chairs; \
        deq_raft.py:T,stage=chairs deq.f_stop_mode=rel; \
        deq_raft.py:T,stage=chairs deq.grad=unrolled deq.f_max_steps=12 deq.n_states=6; \
        raft.py:small,stage=chairs"

and (``train_step_trained_python_unroll``) the first two configs beside
``"deq_raft.py:T,stage=chairs deq.grad=unrolled deq.unroll_impl=python deq.f_max_steps=12
deq.n_states=6"`` with ``--repeats=6``.
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


def make_batch(batch: int, crop: tuple[int, int], data: str) -> dict:
    """One host batch: noise (``random``), ``SyntheticFlow`` pairs (``synthetic``) or the Sintel
    demo clip's consecutive pairs with zero target flow (``demo``; the step's time does not
    depend on the targets, the solver's steps depend on the images)."""
    h, w = crop
    if data == "demo":  # consecutive Sintel demo pairs, resized to cover the crop, centre-cropped
        from PIL import Image

        first = sorted(f for f in os.listdir(common.SINTEL_DEMO) if f.endswith(".png"))[0]
        width, height = Image.open(os.path.join(common.SINTEL_DEMO, first)).size
        frames, _ = common.demo_frames(scale=max(h / height, w / width) + 1e-3, count=batch + 1)
        top, left = (frames[0].shape[0] - h) // 2, (frames[0].shape[1] - w) // 2
        frames = np.stack([f[top:top + h, left:left + w] for f in frames])
        return {"image1": frames[:-1], "image2": frames[1:],
                "flow": np.zeros((batch, h, w, 2), np.float32), "valid": np.ones((batch, h, w), bool)}
    if data == "synthetic":
        from jflow.data import SyntheticFlow

        ds = SyntheticFlow(batch, h, w, seed=999)
        items = [ds[i] for i in range(batch)]
        return {k: np.stack([it[k] for it in items]) for k in ("image1", "image2", "flow", "valid")}
    rng = np.random.default_rng(0)
    return {"image1": rng.integers(0, 256, (batch, h, w, 3), np.uint8),
            "image2": rng.integers(0, 256, (batch, h, w, 3), np.uint8),
            "flow": rng.normal(0, 5, (batch, h, w, 2)).astype(np.float32),
            "valid": np.ones((batch, h, w), bool)}


def load_weights(model, config, checkpoint: str | None) -> tuple[dict, str]:
    """``checkpoint``'s variables when they fit ``model`` (same model and size), else random."""
    if checkpoint:
        try:
            return common.load_or_random(model, checkpoint), "trained"
        except ValueError as e:  # jflow.errors.CheckpointError: another model
            print(f"{benchmark.model_label(config)}: random weights ({str(e).splitlines()[0][:120]})",
                  flush=True)
    return random_variables(model, seed=0), "random"


def prepare(spec: str, batch: int, crop: tuple[int, int], checkpoint: str | None = None,
            data_kind: str = "random") -> dict:
    label, config = benchmark.parse_compare(spec)
    config.train.batch_size = batch
    model = model_from_config(config)
    variables, weights = load_weights(model, config, checkpoint)
    mesh = sharding.make_mesh(1)
    state = train.state_from_weights(variables["params"], variables.get("batch_stats", {}),
                                     config, mesh)
    h, w = crop
    data = sharding.global_batch(make_batch(batch, crop, data_kind), mesh)
    update = train.make_update_fn(model, config, mesh)
    t0 = time.perf_counter()
    compiled = update.lower(state, data).compile()
    row = {"config": label, "model": benchmark.model_label(config), "batch": batch,
           "height": h, "width": w, "weights": weights, "data": data_kind,
           "compile_s": round(time.perf_counter() - t0, 1)}
    fn = benchmark.step_fn(model, "train")
    args = benchmark.abstract_inputs(model, h, w, batch)
    row["train_gflops"] = count_flops(fn, *args) / 1e9
    if is_deq(config):  # the forward solve's share: the solver loop at two budgets
        n = int(config.deq.f_max_steps)
        infer = [count_flops(benchmark.step_fn(model, "infer", k), *args) / 1e9 for k in (n, 2 * n)]
        row["solve_gflops"] = infer[1] - infer[0]  # n solver steps, no gradient
        row["f_gflops"] = row["solve_gflops"] / n
    return {"row": row, "compiled": compiled, "state": state, "data": data, "times": [],
            "nstep": []}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="deq_raft.py:B,stage=chairs;raft.py:stage=chairs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", default="368x496")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint", default=None,
                   help="trained weights for every config whose model and size match")
    p.add_argument("--data", choices=("random", "synthetic", "demo"), default="random")
    p.add_argument("--out", default=common.RESULTS)
    p.add_argument("--name", default="train_step", help="results file name")
    a = p.parse_args(argv)
    crop = tuple(int(v) for v in a.crop.split("x"))
    runs = [prepare(s.strip(), a.batch, crop, a.checkpoint, a.data)
            for s in a.configs.split(";") if s.strip()]
    for r in range(a.repeats + 1):
        for run in runs:
            t0 = time.perf_counter()
            # the update donates its state: feed it the new one each time
            run["state"], metrics = run["compiled"](run["state"], run["data"])
            jax.block_until_ready(metrics)
            if r:  # round 0 is the warm-up
                run["times"].append(time.perf_counter() - t0)
                if "nstep" in metrics:
                    run["nstep"].append(float(metrics["nstep"]))
    rows = []
    for run in runs:
        row = dict(run["row"], step_s=statistics.median(run["times"]), times_s=run["times"])
        if run["nstep"]:
            row["solver_steps"] = statistics.mean(run["nstep"])
        row["ratio"] = row["step_s"] / (rows[0]["step_s"] if rows else row["step_s"])
        row["achieved_gflop_per_s"] = row["train_gflops"] / row["step_s"]
        rows.append(row)
        print(f"{row['ratio']:6.3f}x {row['step_s']:8.2f} s/step  {row['train_gflops']:8.1f} "
              f"GFLOP/step  {row['config']} ({row['weights']})"
              + (f"  (solve {row['solve_gflops']:.0f} GFLOP = "
                 f"{row['solve_gflops'] / row['train_gflops']:.0%} at the step limit; "
                 f"{row.get('solver_steps', float('nan')):.1f} solver steps taken)"
                 if "solve_gflops" in row else ""), flush=True)
    common.write_results(os.path.join(a.out, a.name), rows,
                         what="trainer update (loss, gradients, AdamW) per step, alternated; "
                              "GFLOPs counted on the jaxpr (jflow.flops); solver_steps: the "
                              "update's forward solver steps (batch mean, all segments)",
                         checkpoint=a.checkpoint, data=a.data)
    return rows


if __name__ == "__main__":
    main()
