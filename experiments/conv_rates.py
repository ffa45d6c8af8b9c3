"""Convolution throughput of XLA:CPU (what jflow runs) vs PyTorch (what the official code runs).

    python experiments/conv_rates.py --torch_python=/path/to/torch-env/bin/python \\
        [--threads=2 --repeats=7 --rounds=3 --out=experiments/results/conv_rates]

The 3x3 convolutions that dominate the encoders and update blocks (SEA-RAFT's ResNet stages at
432x1024 for both frames: 64 channels at 1/2, 128 at 1/4, 256 at 1/8; RAFT's GRU input at 1/8),
float32, stride 1, padding 1: ``jax.lax.conv_general_dilated`` (NHWC, as ``jflow.models.layers``)
jit-compiled, and ``torch.nn.functional.conv2d`` (NCHW, ``no_grad``, ``set_num_threads``) in a
subprocess of ``--torch_python``. Both are pinned to the first ``--threads`` CPUs (the
subprocess inherits the pinning); the two sides
alternate ``--rounds`` times, each timing every shape ``--repeats`` times (medians). Per shape:
ms and GFLOP/s (2 x multiply-adds / time) of each side and their ratio.

When both sides convolve at the same rate, a model that is mostly these convolutions cannot be
much faster than the official code without doing fewer multiply-adds; ``jflow.benchmark``'s
achieved GFLOP/s for the model, set against these rates, shows how close jflow is to that bound
on the CPU at hand (``host_cpu`` is recorded: the rates differ between CPUs). Writes
``--out``.csv/.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
# (label, batch, height, width, in channels, out channels)
SHAPES = (("SEA-RAFT layer1 (1/2)", 2, 216, 512, 64, 64),
          ("SEA-RAFT layer2 (1/4)", 2, 108, 256, 128, 128),
          ("SEA-RAFT layer3 (1/8)", 2, 54, 128, 256, 256),
          ("RAFT GRU-sized (1/8)", 1, 54, 128, 384, 256))

TORCH_SIDE = r"""
import json, sys, time, statistics
import torch
threads, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
shapes = json.loads(sys.argv[3])
torch.manual_seed(0)
data = [(torch.randn(b, ci, h, w), 0.05 * torch.randn(co, ci, 3, 3)) for _, b, h, w, ci, co in shapes]
print(json.dumps({"torch": torch.__version__}), flush=True)
with torch.no_grad():
    for line in sys.stdin:
        out = []
        for x, k in data:
            torch.nn.functional.conv2d(x, k, padding=1)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.nn.functional.conv2d(x, k, padding=1)
                ts.append(1e3 * (time.perf_counter() - t0))
            out.append(statistics.median(ts))
        print(json.dumps(out), flush=True)
"""


def gflop(shape) -> float:
    _, b, h, w, ci, co = shape
    return 2.0 * b * h * w * 9 * ci * co / 1e9


def jax_side(repeats: int):
    """A function timing every shape once (median of ``repeats``), after compiling each."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
    rng = np.random.default_rng(0)
    data = [(jnp.asarray(rng.standard_normal((b, h, w, ci), np.float32)),
             jnp.asarray(0.05 * rng.standard_normal((3, 3, ci, co), np.float32)))
            for _, b, h, w, ci, co in SHAPES]
    for x, k in data:
        conv(x, k).block_until_ready()

    def run() -> list[float]:
        out = []
        for x, k in data:
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                conv(x, k).block_until_ready()
                ts.append(1e3 * (time.perf_counter() - t0))
            out.append(statistics.median(ts))
        return out

    return run


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--torch_python", required=True, help="a Python with torch installed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(EXPERIMENTS, "results", "conv_rates"))
    a = p.parse_args(argv)
    sys.path.insert(0, EXPERIMENTS)
    import common
    from vs_torch import pin_threads

    cpus = pin_threads(a.threads)  # inherited by the torch subprocess
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from jflow.benchmark import host_cpu

    torch_proc = subprocess.Popen(
        [a.torch_python, "-c", TORCH_SIDE, str(a.threads), str(a.repeats), json.dumps(SHAPES)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(torch_proc.stdout.readline())
    run_jax = jax_side(a.repeats)
    jax_ms, torch_ms = [], []
    for _ in range(a.rounds):  # A B A B
        jax_ms.append(run_jax())
        torch_proc.stdin.write("go\n")
        torch_proc.stdin.flush()
        torch_ms.append(json.loads(torch_proc.stdout.readline()))
    torch_proc.stdin.close()
    torch_proc.wait()
    rows = []
    for i, shape in enumerate(SHAPES):
        label, b, h, w, ci, co = shape
        j = statistics.median(r[i] for r in jax_ms)
        t = statistics.median(r[i] for r in torch_ms)
        rows.append({"conv": label, "shape": f"{b}x{h}x{w}x{ci}->{co}", "gflop": gflop(shape),
                     "xla_ms": j, "torch_ms": t, "xla_gflops_per_s": gflop(shape) / j * 1e3,
                     "torch_gflops_per_s": gflop(shape) / t * 1e3, "torch_over_xla": t / j})
        print(f"{label:24s} {rows[-1]['shape']:22s} XLA {j:7.1f} ms "
              f"({rows[-1]['xla_gflops_per_s']:5.0f} GFLOP/s)  torch {t:7.1f} ms "
              f"({rows[-1]['torch_gflops_per_s']:5.0f} GFLOP/s)  torch/XLA {t / j:.2f}")
    common.write_results(a.out, rows, cpus=cpus, host_cpu=host_cpu(), torch=info["torch"],
                         threads=a.threads, load=os.getloadavg(),
                         note="3x3 float32 convolutions, medians; torch_over_xla > 1: XLA faster")
    print(f"wrote {a.out}.csv, .json")
    return rows


if __name__ == "__main__":
    main()
