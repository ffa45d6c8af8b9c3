"""Inference time of jflow vs the official PyTorch code, side by side on the same CPU.

    python experiments/vs_torch.py --torch_python=/path/to/torch-env/bin/python \\
        --raft=RAFT --deq_flow=DEQ_FLOW --dip=DIP --lfn2=LFN2_HARNESS --sea_raft=SEA_RAFT \\
        [--models=raft,raft_otf,deq_raft_h,dip,liteflownet2,sea_raft_s,sea_raft_m,sea_raft_l] \\
        [--sizes=368x496,432x1024 --threads=2 --repeats=8 --deq_steps=24]

``RAFT`` etc. are checkouts of the official code (princeton-vl/RAFT, locuslab/deq-flow,
zihuazheng/DIP, princeton-vl/SEA-RAFT; LFN2_HARNESS a folder with ``ptl_harness.py``: ptlflow's
LiteFlowNet2 with a pure-torch correlation); a model whose checkout is not given is skipped.
torch is never imported here: ``vs_torch_worker.py`` runs the official model in a subprocess of
``--torch_python`` and answers ``flow`` / ``time`` requests on a pipe.

Per model and size: the worker builds the official model with seeded weights (the fidelity tests'
recipe) and saves them as ``.pth``; they are converted with ``jflow.convert`` (``load_state_dict``,
the model's preprocessing, ``torch_to_flax``) and the jflow model is ``jax.jit``-compiled
(float32, batch 1, the official number of iterations: RAFT 12, DEQ-RAFT-H ``--deq_steps``
naive-solver steps, DIP 20, SEA-RAFT its evaluation config's). Both run on the same two Sintel demo
frames resized to the size, the flows are compared (``max_diff_px``: max |jflow - official| over
the full-resolution flow, both float32; ``agree`` when below ``--atol``), then A (jflow) and B
(torch, ``no_grad``) alternate ``--repeats`` times after one warm-up each; medians are reported.
Both processes are pinned to the first ``--threads`` CPUs (``sched_setaffinity``, inherited by
the worker, so neither uses more; torch also gets ``set_num_threads``). ``raft_otf`` is jflow's
on-the-fly correlation against the official all-pairs RAFT (the official alternative is
CUDA-only).

Writes ``experiments/results/vs_torch.{csv,json}`` (rows are merged by (model, size): a rerun with
``--models=raft`` replaces only RAFT's rows, so a long run can be resumed model by model) and
``vs_torch.png`` (speed-up per row). Each row also has both sides' GFLOP per forward,
convolutions and matrix products apart (``jflow_conv_gflop``: as the compiled program executes
them; ``torch_matmul_gflop``...), and ``flop_ratio``, torch's over jflow's: what the speed-up
would be at equal arithmetic rates. ``peak_gflops`` is the rate XLA's float32 matrix product
attains in the jflow process on the same CPUs (``jflow.benchmark.matmul_peak_gflops``);
``jflow_gflops_per_s`` / ``torch_gflops_per_s`` are the achieved rates and ``speedup_bound`` =
``torch_ms`` over jflow's GFLOP at that peak: no faster jflow code without less arithmetic gets
beyond it.
``jflow_idle_cpu_ms`` / ``torch_idle_cpu_ms``: the CPU time a
process used while the other one was timed (threads spinning after their work would slow the
other's run). The load average before and after each row is recorded, and the CPU
(``host_cpu``; ratios differ between CPUs): timings on a shared machine are noisy, rerun on a
quiet one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXPERIMENTS)
WORKER = os.path.join(EXPERIMENTS, "vs_torch_worker.py")

# name: (official checkout flag, jflow config, {config overrides}, iterations passed to both)
MODELS = {
    "raft": ("raft", "configs/raft.py", {}, 12),
    "raft_otf": ("raft", "configs/raft.py", {"model.corr": "on_the_fly"}, 12),
    "deq_raft_h": ("deq_flow", "configs/deq_raft.py:H", {}, None),  # --deq_steps
    "dip": ("dip", "configs/dip.py", {}, 20),
    "liteflownet2": ("lfn2", "configs/liteflownet2.py", {}, None),
    "sea_raft_s": ("sea_raft", "configs/sea_raft.py:S", {}, None),  # the config's eval_iters
    "sea_raft_m": ("sea_raft", "configs/sea_raft.py:M", {}, None),
    "sea_raft_l": ("sea_raft", "configs/sea_raft.py:L", {}, None),
}
WORKER_MODEL = {"raft_otf": "raft"}  # the official model another row compares against


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--torch_python", required=True, help="python of an environment with torch")
    for flag in ("raft", "deq_flow", "dip", "lfn2", "sea_raft"):
        p.add_argument(f"--{flag}", default=None, help=f"official {flag} checkout")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default="368x496,432x1024")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--deq_steps", type=int, default=24, help="DEQ naive-solver steps (both)")
    p.add_argument("--atol", type=float, default=1e-2, help="px, for the agree column")
    p.add_argument("--out", default=os.path.join(EXPERIMENTS, "results", "vs_torch"))
    a = p.parse_args(argv)
    unknown = sorted(set(a.models.split(",")) - set(MODELS))
    if unknown:
        p.error(f"unknown --models {unknown}; choose from {sorted(MODELS)}")
    return a


def pin_threads(threads: int) -> list[int]:
    """Pins this process (and its children) to the first ``threads`` CPUs; returns them."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    return cpus


def load_avg() -> float:
    return os.getloadavg()[0]


def demo_pair(h: int, w: int):
    """Sintel demo frames 16 and 17 resized to (h, w): uint8 (1, h, w, 3) each."""
    import numpy as np
    from PIL import Image

    demo = os.path.join(REPO, "jflow", "data", "demo")
    out = []
    for name in ("frame_0016.png", "frame_0017.png"):
        img = Image.open(os.path.join(demo, name)).convert("RGB").resize((w, h), Image.BILINEAR)
        out.append(np.asarray(img)[None])
    return out


class Worker:
    """The official model in a torch subprocess (``vs_torch_worker.py``)."""

    def __init__(self, a, name: str, official: str, work: str, iters: int):
        cmd = [a.torch_python, WORKER, f"--model={WORKER_MODEL.get(name, name)}",
               f"--official={official}", f"--work={work}", f"--iters={iters}",
               f"--threads={a.threads}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def jflow_model(name: str, weights: str, a):
    """(model, variables, iters) from the worker's ``.pth`` through jflow.convert's path."""
    from jflow import convert
    from jflow.config_files import load_config
    from jflow.models import model_from_config, variable_shapes

    _, spec, overrides, iters = MODELS[name]
    cfg = load_config(os.path.join(REPO, spec))
    for key, value in overrides.items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    if name == "deq_raft_h":
        iters = a.deq_steps
    elif iters is None and "eval_iters" in cfg.model:
        iters = int(cfg.model.eval_iters)
    model = model_from_config(cfg)
    state = convert.load_state_dict(weights)
    prep = convert.PREPROCESS.get(str(cfg.model.name))
    if prep is not None:
        state = prep(state, cfg, weights)
    variables = convert.torch_to_flax(state, variable_shapes(model), source=weights)
    variables = {k: v for k, v in variables.items() if v}
    return model, variables, iters


def flop_counts(compiled, iters: int, worker) -> dict:
    """GFLOP of one forward on each side, convolutions and matrix products apart: jflow's as
    executed (``jflow.flops.count_compiled_flops`` on the compiled program; a solver loop at
    its step limit), torch's by FlopCounterMode. ``flop_ratio``: torch's over jflow's, the
    speed-up equal arithmetic rates would give (``conv_flop_ratio``: convolutions alone)."""
    from jflow.flops import count_compiled_flops

    ours = count_compiled_flops(compiled, unknown_trips=iters)
    theirs = worker.ask("flops")
    row = dict(jflow_conv_gflop=ours["conv"] / 1e9, jflow_dot_gflop=ours["dot"] / 1e9,
               torch_conv_gflop=theirs["conv_gflop"], torch_matmul_gflop=theirs["matmul_gflop"])
    row["conv_flop_ratio"] = row["torch_conv_gflop"] / max(row["jflow_conv_gflop"], 1e-9)
    row["flop_ratio"] = ((row["torch_conv_gflop"] + row["torch_matmul_gflop"])
                         / max(row["jflow_conv_gflop"] + row["jflow_dot_gflop"], 1e-9))
    return row


def rates_and_bound(row: dict, peak_gflops: float) -> dict:
    """Both sides' achieved GFLOP/s, and ``speedup_bound``: the speed-up jflow would reach if all
    its executed products ran at ``peak_gflops`` (a speed-up goal above it needs less arithmetic,
    not faster code)."""
    ours = row["jflow_conv_gflop"] + row["jflow_dot_gflop"]
    theirs = row["torch_conv_gflop"] + row["torch_matmul_gflop"]
    return dict(peak_gflops=peak_gflops,
                jflow_gflops_per_s=ours / (row["jflow_ms"] / 1e3),
                torch_gflops_per_s=theirs / (row["torch_ms"] / 1e3),
                speedup_bound=row["torch_ms"] / (1e3 * ours / peak_gflops))


def measure(name: str, hw: tuple[int, int], official: str, a) -> dict:
    import jax
    import numpy as np

    from jflow.benchmark import host_cpu, matmul_peak_gflops

    h, w = hw
    row = dict(model=name, size=f"{h}x{w}", threads=a.threads, load_before=load_avg())
    with tempfile.TemporaryDirectory(prefix="vs_torch_") as work:
        im1, im2 = demo_pair(h, w)
        np.savez(os.path.join(work, "images.npz"), image1=im1, image2=im2)
        _, spec, _, iters = MODELS[name]
        if name == "deq_raft_h":
            iters = a.deq_steps
        if iters is None:  # the config's evaluation iterations, known only once it is loaded
            from jflow.config_files import load_config

            cfg = load_config(os.path.join(REPO, spec))
            iters = int(cfg.model.get("eval_iters", 0)) or 1
        worker = Worker(a, name, official, work, iters)
        try:
            model, variables, iters = jflow_model(name, os.path.join(work, "weights.pth"), a)
            fn = jax.jit(lambda v, x, y: model.apply(v, x, y, iters=iters)["flow"])
            x, y = (jax.device_put(np.asarray(i, np.float32)) for i in (im1, im2))
            t0 = time.perf_counter()
            compiled = fn.lower(variables, x, y).compile()
            row["jflow_compile_s"] = time.perf_counter() - t0
            flow = np.asarray(compiled(variables, x, y))[0]
            worker.ask("flow")
            ref = np.load(os.path.join(work, "torch_flow.npy"))
            diff = np.abs(flow - ref)
            row.update(iters=iters, max_diff_px=float(diff.max()), mean_diff_px=float(diff.mean()),
                       flow_mean_px=float(np.abs(ref).mean()),
                       jflow_flow_mean_px=float(np.abs(flow).mean()),
                       agree=bool(diff.max() < a.atol))
            row.update(flop_counts(compiled, iters, worker))
            jax_ms, jax_cpu, torch_ms, torch_cpu, jax_idle, torch_idle = [], [], [], [], [], []
            for _ in range(a.repeats):  # A B A B
                c0, t0 = time.process_time(), time.perf_counter()
                jax.block_until_ready(compiled(variables, x, y))
                jax_ms.append(1e3 * (time.perf_counter() - t0))
                jax_cpu.append(1e3 * (time.process_time() - c0))
                c0 = time.process_time()
                r = worker.ask("time")
                jax_idle.append(1e3 * (time.process_time() - c0))
                torch_ms.append(r["ms"])
                torch_cpu.append(r["cpu_ms"])
                torch_idle.append(r["idle_cpu_ms"])
            # *_idle_cpu_ms: CPU a process burnt while the other one was timed (its threads
            # spinning after their work), which the other's timing then competed with
            row.update(jflow_ms=statistics.median(jax_ms), torch_ms=statistics.median(torch_ms),
                       jflow_cpu_ms=statistics.median(jax_cpu),
                       torch_cpu_ms=statistics.median(torch_cpu),
                       jflow_idle_cpu_ms=statistics.median(jax_idle),
                       torch_idle_cpu_ms=statistics.median(torch_idle))
            row["speedup"] = row["torch_ms"] / row["jflow_ms"]
            row.update(rates_and_bound(row, matmul_peak_gflops()))
            row["torch"] = worker.info.get("torch")
        finally:
            worker.close()
    row.update(load_after=load_avg(), python=platform.python_version(), jax=jax.__version__,
               host_cpu=host_cpu())
    return row


def load_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get("rows", [])


def plot(path: str, rows: list[dict]) -> None:
    from jflow.plots import bar_plot

    rows = [r for r in rows if r.get("speedup")]
    if rows:
        bar_plot(path, [f"{r['model']} {r['size']}" for r in rows], [r["speedup"] for r in rows],
                 title="jflow speed-up over the official PyTorch code (CPU inference)",
                 ylabel="torch ms / jflow ms", reference=1.5,
                 marks=[r.get("speedup_bound") for r in rows],
                 marks_label="bound: jflow's arithmetic at the matrix product's rate")


def main(argv=None) -> None:
    a = parse_args(argv)
    cpus = pin_threads(a.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, EXPERIMENTS)
    import common

    rows = load_rows(a.out + ".json")
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    for name in a.models.split(","):
        official = getattr(a, MODELS[name][0])
        if not official:
            print(f"{name}: skipped (no --{MODELS[name][0]})", flush=True)
            continue
        for hw in sizes:
            row = measure(name, hw, official, a)
            print(json.dumps(row), flush=True)
            key = (row["model"], row["size"])
            rows = [r for r in rows if (r["model"], r["size"]) != key] + [row]
            common.write_results(a.out, rows, cpus=cpus, note=(
                "jflow (jax.jit, float32) vs the official PyTorch code (eager, no_grad), same "
                "seeded weights, same images, alternating A B A B, medians; speedup = torch_ms / "
                "jflow_ms"))
            plot(a.out + ".png", rows)


if __name__ == "__main__":
    main()
