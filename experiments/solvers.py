"""Fixed-point solvers side by side on a trained DEQ-RAFT: residual vs steps and wall time.

    python experiments/solvers.py --checkpoint=runs/quickstart [--frames=DIR --max_steps=100]

The checkpoint is the README quick-start model (DEQ-RAFT-T trained 300 steps on synthetic 64x96
pairs: ``python -m jflow.main --config=configs/deq_raft.py --workdir=runs/quickstart``). Problems:
(a) ``--pairs`` consecutive Sintel demo pairs (default 9: every pair of the 10 frames of
``--frames``, default those shipped in ``jflow/data/demo``) downscaled by ``--scale`` (0.25:
104x256), one batch; (b) four synthetic
64x96 pairs (``SyntheticFlow(4, 64, 96, seed=999)``, the training distribution), one batch of 4;
(c) a toy contractive map ``z = tanh(W z + x)`` (W symmetric, eigenvalues in [-0.475, 0.95], dim
256, batch 4). Every solve stops per sample on the relative residual ``--tol`` (1e-3; toy 1e-5)
or after ``--max_steps``. Reported per solver: mean steps to rel 1e-2, 3e-3, 2e-3, 1e-3 (from the
traces; NaN when not reached), wall seconds per solve (jit-compiled, after a warm-up call;
machine load adds noise) and per step, and the traces. Solvers: native ``naive``,
``anderson_official`` (deq-flow's absolute ridge, ``relative_ridge=false``), ``anderson``
(relative ridge, jflow's default), ``broyden``; jaxopt ``jaxopt_fixed_point``,
``jaxopt_anderson``, ``jaxopt_broyden``; optimistix ``optimistix_fixed_point``,
``optimistix_newton`` (Newton-Krylov: its GMRES JVPs are not counted as steps; compare seconds).
Without ``--checkpoint`` the weights are random (said in the outputs). Runtime: about 5 minutes
on 2 CPU cores (mostly compilation). Writes ``experiments/results/solvers.{csv,json}``,
``solvers_<problem>.png`` (relative residual vs step) and ``solvers_<problem>_time.png`` (vs
wall time).
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
from jflow.deq import get_solver, solve  # noqa: E402

SOLVERS = ("naive", "anderson_official", "anderson", "broyden", "jaxopt_fixed_point",
           "jaxopt_anderson", "jaxopt_broyden", "optimistix_fixed_point", "optimistix_newton")
MILESTONES = (1e-2, 3e-3, 2e-3, 1e-3)


def toy_problem(dim: int = 256, batch: int = 4, rho: float = 0.95, seed: int = 0):
    """``f(z) = tanh(z W^T + x)``, W symmetric with eigenvalues in [-rho/2, rho], z0 = 0."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    w = jnp.asarray(q @ np.diag(np.linspace(-rho / 2, rho, dim)) @ q.T, jnp.float32)
    x = jnp.asarray(0.5 * rng.standard_normal((batch, dim)), jnp.float32)
    return (lambda z: jnp.tanh(z @ w.T + x)), jnp.zeros((batch, dim), jnp.float32)


def steps_to(rel: np.ndarray, nstep: np.ndarray, level: float) -> float:
    """Mean over samples of the first 1-based step whose relative residual is below ``level``
    (NaN if a sample never gets there)."""
    out = []
    for trace, n in zip(rel, nstep):
        hit = np.nonzero(trace[: int(n)] < level)[0]
        out.append(float(hit[0] + 1) if hit.size else np.nan)
    return float(np.mean(out))


def row(problem: str, name: str, stats: dict, seconds: float, tol: float) -> dict:
    rel = np.asarray(stats["rel_trace"], np.float64)
    nstep = np.asarray(stats["nstep"])
    r = {"problem": problem, "solver": name, "steps_to_tol": float(np.mean(nstep)),
         "nstep_per_sample": [int(n) for n in nstep],
         "converged": float(np.mean(np.asarray(stats["converged"])))}
    for level in MILESTONES:
        r[f"steps_to_{level:g}"] = steps_to(rel, nstep, level)
    r.update({"rel_final": float(np.mean(rel[:, -1])),
              "rel_lowest": float(np.mean(stats["rel_lowest"])),
              "abs_lowest": float(np.mean(stats["abs_lowest"])), "tol": tol,
              "seconds": round(seconds, 3),
              "seconds_per_step": round(seconds / max(float(np.max(nstep)), 1.0), 4),
              "rel_trace": [round(v, 8) for v in rel.mean(0).tolist()]})
    return r


def run_toy(solvers, max_steps: int, tol: float = 1e-5) -> list[dict]:
    f, z0 = toy_problem()
    rows = []
    for name in solvers:
        spec, kwargs = common.parse_solver(name)
        solver = get_solver(spec, **kwargs)
        fn = jax.jit(lambda z, s=solver: solve(f, z, s, max_steps, tol, "rel")[1])
        try:
            jax.block_until_ready(fn(z0))
        except Exception as e:  # noqa: BLE001
            rows.append(failed("toy_tanh", name, e))
            continue
        t0 = time.perf_counter()
        stats = jax.block_until_ready(fn(z0))
        rows.append(row("toy_tanh", name, stats, time.perf_counter() - t0, tol))
        print(_fmt(rows[-1]), flush=True)
    return rows


def sintel_batch(frames_dir: str, scale: float, pairs: int = 9):
    """The first ``pairs`` consecutive pairs (frames k, k+1) of the demo clip, one batch."""
    frames, names = common.demo_frames(frames_dir, scale=scale, count=pairs + 1)
    if len(frames) < pairs + 1:
        raise ValueError(f"--pairs={pairs}: only {len(frames)} frames in {frames_dir}")
    im1 = np.stack(frames[:pairs]).astype(np.float32)
    im2 = np.stack(frames[1:pairs + 1]).astype(np.float32)
    return (f"sintel {im1.shape[1]}x{im1.shape[2]} ({names[0]}..{names[pairs]}, {pairs} pairs)",
            im1, im2)


def synthetic_batch(count: int = 4, height: int = 64, width: int = 96, seed: int = 999):
    from jflow.data import SyntheticFlow

    ds = SyntheticFlow(count, height, width, seed=seed)
    im1 = np.stack([ds[i]["image1"] for i in range(count)]).astype(np.float32)
    im2 = np.stack([ds[i]["image2"] for i in range(count)]).astype(np.float32)
    return f"synthetic {height}x{width} ({count} pairs)", im1, im2


def run_deq_raft(solvers, max_steps: int, problems, checkpoint: str | None,
                 tol: float = 1e-3) -> list[dict]:
    variables = None
    rows = []
    for problem, im1, im2 in problems:
        im1, im2 = jnp.asarray(im1), jnp.asarray(im2)
        for name in solvers:
            solver, kwargs = common.parse_solver(name)
            model = common.deq_raft("T", solver=solver, solver_kwargs=kwargs,
                                    f_max_steps=max_steps, f_tol=tol, f_stop_mode="rel")
            if variables is None:
                variables = common.load_or_random(model, checkpoint)
            fn = jax.jit(lambda v, a, b, m=model: m.apply(v, a, b, iters=max_steps)["stats"])
            try:
                jax.block_until_ready(fn(variables, im1, im2))
            except Exception as e:  # noqa: BLE001  (a backend failing is a result to report)
                rows.append(failed(problem, name, e))
                continue
            t0 = time.perf_counter()
            stats = jax.block_until_ready(fn(variables, im1, im2))
            rows.append(row(problem, name, stats, time.perf_counter() - t0, tol))
            print(_fmt(rows[-1]), flush=True)
    return rows


def failed(problem: str, name: str, error: Exception) -> dict:
    msg = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    print(f"{problem[:30]:30s} {name:20s} FAILED {msg}", flush=True)
    return {"problem": problem, "solver": name, "error": msg, "rel_trace": []}


def _fmt(r: dict) -> str:
    return (f"{r['problem'][:30]:30s} {r['solver']:22s} steps {r['steps_to_tol']:5.1f} "
            f"to 1e-2/3e-3/2e-3/1e-3 {r['steps_to_0.01']:5.1f} {r['steps_to_0.003']:5.1f} "
            f"{r['steps_to_0.002']:5.1f} {r['steps_to_0.001']:5.1f} "
            f"rel_lowest {r['rel_lowest']:.2e} ({r['seconds']} s, {r['seconds_per_step']} s/step)")


def plot(rows: list[dict], path: str, title: str) -> None:
    from jflow.plots import line_plot

    ok = [r for r in rows if "error" not in r]
    for suffix, xlabel, xs in (
            ("", "solver step (f evaluation of the loop)",
             lambda r: list(range(1, len(r["rel_trace"]) + 1))),
            ("_time", "wall time (s, steps x seconds per step)",
             lambda r: [(i + 1) * r["seconds_per_step"] for i in range(len(r["rel_trace"]))])):
        series = [{"x": xs(r), "y": [max(v, 1e-9) for v in r["rel_trace"]], "label": r["solver"],
                   "marker": False} for r in ok]
        line_plot(path + suffix + ".png", series, title=title, xlabel=xlabel,
                  ylabel="relative residual (batch mean)", logy=True)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--solvers", default=",".join(SOLVERS),
                   help="comma-separated; ';'-separated when options have commas "
                        "('naive;anderson:memory=3,beta=0.8')")
    p.add_argument("--max_steps", type=int, default=100, help="DEQ-RAFT solver steps")
    p.add_argument("--tol", type=float, default=1e-3, help="DEQ-RAFT relative tolerance")
    p.add_argument("--toy_steps", type=int, default=100, help="toy problem solver steps")
    p.add_argument("--scale", type=float, default=0.25, help="Sintel demo downscaling")
    p.add_argument("--frames", default=common.SINTEL_DEMO, help="Sintel demo frames directory")
    p.add_argument("--pairs", type=int, default=9, help="consecutive Sintel demo pairs")
    p.add_argument("--checkpoint", default=None, help="DEQ-RAFT-T jflow checkpoint")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    solvers = common.split_solvers(a.solvers)
    note = None if a.checkpoint else common.RANDOM_WEIGHTS_NOTE
    if note:
        print("NOTE:", note, flush=True)
    toy = run_toy(solvers, a.toy_steps)
    problems = [sintel_batch(a.frames, a.scale, a.pairs), synthetic_batch()]
    deq = run_deq_raft(solvers, a.max_steps, problems, a.checkpoint, a.tol)
    base = os.path.join(a.out, "solvers")
    rows = toy + deq
    common.write_results(
        base, [{k: v for k, v in r.items() if k != "rel_trace"} for r in rows],
        what="per solver: mean steps to rel 1e-2 / 1e-3 (NaN: not reached), steps used "
             "(max_steps when tol not reached), residuals, wall seconds per solve and per step",
        note=note, checkpoint=a.checkpoint, max_steps=a.max_steps, tol=a.tol,
        traces={f"{r['problem']}|{r['solver']}": r["rel_trace"] for r in rows})
    weights = "random weights" if note else "trained (quick start)"
    plot(toy, base + "_toy", "z = tanh(Wz + x), eig(W) in [-0.475, 0.95], dim 256")
    for (problem, _, _), tag in zip(problems, ("sintel", "synthetic")):
        plot([r for r in deq if r["problem"] == problem], base + "_" + tag,
             f"DEQ-RAFT-T {weights}: {problem}")
    print(f"wrote {base}.csv, .json and plots")
    return rows


if __name__ == "__main__":
    main()
