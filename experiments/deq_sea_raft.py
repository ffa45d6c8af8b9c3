"""DEQ SEA-RAFT vs unrolled SEA-RAFT (S) on synthetic data, trained from the same start.

    python experiments/deq_sea_raft.py   (defaults: --steps=120 --eval_every=30 --tol=1e-3
                                          --max_steps=60)

Both models are SEA-RAFT S (the same parameters under the same names), initialised once
(``init_variables``, seed 0) and trained with the quick-start settings of their configs on the
same batches of synthetic 64x96 pairs (batch 4, AdamW lr 4e-4 one-cycle over ``--steps``, clip
1.0, the mixture-of-Laplace loss): ``configs/sea_raft.py:S`` (4 unrolled iterations, gamma 0.85;
validation 4 iterations) and ``configs/deq_sea_raft.py:S`` (naive solver 12 steps, 2 correction
states x 1 phantom step, the correction weights; validation 18 steps). The two updates alternate
step by step (A B A B), so both see the same machine load.

Measured: validation EPE on 16 held-out synthetic pairs every ``--eval_every`` steps, at each
config's evaluation iterations (4 and 18) and at 12 for both (DEQ: its training steps); the
training-step time (median over the steps after the first); the training step's XLA memory
(``compiled.memory_analysis()`` of the compiled update: temporaries and total, CPU buffer
assignment); and solver steps to tolerance -- the DEQ operator (``f``: one SEA-RAFT update) run
to a relative residual ``--tol`` (at most ``--max_steps``) with the naive and Anderson solvers
on 4 validation pairs, with the initial weights, the SEA-RAFT-trained weights and the
DEQ-trained weights. Small runs on a loaded CPU: EPE differences of a few tenths are noise.

Writes experiments/results/deq_sea_raft.{csv,json}, deq_sea_raft_epe.png (validation EPE vs
step) and deq_sea_raft_residual.png (relative residual vs solver step).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from jflow import evaluate, sharding, train  # noqa: E402
from jflow.config_files import load_config  # noqa: E402
from jflow.deq import DEQConfig  # noqa: E402
from jflow.models import build_model, init_variables, model_from_config  # noqa: E402
from jflow.plots import line_plot  # noqa: E402

REPO = os.path.dirname(common.EXPERIMENTS)
MODELS = {"sea_raft": "configs/sea_raft.py:S", "deq_sea_raft": "configs/deq_sea_raft.py:S"}
# validation iterations besides each config's (SEA-RAFT 4, DEQ 18 = 1.5 x its 12 training steps)
EXTRA_EVAL_ITERS = {"sea_raft": (12,), "deq_sea_raft": (12,)}


def configs(steps: int) -> dict:
    out = {}
    for name, spec in MODELS.items():
        c = load_config(os.path.join(REPO, spec))
        c.train.num_steps = steps
        out[name] = c
    return out


def memory(compiled) -> dict:
    m = compiled.memory_analysis()
    mib = 1 / 2 ** 20
    return {"temp_mib": round(m.temp_size_in_bytes * mib, 1),
            "total_mib": round((m.temp_size_in_bytes + m.argument_size_in_bytes
                                + m.output_size_in_bytes - m.alias_size_in_bytes) * mib, 1)}


def solver_steps(variables: dict, pairs: tuple, solver: str, tol: float, max_steps: int,
                 fn_cache: dict) -> dict:
    """Steps of ``solver`` to relative residual ``tol`` on the DEQ SEA-RAFT operator."""
    if solver not in fn_cache:
        cfg = DEQConfig(solver=solver, f_max_steps=max_steps, f_tol=tol, f_stop_mode="rel",
                        return_rule="lowest")
        model = build_model({"name": "deq_sea_raft", "size": "S"}, cfg)
        fn_cache[solver] = jax.jit(lambda v, a, b: model.apply(v, a, b)["stats"])
    st = jax.device_get(fn_cache[solver](variables, *pairs))
    return {"nstep_mean": float(np.mean(st["nstep"])),
            "converged": float(np.mean(st["rel_lowest"] < tol)),
            "rel_lowest_mean": float(np.mean(st["rel_lowest"])),
            "rel_trace": np.nanmean(st["rel_trace"], axis=0).tolist()}


SHORT = {"sea_raft": "SEA-RAFT", "deq_sea_raft": "DEQ", "init": "init",
         "sea_raft_trained": "SEA-RAFT-trained", "deq_sea_raft_trained": "DEQ-trained"}


def plot(base: str) -> None:
    """The two PNGs from ``base.json``."""
    with open(base + ".json") as fh:
        res = json.load(fh)
    curves: dict = {}
    for r in res["rows"]:
        if r["what"] == "val_epe":
            curves.setdefault((r["model"], r.get("iters")), []).append((r["step"], r["epe"]))
    line_plot(base + "_epe.png",
              [{"x": [s for s, _ in pts], "y": [e for _, e in pts],
                "label": f"{SHORT[k]}, {n} it" if n else SHORT[k]}
               for (k, n), pts in sorted(curves.items())],
              title=f"Validation EPE, synthetic 64x96 (SEA-RAFT S, {res['steps']} steps)",
              xlabel="training step", ylabel="EPE (px)")
    line_plot(base + "_residual.png",
              [{"x": list(range(1, len(t) + 1)), "y": t,
                "label": f"{SHORT[key.split('/')[1]]}, {key.split('/')[0]}"}
               for key, t in res["traces"].items()],
              title="DEQ SEA-RAFT operator on 4 validation pairs", xlabel="solver step",
              ylabel="relative residual ||f(z) - z|| / ||f(z)||", logy=True)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--eval_every", type=int, default=30)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max_steps", type=int, default=60)
    p.add_argument("--out", default=common.RESULTS)
    p.add_argument("--save_weights", action="store_true",
                   help="also write the trained weights to OUT/deq_sea_raft_weights.npz")
    p.add_argument("--plot_only", action="store_true",
                   help="redraw the PNGs from OUT/deq_sea_raft.json")
    a = p.parse_args(argv)
    if a.plot_only:
        plot(os.path.join(a.out, "deq_sea_raft"))
        return []
    t_start = time.time()
    cfgs = configs(a.steps)
    models = {k: model_from_config(c) for k, c in cfgs.items()}
    mesh = sharding.make_mesh(1)

    start = jax.device_get(init_variables(models["sea_raft"], 0))  # the shared start (host)
    states, updates, rows = {}, {}, []
    for name, c in cfgs.items():
        states[name] = train.state_from_weights(start["params"], start["batch_stats"], c, mesh)
    loader = train.build_loader(cfgs["sea_raft"], mesh, 0)
    batches = (sharding.global_batch(b, mesh) for b in loader)
    first = next(batches)
    for name, c in cfgs.items():
        t0 = time.time()
        updates[name] = train.make_update_fn(models[name], c, mesh).lower(
            states[name], first).compile()
        rows.append({"model": name, "what": "train_step_memory", "compile_s":
                     round(time.time() - t0, 1), **memory(updates[name])})
        print(rows[-1], flush=True)

    eval_cfgs = {}  # (model, iterations): its config's evaluation and the other one
    for name, c in cfgs.items():
        for n in sorted({int(c.eval.iters["synthetic"]), *EXTRA_EVAL_ITERS[name]}):
            e = copy.deepcopy(c)
            e.eval.iters["synthetic"] = n
            eval_cfgs[(name, n)] = e
    curves = {key: [] for key in eval_cfgs}

    def validate(name: str, step: int) -> None:
        s = states[name]
        for (model, n), c in eval_cfgs.items():
            if model != name:
                continue
            res = evaluate.validate_spec(models[name], {"params": s.params,
                                                        "batch_stats": s.batch_stats},
                                         c, "synthetic")
            epe = float(res.metrics["epe/pooled"])
            curves[(name, n)].append((step, epe))
            rows.append({"model": name, "what": "val_epe", "step": step, "iters": n,
                         "epe": round(epe, 4)})
            print(f"step {step:4d} {name:13s} validation EPE ({n:2d} it) {epe:.3f}", flush=True)

    times = {k: [] for k in MODELS}
    losses = {k: [] for k in MODELS}
    batches = itertools.chain([first], batches)  # the loader yields exactly --steps batches
    for step in range(a.steps):
        batch = next(batches)
        if step % a.eval_every == 0:
            for name in MODELS:
                validate(name, step)
        for name in MODELS:  # alternating A B A B on the same batch
            t0 = time.perf_counter()
            states[name], m = updates[name](states[name], batch)
            jax.block_until_ready(states[name].params)
            times[name].append(time.perf_counter() - t0)
            losses[name].append(float(m["loss"]))
        if step % 10 == 0:
            print(f"step {step:4d} " + ", ".join(f"{k} loss {losses[k][-1]:.3f} "
                                                 f"{times[k][-1]:.2f} s" for k in MODELS),
                  flush=True)
    for name in MODELS:
        validate(name, a.steps)
        ts = times[name][1:] or times[name]
        rows.append({"model": name, "what": "train_step_time", "median_s":
                     round(float(np.median(ts)), 4), "steps": len(ts),
                     "final_loss": round(float(np.mean(losses[name][-10:])), 4)})
        print(rows[-1], flush=True)

    # solver steps to tolerance on 4 validation pairs
    val = evaluate.build_eval_source(cfgs["sea_raft"], "synthetic")
    pairs = tuple(np.stack([val[i][k] for i in range(4)]).astype(np.float32)
                  for k in ("image1", "image2"))
    weights = {"init": start}
    for name in MODELS:
        s = jax.device_get(states[name])
        weights[f"{name}_trained"] = {"params": s.params, "batch_stats": s.batch_stats}
    if a.save_weights:  # for later analysis (about 70 MB: not for the repository)
        np.savez(os.path.join(a.out, "deq_sea_raft_weights.npz"),
                 **{f"{k}/{jax.tree_util.keystr(path)}": np.asarray(leaf)
                    for k, v in weights.items() if k != "init"
                    for path, leaf in jax.tree_util.tree_leaves_with_path(v)})
    traces, cache = {}, {}
    for solver in ("naive", "anderson"):
        for label, v in weights.items():
            r = solver_steps(v, pairs, solver, a.tol, a.max_steps, cache)
            traces[(solver, label)] = r.pop("rel_trace")
            rows.append({"model": label, "what": "solver_steps", "solver": solver,
                         "tol": a.tol, "max_steps": a.max_steps, **r})
            print(rows[-1], flush=True)

    base = os.path.join(a.out, "deq_sea_raft")
    common.write_results(
        base, rows, steps=a.steps, wall_s=round(time.time() - t_start),
        load=os.getloadavg(), traces={f"{s}/{w}": t for (s, w), t in traces.items()},
        what="DEQ SEA-RAFT vs unrolled SEA-RAFT (S), same start, synthetic 64x96, batch 4")
    plot(base)
    print(f"wrote {base}.csv, .json, _epe.png, _residual.png ({time.time() - t_start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
