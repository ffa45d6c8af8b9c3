"""The PyTorch side of ``vs_torch.py``: runs an official model in a torch environment.

Started by ``vs_torch.py`` with the torch interpreter (never imported by jflow; torch is not a
jflow dependency)::

    TORCH_PYTHON vs_torch_worker.py --model=raft --official=PATH --work=DIR --iters=12 --threads=2

Builds the official model as ``tools/fidelity/make_golden.py`` does (RAFT, DEQ-Flow, SEA-RAFT) or
from the DIP / LiteFlowNet2 reference code, fills it with the seeded weights of
``tests/golden_weights.py`` (DIP: ``tests/dip_official.py``), saves them to ``DIR/weights.pth``
(the parent converts them with ``jflow.convert``), reads ``DIR/images.npz`` (uint8 RGB (1, H, W, 3)
``image1``, ``image2``) and prints one JSON line ``{"ready": ...}``. Then it answers commands on
stdin, one JSON line each: ``flow`` (writes ``DIR/torch_flow.npy``, (H, W, 2)), ``time`` (one
forward under ``no_grad``: ``{"ms": wall, "cpu_ms": process CPU}``), ``flops`` (one forward under
``torch.utils.flop_counter.FlopCounterMode``: GFLOP of convolutions and of matrix products,
2 per multiply-add), ``quit``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools", "fidelity"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import make_golden as mg  # noqa: E402
from golden_weights import seeded_state_dict  # noqa: E402

# model: (make_golden family, make_golden name, constructor options)
GOLDEN_FAMILY = {
    "raft": ("raft", "raft", dict(small=False)),
    "raft_small": ("raft", "raft_small", dict(small=True)),
    "deq_raft_h": ("deq_flow", "deq_flow_h", dict(size_flag="--huge")),
    "deq_raft_b": ("deq_flow", "deq_flow_b", dict(size_flag=None)),
    "sea_raft_s": ("sea_raft", "sea_raft_s", dict(eval_config="sintel-S")),
    "sea_raft_m": ("sea_raft", "sea_raft_m", dict(eval_config="sintel-M")),
    "sea_raft_l": ("sea_raft", "sea_raft_l", dict(eval_config="sintel-L")),
}


def _seeded(model) -> dict:
    tensors, aliases = mg.tensor_table(model)
    return seeded_state_dict([(k, s) for k, s, _ in tensors], mg.SEED,
                             dtypes={k: d for k, _, d in tensors}, aliases=aliases)


def build(name: str, official: str, iters: int):
    """(model in eval mode with seeded weights, forward(im1, im2) -> (1, 2, H, W), state dict)."""
    import torch

    if name in GOLDEN_FAMILY:
        family, golden_name, opts = GOLDEN_FAMILY[name]
        mg.RAFT_ITERS = mg.SEA_RAFT_ITERS = mg.DEQ_STEPS = iters
        model, forward, _, _ = mg.build(golden_name, family, opts, {family: official})
        state = _seeded(model)

        def run(m, a, b):
            return forward(m, a, b)[1]
    elif name == "dip":
        from dip_official import official_dip_state_dict

        sys.path.insert(0, official)
        from nets.dip import DIP  # official

        model = DIP(max_offset=256, test_mode=True)
        state = {k[len("module."):]: v for k, v in official_dip_state_dict(0).items()}

        def run(m, a, b):  # the official checkpoints take BGR (cv2)
            return m(a.flip(1), b.flip(1), iters=iters)
    elif name.startswith("liteflownet2"):
        sys.path.insert(0, official)
        from ptl_harness import build as build_lfn2, seeded_state  # reference harness

        variant = name.split("_")[1] if "_" in name else "sintel"
        model = build_lfn2(variant)
        keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        state = seeded_state(keys, seed=1 if variant == "sintel" else 2)

        def run(m, a, b):
            out = m({"images": torch.stack([a, b], 1).flip(2) / 255.0})  # ptlflow: BGR, [0, 1]
            return out["flows"][:, 0]
    else:
        raise SystemExit(f"vs_torch_worker: unknown model {name!r}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
                          strict=True)
    return model.float().eval(), run, state


def count_flops(run, model, im1, im2) -> dict:
    """GFLOP of one forward by torch's FlopCounterMode: convolutions (``aten.convolution`` and
    its variants) apart from everything else it counts (matrix products: mm, bmm, addmm...)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(model, im1, im2)
    ops = counter.get_flop_counts().get("Global", {})
    conv = sum(v for k, v in ops.items() if "convolution" in str(k))
    total = sum(ops.values())
    return dict(conv_gflop=conv / 1e9, matmul_gflop=(total - conv) / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--official", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    mg.install_shims(torch)
    model, run, state = build(a.model, a.official, a.iters)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
               os.path.join(a.work, "weights.pth"))
    images = np.load(os.path.join(a.work, "images.npz"))
    im1, im2 = (torch.from_numpy(images[k]).permute(0, 3, 1, 2).float().contiguous()
                for k in ("image1", "image2"))
    reply = dict(ready=True, torch=torch.__version__, threads=torch.get_num_threads(),
                 python=sys.version.split()[0])
    print(json.dumps(reply), flush=True)
    idle0 = time.process_time()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "flops":
            print(json.dumps(count_flops(run, model, im1, im2)), flush=True)
            idle0 = time.process_time()
            continue
        idle_cpu_ms = 1e3 * (time.process_time() - idle0)  # burnt while jflow ran (spinning)
        with torch.no_grad():
            c0, t0 = time.process_time(), time.perf_counter()
            flow = run(model, im1, im2)
            ms, cpu_ms = 1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0)
        if cmd == "flow":
            np.save(os.path.join(a.work, "torch_flow.npy"),
                    flow[0].permute(1, 2, 0).numpy().astype(np.float32))
        print(json.dumps(dict(ms=ms, cpu_ms=cpu_ms, idle_cpu_ms=idle_cpu_ms)), flush=True)
        idle0 = time.process_time()


if __name__ == "__main__":
    main()
