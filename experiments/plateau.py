"""Why the trained DEQ-RAFT solve stalls near relative residual 1e-3: precision, pixels, spectrum.

    python experiments/plateau.py --checkpoint=runs/quickstart [--steps=300 --pairs=9]

Captures the update operator of a DEQ-RAFT-T checkpoint on ``--pairs`` consecutive Sintel demo
pairs (104x256, one batch) and runs ``--steps`` Picard steps from the cold start three ways:
float32 (as the solvers do), the same operator with every weight, input and state in float64
(``jax_enable_x64``), and float32 with the relative residual split into its hidden-state and flow
parts. At the last iterate it (a) maps the per-pixel step ``|f(z) - z|`` of the flow and of the
hidden state (first pair) and counts how concentrated the residual is (share of the squared
residual in the top 1 % / 10 % of pixels), (b) estimates the Jacobian's leading eigenvalues at
that point by Arnoldi on JVPs of the undetached map (``--krylov`` vectors for the whole batch,
``--krylov_sample`` per pair, with the share of the leading eigenvector in the flow part). Writes
``experiments/results/plateau.{csv,json}``, ``plateau_trace.png`` (residual vs step) and
``plateau_map.png`` (per-pixel residual, first pair: flow | hidden state | image).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.flatten_util  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402


def capture(checkpoint: str, im1: np.ndarray, im2: np.ndarray):
    """``(f, jac_f, params, x, z0)`` of the model's fixed-point call (eager, one solver step)."""
    from jflow.models import deq_raft as mod

    model = common.deq_raft("T")
    variables = common.load_or_random(model, checkpoint)
    got = {}
    original = mod.deq_fixed_point

    def spy(f, params, x, z0, cfg, **kw):
        got.update(f=f, jac_f=kw.get("jac_f"), params=params, x=x, z0=z0)
        return original(f, params, x, z0, cfg, **{**kw, "max_steps": 1})

    mod.deq_fixed_point = spy
    try:
        model.apply(variables, jnp.asarray(im1, jnp.float32), jnp.asarray(im2, jnp.float32),
                    iters=1)
    finally:
        mod.deq_fixed_point = original
    return got["f"], got["jac_f"], got["params"], got["x"], got["z0"]


def cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def picard(f, params, x, z0, steps: int):
    """``steps`` Picard steps; per step and sample: |dh|, |dflow|, |f(z)|, |f(z)_flow - coords0|."""
    def norm(a):
        return jnp.sqrt(jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim))))

    def body(z, _):
        fz = f(params, z, x)
        dh, dc = fz["h"] - z["h"], fz["coords1"] - z["coords1"]
        fnorm = jnp.sqrt(norm(fz["h"]) ** 2 + norm(fz["coords1"]) ** 2)
        return fz, (norm(dh), norm(dc), fnorm, norm(fz["coords1"] - x["coords0"]))

    z, out = jax.jit(lambda z: jax.lax.scan(body, z, None, length=steps))(z0)
    return z, [np.asarray(o, np.float64).T for o in out]  # each (B, steps)


def arnoldi(jac_f, params, x, z, k: int, sample: int | None = None, seed: int = 0) -> np.ndarray:
    """Ritz values of the Jacobian of ``z -> jac_f(params, z, x)`` at ``z``: of one ``sample``
    (the start vector is zero elsewhere; samples are independent), or of the whole batch as one
    operator (the union of the per-sample spectra)."""
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    jvp = jax.jit(lambda v: jax.flatten_util.ravel_pytree(
        jax.jvp(lambda zz: jac_f(params, zz, x), (z,), (unravel(v),))[1])[0])
    q = np.zeros((k + 1, flat.size))
    h = np.zeros((k + 1, k))
    v = np.random.default_rng(seed).standard_normal(flat.size)
    if sample is not None:
        owner = np.asarray(jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(jnp.arange(a.shape[0]).reshape((-1,) + (1,) * (a.ndim - 1)),
                                       a.shape), z))[0])
        v = np.where(owner == sample, v, 0.0)
    q[0] = v / np.linalg.norm(v)
    for j in range(k):
        w = np.asarray(jvp(jnp.asarray(q[j], flat.dtype)), np.float64)
        for i in range(j + 1):  # modified Gram-Schmidt, twice
            for _ in range(2):
                c = q[i] @ w
                h[i, j] += c
                w -= c * q[i]
        h[j + 1, j] = np.linalg.norm(w)
        q[j + 1] = w / max(h[j + 1, j], 1e-30)
    ev, vec = np.linalg.eig(h[:k, :k])
    order = np.argsort(-np.abs(ev))
    return ev[order], q[:k].T @ vec[:, order]  # Ritz values, Ritz vectors (columns)


def concentration(d: np.ndarray) -> dict:
    """Share of the squared per-pixel residual held by the top 1 % and 10 % of pixels."""
    e = np.sort(d.ravel() ** 2)[::-1]
    tot = e.sum()
    return {f"top{p}pct_share": float(e[: max(1, int(len(e) * p / 100))].sum() / tot)
            for p in (1, 10)}


def heat(a: np.ndarray, scale: int) -> np.ndarray:
    """A (h, w) map to an RGB image (black -> red -> yellow -> white), upsampled by ``scale``."""
    t = np.clip(a / max(float(a.max()), 1e-12), 0, 1)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    return np.kron((rgb * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--pairs", type=int, default=9)
    p.add_argument("--krylov", type=int, default=30, help="Arnoldi vectors, whole batch")
    p.add_argument("--krylov_sample", type=int, default=20, help="Arnoldi vectors, per pair")
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--frames", default=common.SINTEL_DEMO)
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    frames, names = common.demo_frames(a.frames, scale=a.scale, count=a.pairs + 1)
    im1, im2 = np.stack(frames[:-1]).astype(np.float32), np.stack(frames[1:]).astype(np.float32)
    f, jac_f, params, x, z0 = capture(a.checkpoint, im1, im2)
    traces, ends = {}, {}
    for tag, dt in (("float32", jnp.float32), ("float64", jnp.float64)):
        pp, xx, zz = cast(params, dt), cast(x, dt), cast(z0, dt)
        ends[tag], (dh, dc, fn, fl) = picard(f, pp, xx, zz, a.steps)
        traces[tag] = {"rel": np.sqrt(dh ** 2 + dc ** 2) / fn, "rel_h": dh / fn, "rel_flow": dc / fn,
                       "dflow_px": dc, "fnorm": fn, "flow_norm": fl}
        print(tag, "rel at steps 10/50/100/last:",
              [f"{traces[tag]['rel'].mean(0)[s - 1]:.3e}" for s in (10, 50, 100, a.steps) if s <= a.steps],
              flush=True)
    z = ends["float32"]
    fz = f(params, z, x)
    dflow = np.linalg.norm(np.asarray(fz["coords1"] - z["coords1"]), axis=-1)  # (B, h, w)
    dh = np.linalg.norm(np.asarray(fz["h"] - z["h"]), axis=-1)
    frac = np.abs(np.asarray(z["coords1"] - x["coords0"]))
    frac = np.minimum(frac % 1.0, 1 - frac % 1.0)  # distance of the flow to an integer
    near_int = frac.min(-1) < 0.05
    ritz = arnoldi(jac_f, params, x, z, a.krylov)[0]
    print("leading Ritz values |lambda|:", np.round(np.abs(ritz[:8]), 4), flush=True)
    is_flow = np.asarray(jax.flatten_util.ravel_pytree(
        {"h": jnp.zeros_like(z["h"]), "coords1": jnp.ones_like(z["coords1"])})[0]) > 0
    rho, flow_share = [], []
    for i in range(a.pairs):
        ev, vec = arnoldi(jac_f, params, x, z, a.krylov_sample, sample=i)
        energy = np.abs(vec[:, 0]) ** 2
        rho.append(float(np.abs(ev[0])))
        flow_share.append(float(energy[is_flow].sum() / energy.sum()))
    print("per-pair leading |lambda|:", np.round(rho, 4), "flow share of its eigenvector:",
          np.round(flow_share, 3), flush=True)
    t32, t64 = traces["float32"], traces["float64"]
    summary = {
        "pairs": f"{names[0]}..{names[a.pairs]} ({a.pairs} pairs, {im1.shape[1]}x{im1.shape[2]})",
        "steps": a.steps, "checkpoint": a.checkpoint,
        "rel_last_float32": float(t32["rel"][:, -1].mean()),
        "rel_last_float64": float(t64["rel"][:, -1].mean()),
        "rel_min_float32": float(t32["rel"].min(1).mean()),
        "rel_min_float64": float(t64["rel"].min(1).mean()),
        "rel_flow_share_last": float((t32["rel_flow"][:, -1] ** 2 / t32["rel"][:, -1] ** 2).mean()),
        "fnorm_over_flownorm": float((t32["fnorm"][:, -1] / t32["flow_norm"][:, -1]).mean()),
        "dflow_px_mean_last": float(dflow.mean()), "dflow_px_max_last": float(dflow.max()),
        "flow_share_near_integer": float(near_int.mean()),
        "dflow_near_integer_vs_rest": float(dflow[near_int].mean() / dflow[~near_int].mean()),
        **{f"flow_{k}": v for k, v in concentration(dflow).items()},
        **{f"h_{k}": v for k, v in concentration(dh).items()},
        "per_pair_rel_last": [float(v) for v in t32["rel"][:, -1]],
        "per_pair_rel_step20": [float(v) for v in t32["rel"][:, min(19, a.steps - 1)]],
        "per_pair_rho": rho,
        "per_pair_leading_vector_flow_share": flow_share,
        "ritz_abs": [float(v) for v in np.abs(ritz[:10])],
        "ritz": [[float(v.real), float(v.imag)] for v in ritz[:10]],
    }
    for k, v in summary.items():
        print(f"{k}: {v}", flush=True)
    base = os.path.join(a.out, "plateau")
    steps = np.arange(1, a.steps + 1)
    rows = [{"step": int(s), **{f"{k}_{tag}": float(traces[tag][k].mean(0)[s - 1])
                                for tag in traces for k in ("rel", "rel_h", "rel_flow")}}
            for s in steps]
    common.write_results(base, rows, summary=summary,
                         what="Picard steps on the trained operator: mean relative residual "
                              "(whole state, hidden part, flow part) per step, float32 and float64")
    from PIL import Image

    from jflow.plots import line_plot

    line_plot(base + "_trace.png", [
        {"x": steps.tolist(), "y": t32["rel"].mean(0).tolist(), "label": "float32", "marker": False},
        {"x": steps.tolist(), "y": t64["rel"].mean(0).tolist(), "label": "float64", "marker": False},
        {"x": steps.tolist(), "y": t32["rel_h"].mean(0).tolist(), "label": "float32, h part",
         "marker": False},
        {"x": steps.tolist(), "y": t32["rel_flow"].mean(0).tolist(), "label": "float32, flow part",
         "marker": False}],
        title=f"DEQ-RAFT-T Picard steps, Sintel {a.pairs} pairs", xlabel="step",
        ylabel="relative residual (mean over pairs)", logy=True)
    s = 8
    img = np.asarray(Image.fromarray(frames[0]).resize((dflow.shape[2] * s, dflow.shape[1] * s)))
    gap = np.full((dflow.shape[1] * s, 4, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([heat(dflow[0], s), gap, heat(dh[0], s), gap, img], 1)).save(
        base + "_map.png")
    print(f"wrote {base}.csv, .json, _trace.png, _map.png")
    return summary


if __name__ == "__main__":
    main()
