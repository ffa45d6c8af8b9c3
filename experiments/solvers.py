"""Fixed-point solvers side by side: steps to tolerance and final residual, with residual traces.

    python experiments/solvers.py [--max_steps=60 --scale=0.25 --checkpoint=DIR]

(a) a standard contractive problem, ``z = tanh(W z + x)`` with symmetric ``W``, eigenvalues evenly
in [-0.475, 0.95] (dim 256, batch 4, x ~ N(0, 0.25), float32), stopping on the relative residual
below 1e-5 (at most 100 steps); (b) DEQ-RAFT-T on two Sintel
demo frames downscaled by ``--scale`` (random weights unless ``--checkpoint``), stopping on the
relative residual below 1e-3. Solvers: the native ``naive``, ``anderson`` (deq-flow's absolute ridge, and
``relative_ridge=True``), ``broyden`` and the
jaxopt backends ``jaxopt_fixed_point``, ``jaxopt_anderson``, ``jaxopt_broyden`` (2 f evaluations
per step, see ``jflow.deq.jaxopt_backend``). Writes ``experiments/results/solvers.{csv,json}``
and ``solvers_toy.png`` / ``solvers_deq_raft.png`` (relative residual per step, batch mean).
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

SOLVERS = ("naive", "anderson", "anderson:relative_ridge", "broyden", "jaxopt_fixed_point",
           "jaxopt_anderson", "jaxopt_broyden")


def parse_solver(spec: str) -> tuple[str, dict]:
    """``"anderson:relative_ridge,memory=5"`` -> ``("anderson", {"relative_ridge": True,
    "memory": 5})`` (bare words are True; values are ints, floats or strings)."""
    name, _, opts = spec.partition(":")
    kwargs = {}
    for tok in filter(None, opts.split(",")):
        key, sep, value = tok.partition("=")
        if not sep:
            kwargs[key] = True
            continue
        for cast in (int, float, str):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                pass
    return name, kwargs


def toy_problem(dim: int = 256, batch: int = 4, rho: float = 0.95, seed: int = 0):
    """``f(z) = tanh(z W^T + x)``, W symmetric with eigenvalues in [-rho/2, rho], z0 = 0."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    w = jnp.asarray(q @ np.diag(np.linspace(-rho / 2, rho, dim)) @ q.T, jnp.float32)
    x = jnp.asarray(0.5 * rng.standard_normal((batch, dim)), jnp.float32)
    return (lambda z: jnp.tanh(z @ w.T + x)), jnp.zeros((batch, dim), jnp.float32)


def row(problem: str, name: str, stats: dict, seconds: float, tol: float) -> dict:
    rel = np.asarray(stats["rel_trace"], np.float64)
    return {"problem": problem, "solver": name,
            "steps_to_tol": float(np.mean(np.asarray(stats["nstep"]))),
            "converged": float(np.mean(np.asarray(stats["converged"]))),
            "rel_final": float(np.mean(rel[:, -1])), "rel_lowest": float(np.mean(stats["rel_lowest"])),
            "abs_lowest": float(np.mean(stats["abs_lowest"])), "tol": tol,
            "seconds": round(seconds, 3), "rel_trace": [round(v, 8) for v in rel.mean(0).tolist()]}


def run_toy(solvers, max_steps: int, tol: float = 1e-5) -> list[dict]:
    f, z0 = toy_problem()
    rows = []
    for name in solvers:
        spec, kwargs = parse_solver(name)
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


def run_deq_raft(solvers, max_steps: int, scale: float, checkpoint: str | None,
                 tol: float = 1e-3) -> list[dict]:
    frames, names = common.demo_frames(scale=scale, count=2)
    im1, im2 = (jnp.asarray(f[None], jnp.float32) for f in frames)
    variables = None
    rows = []
    for name in solvers:
        solver, kwargs = parse_solver(name)
        model = common.deq_raft("T", solver=solver, solver_kwargs=kwargs, f_max_steps=max_steps,
                                f_tol=tol, f_stop_mode="rel")
        if variables is None:
            variables = common.load_or_random(model, checkpoint)
        fn = jax.jit(lambda v, a, b, m=model: m.apply(v, a, b, iters=max_steps)["stats"])
        problem = f"deq_raft-T {im1.shape[1]}x{im1.shape[2]} {names[0]}"
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
    return (f"{r['problem'][:30]:30s} {r['solver']:20s} steps {r['steps_to_tol']:5.1f} "
            f"rel_final {r['rel_final']:.2e} rel_lowest {r['rel_lowest']:.2e} ({r['seconds']} s)")


def plot(rows: list[dict], path: str, title: str) -> None:
    from lineplot import line_plot

    series = [{"x": list(range(1, len(r["rel_trace"]) + 1)), "y": r["rel_trace"],
               "label": r["solver"] + (" (failed)" if "error" in r else ""), "marker": False}
              for r in rows]
    line_plot(path, series, title=title, xlabel="solver step (f evaluation of the loop)",
              ylabel="relative residual", logy=True)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--max_steps", type=int, default=60, help="DEQ-RAFT solver steps")
    p.add_argument("--toy_steps", type=int, default=100, help="toy problem solver steps")
    p.add_argument("--scale", type=float, default=0.25, help="Sintel demo downscaling")
    p.add_argument("--checkpoint", default=None, help="DEQ-RAFT-T jflow checkpoint")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    solvers = [s for s in a.solvers.split(",") if s]
    toy = run_toy(solvers, a.toy_steps)
    deq = run_deq_raft(solvers, a.max_steps, a.scale, a.checkpoint)
    base = os.path.join(a.out, "solvers")
    note = None if a.checkpoint else common.RANDOM_WEIGHTS_NOTE
    common.write_results(base, [{k: v for k, v in r.items() if k != "rel_trace"} for r in toy + deq],
                         what="steps to tolerance (mean nstep over the batch; max_steps when not "
                              "reached) and residuals per solver", note=note,
                         traces={f"{r['problem']}|{r['solver']}": r["rel_trace"] for r in toy + deq})
    plot(toy, base + "_toy.png", "z = tanh(Wz + x), eig(W) in [-0.475, 0.95], dim 256")
    plot(deq, base + "_deq_raft.png",
         f"DEQ-RAFT-T on Sintel demo ({'random weights' if note else 'checkpoint'})")
    print(f"wrote {base}.csv, .json, _toy.png, _deq_raft.png")
    return toy + deq


if __name__ == "__main__":
    main()
