"""Fixed-point reuse across a video: DEQ-RAFT solver effort per frame pair with and without it.

    python experiments/reuse.py --checkpoint=runs/quickstart [--frames=DIR --tol=2e-3]

(``--checkpoint``: the README quick-start model; ``--config`` defaults to configs/deq_raft.py.)

Runs :meth:`jflow.predict.FlowPredictor.predict_video` over the Sintel demo frames (downscaled by
``--scale``) twice, starting every pair from zero (``reuse=False``) or from the previous pair's
fixed point with its flow forward-interpolated (``reuse=True``), and records per pair (a) the
solver steps needed to reach ``--tol`` on the relative residual (at most ``--max_steps``) and
(b) the relative residual reached after a fixed budget of ``--budget`` steps. Without
``--checkpoint`` the weights are random: the operator is untrained, so the numbers only show the
mechanism works, not the speed-up of a trained model (the outputs say so).
Writes ``experiments/results/reuse.{csv,json}``, ``reuse_steps.png`` and ``reuse_residual.png``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402


def predictor(config, checkpoint: str | None, solver: str, max_steps: int, tol: float):
    from jflow.deq import from_config
    from jflow.models import build_model, is_deq
    from jflow.predict import FlowPredictor

    if not is_deq(config):
        raise ValueError(f"--config: {config.model.name} is not a DEQ model")
    name, kwargs = common.parse_solver(solver)
    deq = from_config(config.deq).replace(solver=name, solver_kwargs=kwargs, f_tol=tol,
                                          f_stop_mode="rel", return_rule="lowest")
    model = build_model(config.model, deq)
    variables = common.load_or_random(model, checkpoint)
    return FlowPredictor(model, variables, deq=True, iters=max_steps)


def run(pred, frames, reuse: bool) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [{"pair": out["index"], **{k: out["stats"][k] for k in ("nstep", "rel_lowest",
                                                                        "abs_lowest")}}
                for out in pred.predict_video(frames, reuse=reuse)]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/deq_raft.py", help="DEQ config file[:variant]")
    p.add_argument("--checkpoint", default=None, help="jflow checkpoint (random weights if unset)")
    p.add_argument("--frames", default=common.SINTEL_DEMO)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--solver", default="anderson",
                   help='a solver spec as in solvers.py, e.g. "anderson:beta=3.0,memory=8"')
    p.add_argument("--tol", type=float, default=3e-3,
                   help="relative residual tolerance (random weights plateau near 1.7e-3)")
    p.add_argument("--max_steps", type=int, default=60)
    p.add_argument("--budget", type=int, default=8, help="fixed step budget for (b)")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    from jflow.config_files import load_config

    config = load_config(a.config)
    frames, names = common.demo_frames(a.frames, a.scale)
    note = None if a.checkpoint else common.RANDOM_WEIGHTS_NOTE
    if note:
        print("NOTE:", note, flush=True)

    rows = []
    for setting, steps, tol in (("to_tol", a.max_steps, a.tol), ("budget", a.budget, 0.0)):
        pred = predictor(config, a.checkpoint, a.solver, steps, tol)
        for reuse in (False, True):
            for r in run(pred, frames, reuse):
                rows.append({"setting": setting, "reuse": reuse, "frame": names[r["pair"]],
                             "max_steps": steps, "tol": tol, **r})
            got = [r for r in rows if r["setting"] == setting and r["reuse"] == reuse]
            print(f"{setting:7s} reuse={reuse!s:5s}: mean steps "
                  f"{np.mean([r['nstep'] for r in got]):5.1f}, mean rel residual "
                  f"{np.mean([r['rel_lowest'] for r in got]):.3e}", flush=True)

    base = os.path.join(a.out, "reuse")
    h, w = frames[0].shape[:2]
    # pair 0 has no previous fixed point: compare pairs 1.. (the ones reuse can help)
    mean = lambda reuse: float(np.mean([r["nstep"] for r in rows if r["setting"] == "to_tol"  # noqa: E731
                                        and r["reuse"] == reuse and r["pair"] > 0]))
    ratio = mean(False) / mean(True)
    print(f"steps to tol (pairs 2..): cold {mean(False):.1f}, reuse {mean(True):.1f}, "
          f"ratio {ratio:.2f}x", flush=True)
    common.write_results(base, rows, note=note, model=f"{config.model.name}-{config.model.size}",
                         checkpoint=a.checkpoint, cold_steps=mean(False),
                         reuse_steps=mean(True), steps_ratio_cold_over_reuse=ratio,
                         solver=a.solver, frames=f"{len(frames)} Sintel demo frames at {h}x{w}",
                         what="to_tol: steps to reach tol (rel residual); budget: lowest rel "
                              "residual within a fixed number of steps (tol 0)")
    plot(rows, base, note)
    print(f"wrote {base}.csv, .json, _steps.png, _residual.png")
    return rows


def plot(rows: list[dict], base: str, note: str | None) -> None:
    from jflow.plots import line_plot

    suffix = " (random weights)" if note else ""
    for setting, key, name, ylabel, logy in (
            ("to_tol", "nstep", "_steps.png", "solver steps to tolerance", False),
            ("budget", "rel_lowest", "_residual.png", "relative residual after budget", True)):
        series = []
        for reuse in (False, True):
            got = [r for r in rows if r["setting"] == setting and r["reuse"] == reuse]
            series.append({"x": [r["pair"] + 1 for r in got], "y": [r[key] for r in got],
                           "label": "reuse" if reuse else "from zero"})
        line_plot(base + name, series, title=f"DEQ-RAFT fixed-point reuse{suffix}",
                  xlabel="frame pair", ylabel=ylabel, logy=logy)


if __name__ == "__main__":
    main()
