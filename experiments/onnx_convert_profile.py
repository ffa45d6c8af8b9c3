"""Where ``jflow.export_onnx``'s conversion time goes, with and without ``jflow.onnx_converter``.

::

    python experiments/onnx_convert_profile.py --config=configs/raft.py:small \\
        --shape='1, 128, 256' --iters 2 4 8 [--plain] [--alternate] [--output=FILE.json]

Converts the config's model (random weights) to ONNX at ``--shape`` for each ``--iters`` and
prints the seconds of each stage: jflow's jaxpr rewrite, jax2onnx's trace, lowering and graph
optimizer (per optimizer pass over 0.5 s), the initializer merge and the onnxruntime check, and
the node count. ``--plain``: jax2onnx's own conversion time (``converting(linear=False)``);
``--alternate``: both, alternately (linear, plain) per ``--iters``. Needs the extra jflow[onnx].
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import time
import warnings


@contextlib.contextmanager
def _timed(module, attr: str, label: str, totals: dict):
    original = getattr(module, attr)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            key = label if label else args[0].name  # optimizer passes: by name
            totals[key] += time.perf_counter() - t0

    setattr(module, attr, wrapper)
    try:
        yield
    finally:
        setattr(module, attr, original)


def convert(config, variables, shape: str, iters: int, linear: bool) -> dict:
    import jax2onnx.converter.conversion_api as api
    import jax2onnx.converter.ir_optimizations as opt
    import jax2onnx.user_interface as ui
    import onnx

    import jflow.export_onnx as eo
    from jflow.onnx_converter import converting

    stages: dict = collections.defaultdict(float)
    passes: dict = collections.defaultdict(float)
    with contextlib.ExitStack() as stack:
        for module, attr, label in [
                (eo, "rewrite", "rewrite"), (api, "_trace_to_jaxpr", "jax2onnx_trace"),
                (api, "_lower_jaxpr_equations", "jax2onnx_lower"),
                (api, "_optimize_graph_with_failure_policy", "jax2onnx_optimize"),
                (ui, "postprocess_ir_model", "jax2onnx_postprocess"),
                (eo, "merge_identical_initializers", "merge_initializers"),
                (eo, "_verify", "onnxruntime_check")]:
            stack.enter_context(_timed(module, attr, label, stages))
        stack.enter_context(_timed(opt, "_run_top_level_optimizer_pass", "", passes))
        original = eo.converting
        eo.converting = functools.partial(converting, linear=linear)
        stack.callback(setattr, eo, "converting", original)
        t0 = time.perf_counter()
        artifact = eo.export_onnx(config, variables, iters=iters, shape=shape)
        total = time.perf_counter() - t0
    nodes = len(onnx.load_from_string(artifact.model_bytes).graph.node)
    return {"iters": iters, "linear": linear, "total_s": total, "nodes": nodes,
            "size_mib": len(artifact.model_bytes) / 2**20,
            "check_max_abs_diff_px": artifact.meta["verified"]["max_abs_diff_px"],
            **{f"{k}_s": v for k, v in stages.items()},
            "optimizer_passes_s": {k: round(v, 2) for k, v in passes.items() if v > 0.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--shape", default="1, 128, 256")
    parser.add_argument("--iters", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--alternate", action="store_true")
    parser.add_argument("--output")
    args = parser.parse_args()

    from jflow.config_files import load_config
    from jflow.models import model_from_config, random_variables

    config = load_config(args.config.removeprefix("configs/"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variables = random_variables(model_from_config(config), 0)
    from jax2onnx.plugins import plugin_system

    if hasattr(plugin_system, "import_all_plugins"):  # once, outside the timed conversions
        plugin_system.import_all_plugins()
    modes = [True, False] if args.alternate else [not args.plain]
    rows = []
    for iters in args.iters:
        for linear in modes:
            row = convert(config, variables, args.shape, iters, linear)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"config": args.config, "shape": args.shape, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
