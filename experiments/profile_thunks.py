"""Where a model's CPU inference time goes: XLA:CPU thunks of traced runs, summed per jax op.

    python experiments/profile_thunks.py --config=configs/raft.py --size=368x496 \\
        [--iters=12 --threads=2 --runs=3 --top=30]

Compiles ``model.apply(..., iters=)["flow"]`` (random weights, float32, batch 1, two shifted noise
images) with ``--xla_cpu_enable_xprof_traceme=true`` (one trace event per executed thunk; set
before jax starts), pins the process to the first ``--threads`` CPUs, traces ``--runs`` calls
under ``jax.profiler.trace`` and sums every thunk's duration per run, keyed by the jax op that
produced it (the HLO ``op_name`` without indices: layer path and primitive). Prints per op the
median over runs of its summed thunk time, its class (``conv``: convolutions and their library
fusions, ``dot``, ``loop``: XLA's own elementwise/gather fusions, ``other``) and the time it ran
while no other thunk did; then the totals per class. A loop body's thunks are counted at every
step. Thunk durations are wall times: on a loaded machine they include time the thread waited
for a core, so compare classes and ops within one run, and rerun quiet for absolute figures.
Writes ``experiments/results/profile_thunks_<config>_<size>.json``.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXPERIMENTS)
CONTROL_FLOW = ("while", "conditional", "call")  # their thunks enclose their bodies' thunks


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/raft.py", help="config file[:arg]")
    p.add_argument("--size", default="368x496", help="HxW, multiples of the model's padding")
    p.add_argument("--iters", type=int, default=None, help="iterations / solver steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    return p.parse_args(argv)


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (class, op key, opcode) from the compiled module's text."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(", line)
        if not m:
            continue
        name = re.search(r'op_name="([^"]*)"', line)
        key = re.sub(r"^jit\([^)]*\)/", "", name.group(1)) if name else m.group(2)
        kind = ("conv" if "conv_general_dilated" in key else "dot" if "dot_general" in key
                else "loop" if "kind=kLoop" in line or m.group(2) in ("concatenate", "copy")
                else "other")
        out[m.group(1)] = (kind, re.sub(r"\[\d+\]", "", key), m.group(2))
    return out


def thunk_times(trace: str, ops: dict) -> tuple[list[collections.Counter], list[collections.Counter]]:
    """Per traced run: summed thunk time per op key, and the part of it no other thunk overlapped."""
    events = json.load(gzip.open(trace))["traceEvents"]
    # execution is asynchronous: run i's thunks start between its dispatch and the next one's
    starts = sorted(e["ts"] for e in events
                    if e.get("name") == "CommonPjRtLoadedExecutable::ExecuteHelperOnSingleDevice")
    runs = list(zip(starts, starts[1:] + [float("inf")]))
    thunks = sorted((e["ts"], e["ts"] + e["dur"], e["args"]["hlo_op"]) for e in events
                    if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
                    and ops.get(e["args"]["hlo_op"], ("", "", ""))[2] not in CONTROL_FLOW)
    totals, solo = [], []
    for start, end in runs:
        mine = [t for t in thunks if start <= t[0] < end]
        total, alone = collections.Counter(), collections.Counter()
        for s, e, name in mine:
            total[ops.get(name, ("other", name, ""))[1]] += (e - s) / 1e3
        edges = sorted({x for s, e, _ in mine for x in (s, e)})
        for a, b in zip(edges, edges[1:]):  # intervals with exactly one thunk running
            active = [n for s, e, n in mine if s <= a and e >= b]
            if len(active) == 1:
                alone[ops.get(active[0], ("other", active[0], ""))[1]] += (b - a) / 1e3
        totals.append(total)
        solo.append(alone)
    return totals, solo


def main(argv=None) -> None:
    a = parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()
    sys.path.insert(0, REPO)
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, EXPERIMENTS)
    import common
    from jflow.config_files import load_config
    from jflow.models.registry import model_from_config, random_variables

    h, w = (int(v) for v in a.size.split("x"))
    model = model_from_config(load_config(os.path.join(REPO, a.config)))
    variables = random_variables(model, 0)
    image = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
    x, y = jnp.asarray(image), jnp.asarray(np.roll(image, 3, axis=2))
    fn = jax.jit(lambda v, i1, i2: model.apply(v, i1, i2, iters=a.iters)["flow"])
    compiled = fn.lower(variables, x, y).compile()
    ops = hlo_ops(compiled.as_text())
    for _ in range(2):
        jax.block_until_ready(compiled(variables, x, y))
    with tempfile.TemporaryDirectory(prefix="profile_thunks_") as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(a.runs):
                jax.block_until_ready(compiled(variables, x, y))
        trace = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        totals, solo = thunk_times(trace, ops)
    kinds = {key: kind for kind, key, _ in ops.values()}
    keys = set().union(*totals)
    rows = [dict(op=k, kind=kinds.get(k, "other"), ms=statistics.median(t[k] for t in totals),
                 alone_ms=statistics.median(s[k] for s in solo)) for k in keys]
    rows.sort(key=lambda r: -r["ms"])
    print(f"load {os.getloadavg()[0]:.1f}; per run: summed thunk time (ms), alone (ms), op")
    for r in rows[:a.top]:
        print(f"{r['ms']:9.1f} {r['alone_ms']:9.1f}  {r['kind']:5s} {r['op']}")
    by_kind = collections.Counter()
    for r in rows:
        by_kind[r["kind"]] += r["ms"]
    print("per class (ms):", {k: round(v, 1) for k, v in by_kind.most_common()})
    name = os.path.basename(a.config).replace(".py", "").replace(":", "_")
    common.write_results(os.path.join(common.RESULTS, f"profile_thunks_{name}_{a.size}"), rows,
                         load=os.getloadavg()[0], threads=a.threads, runs=a.runs,
                         by_kind=dict(by_kind))


if __name__ == "__main__":
    main()
