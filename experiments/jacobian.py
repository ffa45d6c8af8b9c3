"""Jacobian regularisation of a trained DEQ-RAFT: solver steps, fixed-point reuse and accuracy.

    python experiments/jacobian.py --checkpoint=runs/quickstart [--weights=0,1,2,3,10 --steps=300]

From the same start (``--checkpoint``: the README quick-start model, DEQ-RAFT-T after 300
steps), trains ``--steps`` more steps of the quick-start recipe (``configs/deq_raft.py``, warm
start through ``config.train.init_from``) once per weight of ``config.deq.jac_loss_weight`` in
``--weights`` (0 = the control: the same extra training without the penalty), each in
``--runs/jac_<w>`` (an existing finished run is reused, not retrained; ``--seed`` s != 0 sets
``config.seed``, the initialisation and data order, in ``jac_<w>_seed<s>``); ``--checkpoint=scratch``
trains the recipe from its random initialisation instead (``--steps=300`` with weight 0 is the
quick start itself). Then, for every run:
synthetic validation EPE (the trainer's), the mean Jacobian penalty of its last logged steps, the
solvers of ``experiments/solvers.py`` (``--solvers``) on the same two problems (``--pairs``
consecutive Sintel demo pairs at 104x256, default all 9; four synthetic 64x96 pairs; relative
residual, at most 100 steps) with the steps to 1e-2 / 2e-3 / 1e-3, and the fixed-point reuse of ``experiments/reuse.py`` along the demo
clip (Anderson, tolerance ``--reuse_tol``). Runtime on 2 loaded CPU cores: ~8 min of training per
weight plus ~3 min of measurements per run. Writes ``experiments/results/jacobian.{csv,json}``
and ``jacobian_steps.png`` (steps to 1e-3 on Sintel per weight and solver).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402
import reuse  # noqa: E402
import solvers  # noqa: E402


SCRATCH = "scratch"  # --checkpoint value: train from the recipe's random initialisation


def finetune(checkpoint: str, workdir: str, weight: float, steps: int, seed: int = 0) -> None:
    from jflow import train
    from jflow.config_files import load_config

    c = load_config("configs/deq_raft.py")
    if checkpoint != SCRATCH:
        c.train.init_from = checkpoint
    c.train.num_steps = steps
    c.deq.jac_loss_weight = weight
    c.seed = seed
    done = os.path.join(workdir, "checkpoints", str(steps))
    if os.path.isdir(done):
        print(f"{workdir}: finished run found, not retrained", flush=True)
        return
    train.train_and_evaluate(c, workdir)


def run_summary(workdir: str) -> dict:
    with open(os.path.join(workdir, "validation.json")) as fh:
        val = json.load(fh)
    log = [json.loads(line) for line in open(os.path.join(workdir, "train_log.jsonl"))]
    jac = [r["jac_loss"] for r in log[-5:] if "jac_loss" in r]
    return {"val_epe_start": val[0]["synthetic"]["epe"], "val_epe": val[-1]["synthetic"]["epe"],
            "jac_loss_end": float(np.mean(jac)) if jac else float("nan")}


def reuse_ratio(workdir: str, tol: float, frames: str, scale: float) -> dict:
    from jflow.config_files import load_config

    pred = reuse.predictor(load_config("configs/deq_raft.py"), workdir, "anderson", 60, tol)
    clip, _ = common.demo_frames(frames, scale=scale)
    cold = np.mean([r["nstep"] for r in reuse.run(pred, clip, reuse=False)[1:]])
    warm = np.mean([r["nstep"] for r in reuse.run(pred, clip, reuse=True)[1:]])
    return {"reuse_cold_steps": float(cold), "reuse_steps": float(warm),
            "reuse_ratio": float(cold / warm)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help=f"the quick-start run (start of every run), or {SCRATCH!r}: train "
                   "--steps of the quick-start recipe from its random initialisation")
    p.add_argument("--weights", default="0,1,2,3,10")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--runs", default="runs", help="parent folder of the jac_<w> workdirs")
    p.add_argument("--seed", type=int, default=0,
                   help="config.seed (initialisation, data order); not 0: workdirs jac_<w>_seed<s>")
    p.add_argument("--solvers", default="naive,anderson,broyden")
    p.add_argument("--reuse_tol", type=float, default=1e-3)
    p.add_argument("--frames", default=common.SINTEL_DEMO)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--pairs", type=int, default=9, help="consecutive Sintel demo pairs")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    names = common.split_solvers(a.solvers)
    problems = [solvers.sintel_batch(a.frames, a.scale, a.pairs), solvers.synthetic_batch()]
    rows = []
    for w in (float(x) for x in a.weights.split(",")):
        workdir = os.path.join(a.runs, f"jac_{w:g}" + (f"_seed{a.seed}" if a.seed else ""))
        finetune(a.checkpoint, workdir, w, a.steps, a.seed)
        base = {"jac_loss_weight": w, "seed": a.seed, "workdir": workdir, **run_summary(workdir),
                **reuse_ratio(workdir, a.reuse_tol, a.frames, a.scale)}
        for r in solvers.run_deq_raft(names, 100, problems, workdir, 1e-3):
            problem = "sintel" if r["problem"].startswith("sintel") else "synthetic"
            rows.append({**base, "problem": problem, "solver": r["solver"],
                         **{k: r.get(k) for k in ("steps_to_0.01", "steps_to_0.002",
                                                  "steps_to_0.001", "rel_lowest")}})
        print(json.dumps(base), flush=True)
    out = os.path.join(a.out, "jacobian")
    common.write_results(out, rows, what="per Jacobian-penalty weight: fine-tuned from the same "
                         "start; validation EPE, reuse along the demo clip, solver steps",
                         checkpoint=a.checkpoint, steps=a.steps, seed=a.seed)
    from jflow.plots import line_plot

    weights = sorted({r["jac_loss_weight"] for r in rows})
    series = [{"x": weights, "label": s,
               "y": [next(r["steps_to_0.001"] for r in rows if r["solver"] == s
                          and r["problem"] == "sintel" and r["jac_loss_weight"] == w)
                     for w in weights]} for s in names]
    line_plot(out + "_steps.png", series, title="DEQ-RAFT-T, Sintel 104x256: steps to rel 1e-3",
              xlabel="jac_loss_weight", ylabel="solver steps (NaN: not in 100)")
    print(f"wrote {out}.csv, .json, _steps.png")
    return rows


if __name__ == "__main__":
    main()
