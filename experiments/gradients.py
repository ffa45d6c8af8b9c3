"""Gradient modes on a trained DEQ-RAFT: IFT, phantom k = 1 and 3, unrolled (and optimistix's IFT).

    python experiments/gradients.py --checkpoint=runs/quickstart [--steps=16 --train_steps=30]

The checkpoint is the README quick-start model (DEQ-RAFT-T, synthetic 64x96 pairs). Every mode
uses the same forward solve -- ``--steps`` naive steps, "last" return rule, one supervised state
(n_states 1) -- so the modes differ only in the gradient: ``unrolled`` (backprop through the
steps, python-unrolled, the reference), ``ift`` (implicit gradient, default backward settings:
Anderson, relative 1e-3, 40 steps), ``phantom_k1`` / ``phantom_k3`` (k differentiable steps from
the stopped fixed point, tau 1; the quick start's own mode is k = 1) and ``optimistix_ift``
(optimistix ``ImplicitAdjoint``, GMRES). Loss: the training loss (mean L1 over B*H*W*2 of valid
pixels) on a batch of 4 synthetic 64x96 pairs.

(a) One gradient from the trained checkpoint: cosine similarity and norm ratio to the unrolled
gradient (all parameters flattened), wall time of one jit-compiled value-and-grad (median of 3)
and its XLA temp memory (``compiled.memory_analysis()``).
(b) Short training runs from the same start (``--start_step``, default the step-100 checkpoint
of the quick start: mid-training, so there is something to gain) with each mode: ``--train_steps``
AdamW steps (lr 1e-4, wd 1e-4, clip 1.0, batch 4, the same batches for every mode), validation
EPE on 16 held-out synthetic pairs (18 solver steps, as the quick start evaluates) before and
after. Small N: differences of a few hundredths are noise.
Runtime about 6 minutes on 2 CPU cores. Writes ``experiments/results/gradients.{csv,json}`` and
``gradients_training.png`` (validation EPE vs step).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402

MODES = {
    "unrolled": dict(grad="unrolled", unroll_impl="python"),
    "ift": dict(grad="ift"),
    "phantom_k1": dict(grad="phantom", phantom_steps=1),
    "phantom_k3": dict(grad="phantom", phantom_steps=3),
    "optimistix_ift": dict(grad="optimistix_ift"),
}


def batch_of(ds, start: int, size: int) -> dict:
    items = [ds[i] for i in range(start, start + size)]
    return {k: jnp.asarray(np.stack([it[k] for it in items])) for k in ("image1", "image2",
                                                                      "flow", "valid")}


def build(mode: str, steps: int):
    return common.deq_raft("T", solver="naive", f_max_steps=steps, f_tol=0.0,
                           return_rule="last", n_states=1, **MODES[mode])


def loss_fn(model):
    from jflow import losses

    def loss(params, batch_stats, batch):
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
            out, new = model.apply(variables, batch["image1"].astype(jnp.float32),
                                   batch["image2"].astype(jnp.float32), train=True,
                                   mutable=["batch_stats"])
            batch_stats = new["batch_stats"]
        else:
            out = model.apply(variables, batch["image1"].astype(jnp.float32),
                              batch["image2"].astype(jnp.float32), train=True)
        preds = out["predictions"]
        value, metrics = losses.weighted_sequence_loss(preds, batch["flow"], batch["valid"],
                                                       jnp.ones((preds.shape[0],)))
        return value, batch_stats

    return loss


def flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree_util.tree_leaves(tree)])


def gradient_rows(variables, batch, steps: int, modes) -> list[dict]:
    rows, ref = [], None
    for mode in modes:
        model = build(mode, steps)
        grad = jax.jit(jax.value_and_grad(loss_fn(model), has_aux=True))
        args = (variables["params"], variables.get("batch_stats"), batch)
        t0 = time.perf_counter()
        try:
            compiled = grad.lower(*args).compile()
        except Exception as e:  # noqa: BLE001  (a mode failing is a result to report)
            print(f"{mode:15s} FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            rows.append({"mode": mode, "error": str(e).splitlines()[0][:200]})
            continue
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            (value, _), g = jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
        g = flat(g)
        if mode == "unrolled":
            ref = g
        cos = float(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref))) if ref is not None else np.nan
        rows.append({"mode": mode, "loss": float(value), "cosine_to_unrolled": cos,
                     "norm_ratio_to_unrolled": float(np.linalg.norm(g) / np.linalg.norm(ref))
                     if ref is not None else np.nan,
                     "rel_error_to_unrolled": float(np.linalg.norm(g - ref) / np.linalg.norm(ref))
                     if ref is not None else np.nan,
                     "step_seconds": float(np.median(times)), "compile_seconds": round(compile_s, 1),
                     "xla_temp_mib": mem.temp_size_in_bytes / 2**20 if mem else np.nan})
        r = rows[-1]
        print(f"{mode:15s} cos {r['cosine_to_unrolled']:.4f} norm ratio "
              f"{r['norm_ratio_to_unrolled']:.3f} rel err {r['rel_error_to_unrolled']:.3f} "
              f"{r['step_seconds']:.3f} s/step, temp {r['xla_temp_mib']:.1f} MiB", flush=True)
    return rows


def validation_epe(model_eval, variables, val: dict, iters: int) -> float:
    out = jax.jit(lambda v, a, b: model_eval.apply(v, a, b, iters=iters)["flow"])(
        variables, val["image1"].astype(jnp.float32), val["image2"].astype(jnp.float32))
    epe = jnp.sqrt(jnp.sum(jnp.square(out - val["flow"]), axis=-1))
    mask = val["valid"].astype(jnp.float32)
    return float(jnp.sum(epe * mask) / jnp.sum(mask))


def train_rows(start_vars, train_ds, val, steps: int, train_steps: int, modes, every: int
               ) -> list[dict]:
    import optax

    model_eval = build("phantom_k1", steps)
    rows = []
    epe0 = validation_epe(model_eval, start_vars, val, 18)
    for mode in modes:
        model = build(mode, steps)
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=1e-4))
        loss = loss_fn(model)

        @jax.jit
        def update(params, batch_stats, opt_state, batch, loss=loss, tx=tx):
            (value, batch_stats), g = jax.value_and_grad(loss, has_aux=True)(params, batch_stats,
                                                                              batch)
            updates, opt_state = tx.update(g, opt_state, params)
            return optax.apply_updates(params, updates), batch_stats, opt_state, value

        params, bstats = start_vars["params"], start_vars.get("batch_stats")
        opt_state = tx.init(params)
        curve, t0 = [(0, epe0)], time.perf_counter()
        try:
            for i in range(train_steps):
                params, bstats, opt_state, value = update(params, bstats, opt_state,
                                                          batch_of(train_ds, 4 * i, 4))
                if (i + 1) % every == 0 or i + 1 == train_steps:
                    v = {"params": params, **({"batch_stats": bstats} if bstats is not None else {})}
                    curve.append((i + 1, validation_epe(model_eval, v, val, 18)))
        except Exception as e:  # noqa: BLE001
            print(f"{mode:15s} training FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        seconds = time.perf_counter() - t0
        rows.append({"mode": mode, "train_steps": train_steps, "val_epe_start": epe0,
                     "val_epe_end": curve[-1][1], "final_train_loss": float(value),
                     "wall_seconds_incl_compile": round(seconds, 1), "curve": curve})
        print(f"{mode:15s} val EPE {epe0:.3f} -> {curve[-1][1]:.3f} after {train_steps} steps "
              f"({seconds:.0f} s incl. compile)", flush=True)
    return rows


def main(argv=None) -> list[dict]:
    from jflow.checkpoint import load_params
    from jflow.data import SyntheticFlow

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="DEQ-RAFT-T jflow workdir/checkpoint")
    p.add_argument("--steps", type=int, default=16, help="forward solver steps (naive)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--train_steps", type=int, default=30)
    p.add_argument("--train_modes", default="unrolled,ift,phantom_k1,phantom_k3")
    p.add_argument("--start_step", type=int, default=100, help="checkpoint step to train from")
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    note = None if a.checkpoint else common.RANDOM_WEIGHTS_NOTE
    model = build("phantom_k1", a.steps)
    if a.checkpoint:
        variables = common.load_or_random(model, a.checkpoint)
        loaded = load_params(a.checkpoint, a.start_step)
        start = {"params": loaded["params"], **({"batch_stats": loaded["batch_stats"]}
                                                if loaded.get("batch_stats") else {})}
    else:
        print("NOTE:", note, flush=True)
        variables = start = common.load_or_random(model, None)
    train_ds = SyntheticFlow(4 * a.train_steps + 4, 64, 96, seed=7)
    val_ds = SyntheticFlow(16, 64, 96, seed=12345)
    batch, val = batch_of(train_ds, 4 * a.train_steps, 4), batch_of(val_ds, 0, 16)

    grads = gradient_rows(variables, batch, a.steps, [m for m in a.modes.split(",") if m])
    train = train_rows(start, train_ds, val, a.steps, a.train_steps,
                       [m for m in a.train_modes.split(",") if m], a.eval_every)
    base = os.path.join(a.out, "gradients")
    rows = [{"part": "gradient", **r} for r in grads] + [
        {"part": "training", **{k: v for k, v in r.items() if k != "curve"}} for r in train]
    common.write_results(
        base, rows, note=note, checkpoint=a.checkpoint, solver_steps=a.steps,
        start_step=a.start_step, curves={r["mode"]: r["curve"] for r in train},
        what="gradient: one value-and-grad on 4 synthetic 64x96 pairs from the final checkpoint; "
             "training: validation EPE (16 synthetic pairs, 18 steps) after train_steps AdamW "
             "steps from start_step with each gradient mode")
    from jflow.plots import line_plot

    line_plot(base + "_training.png",
              [{"x": [c[0] for c in r["curve"]], "y": [c[1] for c in r["curve"]],
                "label": r["mode"]} for r in train],
              title=f"DEQ-RAFT-T from step {a.start_step}: training with each gradient mode",
              xlabel="training step", ylabel="validation EPE (synthetic)")
    print(f"wrote {base}.csv, .json, _training.png")
    return rows


if __name__ == "__main__":
    main()
