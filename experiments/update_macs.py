"""Multiply-adds per pixel of one update step: the official layout vs jflow's hoisted context.

    python experiments/update_macs.py [--configs=configs/raft.py,configs/deq_raft.py:H]

Counts, from the update block's convolution kernels (no compilation), the multiply-adds per
1/8-resolution pixel of one iteration / solver step as the official code computes it (the GRU
convolves the concatenation of hidden state, context and motion features every step; RAFT also
runs its mask head every iteration) and as jflow computes it (the context part of every GRU
convolution is loop-invariant and computed once; the mask head only for the returned flow). Their
ratio bounds the inference speed-up over the official code when both run the convolutions at the
same rate (which `profile_thunks.py` measured). Writes ``experiments/results/update_macs.{csv,json}``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

KERNEL_NAMES = ("kernel", "kernel_v")


def step_macs(spec: str) -> dict:
    import jax

    from jflow.config_files import load_config
    from jflow.models import model_from_config, variable_shapes

    shapes = variable_shapes(model_from_config(load_config(spec)), (64, 64))["params"]
    kernels = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = [str(getattr(k, "key", k)) for k in path]
        if "update_block" in names and names[-1] in KERNEL_NAMES:
            kernels.append((names, tuple(leaf.shape)))
    if any("aggregator" in n or "gma" in n for n, _ in kernels):
        raise ValueError(f"update_macs: {spec}: GMA's GRU input also holds the aggregated motion; "
                         "only RAFT-style update blocks are counted")
    motion = next(s[3] for n, s in kernels if "encoder" in n and n[-2] == "conv") + 2
    total = context = mask = 0
    for names, (kh, kw, cin, cout) in kernels:
        mac = kh * kw * cin * cout
        if any(n.startswith("mask") for n in names):
            mask += mac
        else:
            total += mac
        if any(n.startswith("gru") for n in names):
            context += kh * kw * (cin - cout - motion) * cout  # input = (hidden, context, motion)
    official = total + mask
    jflow = total - context
    return {"config": spec, "official_mac_per_px": official, "jflow_mac_per_px": jflow,
            "gru_context_mac_per_px": context, "mask_head_mac_per_px": mask,
            "ratio": official / jflow}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="configs/raft.py,configs/deq_raft.py:H")
    p.add_argument("--out", default=common.RESULTS)
    a = p.parse_args(argv)
    rows = [step_macs(spec) for spec in a.configs.split(",")]
    for r in rows:
        print(f"{r['config']:24s} official {r['official_mac_per_px'] / 1e6:6.2f} M  jflow "
              f"{r['jflow_mac_per_px'] / 1e6:6.2f} M  ratio {r['ratio']:.3f}")
    common.write_results(os.path.join(a.out, "update_macs"), rows,
                         what="multiply-adds per 1/8-resolution pixel of one update step")
    return rows


if __name__ == "__main__":
    main()
