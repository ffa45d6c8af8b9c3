"""Speed and memory of a model with random weights: ``python -m jflow.benchmark``.

::

    python -m jflow.benchmark --config=configs/deq_raft.py:H --height=440 --width=1024 \\
        --iters=60 --mode=infer --repeats=5 --output=deq_h.json

Builds the model from the config (random weights, nothing is downloaded), compiles the forward
(``--mode=infer``) or the training step's forward + backward (``--mode=train``: the sequence /
fixed-point correction loss against zero flow, gradients w.r.t. the parameters) once, reports the
compile time separately, and times the median of ``--repeats`` runs with ``block_until_ready``.
Memory is XLA's buffer assignment of the compiled program (``memory_analysis()``: temporaries,
arguments, outputs) and, on accelerators, ``device.memory_stats()['peak_bytes_in_use']``.

The helpers (:func:`step_fn`, :func:`abstract_inputs`, :func:`compiled_memory`) are shared with
``experiments/memory.py``, which compiles on ``ShapeDtypeStruct`` inputs without running.
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jflow.errors import InputError

PyTree = Any
MIB = float(1 << 20)
CSV_COLUMNS = ("Model", "Params", "InputH", "InputW", "Batch", "Mode", "Iters", "Time(ms)",
               "Memory(MiB)")
MODES = ("infer", "train")


def model_label(config) -> str:
    """``deq_raft-H``, ``raft``, ``raft_small``...: the model name and, for DEQ models, its size."""
    name = str(config.model.name)
    from jflow.models import is_deq

    return f"{name}-{config.model.size}" if is_deq(config) else name


def build(config) -> Any:
    """The Flax module of ``config.model`` (and ``config.deq`` for DEQ models)."""
    from jflow.models import model_from_config

    return model_from_config(config)


def step_fn(model, mode: str, iters: int | None = None, gamma: float = 0.8) -> Callable:
    """``f(variables, image1, image2)``: the forward pass (``infer``: returns the flow and the
    solver stats) or one training step's loss and parameter gradients (``train``)."""
    check_mode(mode)
    if mode == "infer":
        def infer(variables, image1, image2):
            out = model.apply(variables, image1, image2, train=False, iters=iters)
            return {"flow": out["flow"], "stats": out.get("stats") or {}}
        return infer

    from jflow import losses

    def loss_fn(params, batch_stats, image1, image2):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
            out, _ = model.apply(variables, image1, image2, train=True, iters=iters,
                                 mutable=["batch_stats"])
        else:
            out = model.apply(variables, image1, image2, train=True, iters=iters)
        if "pyramid" in out:  # LiteFlowNet2: multi-level loss on its per-level flows
            gt = jnp.zeros(out["flow"].shape, jnp.float32)
            valid = jnp.ones(out["flow"].shape[:-1], jnp.float32)
            weights = (losses.LFN_LEVEL_WEIGHTS + (losses.LFN_L2_WEIGHT,))[:len(out["pyramid"])]
            loss, _ = losses.multilevel_loss(out["pyramid"], out["flow"], gt, valid, weights)
            return loss
        preds = out["predictions"]
        gt = jnp.zeros(preds.shape[1:], jnp.float32)
        valid = jnp.ones(preds.shape[1:-1], jnp.float32)
        loss, _ = losses.sequence_loss(preds, gt, valid, gamma)
        return loss

    def train(variables, image1, image2):
        grad = jax.value_and_grad(loss_fn)
        loss, grads = grad(variables["params"], variables.get("batch_stats") or {}, image1, image2)
        return {"loss": loss, "grads": grads}
    return train


def abstract_inputs(model, height: int, width: int, batch: int = 1) -> tuple:
    """``(variables, image1, image2)`` as ShapeDtypeStructs: lower and compile without data."""
    from jflow.models import variable_shapes

    check_size(height, width, batch, model)
    img = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
    return dict(variable_shapes(model)), img, img


def check_size(height: int, width: int, batch: int, model=None) -> None:
    """Positive sizes that ``model`` takes unpadded (``jflow.models.input_padding``; 8 if None)."""
    from jflow.models import input_padding

    multiple = 8 if model is None else input_padding(model)[0]
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise InputError(f"jflow.benchmark: --height/--width must be positive multiples of "
                         f"{multiple} for this model, got {height}x{width}")
    if batch < 1:
        raise InputError(f"jflow.benchmark: --batch must be >= 1, got {batch}")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InputError(f"jflow.benchmark: --mode must be one of {MODES}, got {mode!r}")


def compiled_memory(compiled) -> dict[str, float]:
    """XLA's memory analysis of a compiled program in MiB (``temp``, ``argument``, ``output``,
    ``alias``, ``total`` = temp + argument + output - alias); empty when the backend has none."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    get = lambda k: float(getattr(analysis, f"{k}_size_in_bytes", 0) or 0) / MIB  # noqa: E731
    out = {k: get(k) for k in ("temp", "argument", "output", "alias", "generated_code")}
    out["total"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
    return out


def device_peak_mib() -> float | None:
    """``peak_bytes_in_use`` of the first device in MiB (accelerators), else None."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001  (CPU backends may raise or return None)
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / MIB


def random_images(height: int, width: int, batch: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """Two random (B, H, W, 3) float32 images in 0..255, the second a shifted copy of the first."""
    rng = np.random.default_rng(seed)
    im1 = rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32)
    im2 = np.roll(im1, (2, 3), axis=(1, 2))
    return jnp.asarray(im1), jnp.asarray(im2)


def benchmark(config, height: int, width: int, *, batch: int = 1, iters: int | None = None,
              mode: str = "infer", repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Compiles and times one model; returns the JSON record (see the module docstring)."""
    from jflow.models import count_params, random_variables

    check_mode(mode)
    if repeats < 1:
        raise InputError(f"jflow.benchmark: --repeats must be >= 1, got {repeats}")
    if iters is not None and iters < 1:
        raise InputError(f"jflow.benchmark: --iters must be >= 1, got {iters}")
    model = build(config)
    check_size(height, width, batch, model)
    variables = random_variables(model, seed=seed)
    image1, image2 = random_images(height, width, batch, seed)
    fn = jax.jit(step_fn(model, mode, iters))

    t0 = time.perf_counter()
    lowered = fn.lower(variables, image1, image2)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    memory = compiled_memory(compiled)

    out = jax.block_until_ready(compiled(variables, image1, image2))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(variables, image1, image2))
        times.append((time.perf_counter() - t0) * 1e3)

    record: dict[str, Any] = {
        "model": model_label(config), "params": count_params(variables), "height": height,
        "width": width, "batch": batch, "mode": mode, "iters": iters,
        "repeats": repeats, "time_ms": statistics.median(times), "times_ms": times,
        "compile_s": compile_s, "memory_mib": memory, "device_peak_mib": device_peak_mib(),
        "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
    }
    if mode == "infer" and out.get("stats"):
        record["solver_nstep"] = float(np.mean(np.asarray(out["stats"]["nstep"])))
    return record


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a ptlflow-style table row (memory: device peak if known, else XLA total)."""
    mem = record["device_peak_mib"]
    if mem is None:
        mem = record["memory_mib"].get("total", float("nan"))
    return {"Model": record["model"], "Params": record["params"], "InputH": record["height"],
            "InputW": record["width"], "Batch": record["batch"], "Mode": record["mode"],
            "Iters": "" if record["iters"] is None else record["iters"],
            "Time(ms)": f"{record['time_ms']:.2f}", "Memory(MiB)": f"{mem:.1f}"}


def format_csv(records: list[dict[str, Any]], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for r in records:
        writer.writerow(csv_row(r))
    return buf.getvalue()


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    if f.format == "onnx":
        from jflow.export_onnx import INSTALL_HINT, onnx_available

        if f.mode != "infer":
            raise InputError("jflow.benchmark: --format=onnx times inference only (--mode=infer)")
        if not onnx_available():
            raise InputError(f"jflow.benchmark: {INSTALL_HINT}")
    record = benchmark(f.config, f.height, f.width, batch=f.batch, iters=f.iters, mode=f.mode,
                       repeats=f.repeats, seed=f.seed)
    if f.format == "onnx":  # the same model, weights and images in onnxruntime
        from jflow.export_onnx import benchmark_onnx

        record.update(benchmark_onnx(f.config, f.height, f.width, batch=f.batch, iters=f.iters,
                                     repeats=f.repeats, seed=f.seed))
    print(format_csv([record]), end="")
    print(f"compile {record['compile_s']:.1f} s; XLA memory (MiB): "
          + ", ".join(f"{k} {v:.1f}" for k, v in record["memory_mib"].items()))
    if "onnx_time_ms" in record:
        print(f"onnxruntime {record['onnx_time_ms']:.2f} ms (jit {record['time_ms']:.2f} ms); "
              f"conversion {record['onnx_convert_s']:.1f} s, max |flow diff| "
              f"{record['onnx_max_abs_diff_px']:.2g} px")
    if f.output:
        os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
        with open(f.output, "w") as fh:
            json.dump(record, fh, indent=2)
        print(f"wrote {f.output}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "model config, e.g. configs/raft.py:small",
                                    lock_config=False)
    flags.DEFINE_integer("height", 440, "input height (a multiple of the model's padding, 8 for RAFT)")
    flags.DEFINE_integer("width", 1024, "input width (a multiple of the model's padding)")
    flags.DEFINE_integer("batch", 1, "batch size")
    flags.DEFINE_integer("iters", None, "update iterations (recurrent) / solver steps (DEQ); "
                         "default: the model's")
    flags.DEFINE_enum("mode", "infer", list(MODES), "forward only, or forward + backward")
    flags.DEFINE_integer("repeats", 5, "timed runs (the median is reported)")
    flags.DEFINE_integer("seed", 0, "random weights and images")
    flags.DEFINE_enum("format", "jit", ["jit", "onnx"], "onnx: also convert the model to ONNX at "
                      "this size and time it in onnxruntime beside the jit (extra jflow[onnx])")
    flags.DEFINE_string("output", None, "JSON file for the full record")
    flags.mark_flag_as_required("config")


def run() -> None:
    """Console entry point ``jflow-benchmark`` (same as ``python -m jflow.benchmark``)."""
    from jflow.cli import run_app

    run_app(main, _define_flags)


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so that the error classes raised
    # inside jflow are the ones the friendly-error handler catches.
    from jflow.benchmark import run as _run

    _run()
