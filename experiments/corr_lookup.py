"""On-the-fly correlation against all-pairs: the time of one lookup, and how often the tiles fit.

    python experiments/corr_lookup.py [--size=432x1024 --samples=20 --rounds=7 --threads=2 \\
        --memory_sizes=1080x1920,2160x3840 --out=experiments/results/corr_lookup]

RAFT's correlation at 1/8 of ``--size`` (random 256-channel feature maps, 4 levels, radius 4),
float32, jit-compiled, pinned to the first ``--threads`` CPUs. Coordinates: the 1/8 grid plus
the ground-truth flow (sampled at the 1/8 pixel centres, divided by 8) of synthetic pairs of
``--size`` (``jflow.data.synthetic``: layers that translate by up to a quarter of the shorter
side, rotate and scale, so tiles straddle motion boundaries).

* Time, one process, the four functions alternating for ``--rounds`` rounds (medians) on the
  first sample: the all-pairs pyramid (built once per forward), an all-pairs lookup, an
  on-the-fly lookup (jflow's tiled matrix products) and an on-the-fly lookup by per-offset
  gathers (its fallback; jflow's on-the-fly before the tiles). Also per forward with ``--iters``
  lookups. The values are checked first: all three lookups agree.
* Fit, over ``--samples`` pairs: the fraction whose every tiled level fits with 0, 1 or 2
  (jflow's default) extra passes, i.e. needs no fallback to the gathers.
* Memory at ``--memory_sizes`` (compiled on shapes only, nothing allocated): XLA's temp memory
  of one correlation (build and lookup) of each kind, and of its gradient w.r.t. both feature
  maps and the coordinates.

Writes ``--out``.csv/.json and ``--out``.png (time per forward). The model-level comparison is
``python -m jflow.benchmark --compare``, whose command the README gives.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXPERIMENTS)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="432x1024", help="image HxW (features at 1/8)")
    p.add_argument("--samples", type=int, default=20, help="synthetic pairs for the fit table")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=12, help="lookups per forward (RAFT: 12)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory_sizes", default="1080x1920,2160x3840",
                   help="image sizes for the memory table ('' for none)")
    p.add_argument("--out", default=os.path.join(EXPERIMENTS, "results", "corr_lookup"))
    a = p.parse_args(argv)
    from vs_torch import pin_threads

    cpus = pin_threads(a.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    import common
    from jflow import plots
    from jflow.benchmark import host_cpu
    from jflow.data.synthetic import SyntheticFlow
    from jflow.models import corr

    height, width = (int(v) for v in a.size.split("x"))
    h, w = height // 8, width // 8
    rng = np.random.default_rng(0)
    f1, f2 = (jnp.asarray(rng.standard_normal((1, h, w, 256)), jnp.float32) for _ in range(2))
    pairs = SyntheticFlow(a.samples, height, width, seed=3)
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h), indexing="xy"), -1)[None]

    def coords(i):
        return jnp.asarray(grid + pairs[i]["flow"][4::8, 4::8][:h, :w] / 8.0, jnp.float32)

    build = jax.jit(lambda x, y: corr.build_corr(x, y, kind="all_pairs")["pyramid"])
    look = jax.jit(lambda s, c: corr.lookup(s, c))
    pyramid = {"pyramid": build(f1, f2)}
    otf = jax.jit(lambda x, y: corr.build_corr(x, y, kind="on_the_fly"))(f1, f2)
    no_tiles = {"fmap1": otf["fmap1"], "fmap2": otf["fmap2"]}  # the state symbolic sizes get
    c0 = coords(0)
    runs = {"all-pairs pyramid": (build, (f1, f2)), "all-pairs lookup": (look, (pyramid, c0)),
            "on-the-fly lookup (tiles)": (look, (otf, c0)),
            "on-the-fly lookup (gathers)": (look, (no_tiles, c0))}
    ref = look(pyramid, c0)
    diff = {k: float(jnp.max(jnp.abs(runs[k][0](*runs[k][1]) - ref)))
            for k in ("on-the-fly lookup (tiles)", "on-the-fly lookup (gathers)")}
    print("max |lookup - all-pairs lookup|:", diff, "(max |value|", float(jnp.max(jnp.abs(ref))),
          ")")
    ms = {k: [] for k in runs}
    for _ in range(a.rounds):  # A B C D A B C D
        for k, (fn, args) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ms[k].append(1e3 * (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in ms.items()}
    forward = {"all-pairs": med["all-pairs pyramid"] + a.iters * med["all-pairs lookup"],
               "on-the-fly (tiles)": a.iters * med["on-the-fly lookup (tiles)"],
               "on-the-fly (gathers)": a.iters * med["on-the-fly lookup (gathers)"]}
    rows = [{"what": k, "ms": v} for k, v in med.items()]
    rows += [{"what": f"per forward, {a.iters} lookups: {k}", "ms": v,
              "ratio_to_all_pairs": v / forward["all-pairs"]} for k, v in forward.items()]
    for r in rows:
        print(f"{r['ms']:9.1f} ms  {r['what']}"
              + (f"  ({r['ratio_to_all_pairs']:.2f}x all-pairs)" if "ratio_to_all_pairs" in r
                 else ""))

    tiled = [lvl for lvl, f in enumerate(otf["fmap2"])
             if f.shape[1] * f.shape[2] > 2 * corr.tile_region(4, lvl) ** 2]
    fits = {n: jax.jit(lambda s, c, n=n: jnp.stack([corr._tiled_level(
        s["tiles1"], s["fmap2"][lvl], c / 2**lvl, 4, corr.tile_region(4, lvl), n)[1]
        for lvl in tiled])) for n in (0, 1, corr.EXTRA_PASSES)}
    fit = {n: [] for n in fits}
    for i in range(a.samples):
        c = coords(i)
        for n, fn in fits.items():
            fit[n].append(np.asarray(fn(otf, c)))
    for n, v in fit.items():
        v = np.array(v)
        rows.append({"what": f"fit: {n} extra passes", "samples_without_fallback":
                     float(v.all(axis=1).mean()), "per_tiled_level": v.mean(axis=0).tolist()})
        print(f"{n} extra passes: {v.all(axis=1).mean():.2f} of {a.samples} samples need no "
              f"fallback (per tiled level {tiled}: {v.mean(axis=0).round(2).tolist()})")
    for size in filter(None, a.memory_sizes.split(",")):
        mh, mw = (int(v) // 8 for v in size.split("x"))
        spec = [jax.ShapeDtypeStruct((1, mh, mw, 256), jnp.float32)] * 2 + [
            jax.ShapeDtypeStruct((1, mh, mw, 2), jnp.float32)]
        for kind in corr.CORR_KINDS:
            def fn(x, y, c, kind=kind):
                return corr.lookup(corr.build_corr(x, y, kind=kind), c)

            def loss(x, y, c, fn=fn):
                return jnp.sum(fn(x, y, c))

            mib = {name: f.lower(*spec).compile().memory_analysis().temp_size_in_bytes / 2**20
                   for name, f in (("temp_mib", jax.jit(fn)),
                                   ("grad_temp_mib", jax.jit(jax.grad(loss, (0, 1, 2)))))}
            rows.append({"what": f"memory: {kind} at {size}", **mib})
            print(f"{size} {kind}: temp {mib['temp_mib']:,.0f} MiB, gradient "
                  f"{mib['grad_temp_mib']:,.0f} MiB")
    common.write_results(a.out, rows, size=a.size, iters=a.iters, threads=a.threads, cpus=cpus,
                         host_cpu=host_cpu(), load=os.getloadavg(), max_abs_diff=diff,
                         tiled_levels=tiled, samples=a.samples)
    plots.bar_plot(a.out + ".png", list(forward), list(forward.values()),
                   title=f"correlation per forward, {a.iters} lookups, {a.size}", ylabel="ms")
    print(f"wrote {a.out}.csv, .json, .png")
    return rows


if __name__ == "__main__":
    main()
