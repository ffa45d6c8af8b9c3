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
Work: ``gflops`` per call, the convolutions and matrix products the compiled program executes
(:func:`jflow.flops.count_compiled_flops`: after XLA removed unused and shared work, loops
multiplied by their trip count; a solver loop that stops on a tolerance by the solver's mean
steps, ``loop_trips``), the achieved ``gflops_per_s`` and ``peak_fraction`` of ``peak_gflops``:
``--peak_tflops`` if given, else the device's rated float32 peak where known (``PEAK_TFLOPS``),
else on a CPU the rate XLA's own float32 matrix product attains on it (``peak_source``:
``given``, ``rated``, ``matmul``; None for other accelerators). Kept beside it:
``jaxpr_gflops`` (every operation as written, loops at their limits: more than XLA runs, e.g.
RAFT's unused upsampling masks) and XLA's own ``cost_analysis()`` (``xla_gflops``, a loop body
counted once). ``iters`` is always the count that ran (the
model's default when ``--iters`` is not given; None for models without iterations).

Side by side: ``--compare=SPEC`` (repeatable; ``SPEC`` = ``file.py[:arg] [key=value ...]``, e.g.
``--compare="deq_raft.py:B,stage=chairs model.remat_encoder=True"``) compiles every config, then
times them alternately (A B C A B C ... ``--repeats`` rounds, so load changes hit all alike) and
prints each median with its ratio to the first.

The helpers (:func:`step_fn`, :func:`abstract_inputs`, :func:`compiled_memory`) are shared with
``experiments/memory.py``, which compiles on ``ShapeDtypeStruct`` inputs without running.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import statistics
import time
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jflow.errors import InputError

PyTree = Any
MIB = float(1 << 20)
CSV_COLUMNS = ("Model", "Params", "InputH", "InputW", "Batch", "Mode", "Iters", "Time(ms)",
               "Memory(MiB)", "GFLOPs", "GFLOP/s", "Peak%")
MODES = ("infer", "train")
# Dense float32 peak (TFLOP/s, no tensor cores / TF32) by a substring of ``device_kind``; the
# longest matching key wins. Other devices: --peak_tflops.
PEAK_TFLOPS = {"H100": 67.0, "H200": 67.0, "A100": 19.5, "V100": 15.7, "L4": 30.3, "A10": 31.2,
               "T4": 8.1, "RTX 4090": 82.6, "RTX 3090": 35.6}


def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The host CPU as ``/proc/cpuinfo`` names it, with its family/model numbers (a virtual
    machine often shows only "AMD EPYC"), whether it has AVX-512 and the CPUs this process may
    use, e.g. ``"AMD EPYC (family 25, model 17, avx512f, 2 CPUs)"``; ``"unknown"`` where that
    file is missing. CPU speed-ups depend on it: the same code's ratios differ between CPUs."""
    try:
        with open(cpuinfo) as fh:
            text = fh.read()
    except OSError:
        return "unknown"
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    extra = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"),
                                                          ("model", "model")) if key in fields]
    if "avx512f" in fields.get("flags", "").split():
        extra.append("avx512f")
    extra.append(f"{len(os.sched_getaffinity(0))} CPUs")
    return f"{fields.get('model name', 'unknown')} ({', '.join(extra)})"


def model_label(config) -> str:
    """``deq_raft-H``, ``raft``, ``raft_small``...: the model name and, for DEQ models, its size."""
    name = str(config.model.name)
    from jflow.models import is_deq

    return f"{name}-{config.model.size}" if is_deq(config) else name


def default_iters(model, mode: str) -> int | None:
    """The iteration count a model runs when none is given (DEQ: solver steps; None: no
    iterations, e.g. LiteFlowNet2)."""
    deq = getattr(model, "deq", None)
    if deq is not None:
        return int(deq.f_max_steps if mode == "train" else (model.eval_iters or deq.f_max_steps))
    if mode == "train":
        return getattr(model, "iters", None)
    it = getattr(model, "eval_iters", None)
    if it is None and type(model).__name__ == "SEARAFT":
        from jflow.models.sea_raft import SEA_RAFT_SIZES

        it = SEA_RAFT_SIZES[model.size][1]
    return None if it is None else int(it)


def peak_gflops(device_kind: str, override_tflops: float | None = None) -> float | None:
    """The device's float32 peak in GFLOP/s (``override_tflops`` wins), None if unknown."""
    if override_tflops:
        return float(override_tflops) * 1e3
    hits = [k for k in PEAK_TFLOPS if k.lower() in device_kind.lower()]
    return PEAK_TFLOPS[max(hits, key=len)] * 1e3 if hits else None


_MATMUL_PEAKS: dict[tuple[str, int], float] = {}


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of XLA's float32 ``(n, n) x (n, n)`` matrix product on the default device, the
    best of ``repeats`` timed calls (measured once per process and size): the rate the device
    attains on the densest work XLA gives it, a reference where no rated peak is known (CPUs)."""
    key = (str(jax.devices()[0].device_kind), n)
    if key not in _MATMUL_PEAKS:
        ka, kb = jax.random.split(jax.random.key(0))
        a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in (ka, kb))
        full = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # float32, no TF32
        product = jax.jit(full).lower(a, b).compile()
        jax.block_until_ready(product(a, b))
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            jax.block_until_ready(product(a, b))
            best = min(best, time.perf_counter() - t0)
        _MATMUL_PEAKS[key] = 2.0 * n ** 3 / best / 1e9
    return _MATMUL_PEAKS[key]


def reference_peak(device_kind: str, override_tflops: float | None = None,
                   backend: str | None = None) -> tuple[float | None, str | None]:
    """``(GFLOP/s, source)`` that ``peak_fraction`` divides by: ``--peak_tflops`` (``given``),
    the device's rated float32 peak (``rated``, ``PEAK_TFLOPS``), else on a CPU backend the
    measured matrix product (``matmul``, :func:`matmul_peak_gflops`); ``(None, None)`` for an
    accelerator without a rated peak (a small product says little about its peak)."""
    rated = peak_gflops(device_kind, override_tflops)
    if rated is not None:
        return rated, "given" if override_tflops else "rated"
    if (backend or jax.default_backend()) != "cpu":
        return None, None
    return matmul_peak_gflops(), "matmul"


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


def check_counts(repeats: int, iters: int | None) -> None:
    if repeats < 1:
        raise InputError(f"jflow.benchmark: --repeats must be >= 1, got {repeats}")
    if iters is not None and iters < 1:
        raise InputError(f"jflow.benchmark: --iters must be >= 1, got {iters}")


class Prepared:
    """One compiled model with its inputs and the static part of its record; ``run()`` times
    one call, ``finish()`` returns the record without the warm-up calls."""

    def __init__(self, config, height: int, width: int, *, batch: int = 1,
                 iters: int | None = None, mode: str = "infer", seed: int = 0):
        from jflow.flops import count_flops
        from jflow.models import count_params, random_variables

        check_mode(mode)
        check_counts(1, iters)
        model = build(config)
        check_size(height, width, batch, model)
        self.args = (random_variables(model, seed=seed), *random_images(height, width, batch, seed))
        fn = step_fn(model, mode, iters)
        t0 = time.perf_counter()
        self.compiled = jax.jit(fn).lower(*self.args).compile()
        compile_s = time.perf_counter() - t0
        xla = (self.compiled.cost_analysis() or {}).get("flops")
        self.record: dict[str, Any] = {
            "model": model_label(config), "params": count_params(self.args[0]),
            "height": height, "width": width, "batch": batch, "mode": mode,
            "iters": iters if iters is not None else default_iters(model, mode),
            "compile_s": compile_s, "memory_mib": compiled_memory(self.compiled),
            "jaxpr_gflops": count_flops(fn, *self.args) / 1e9,
            "xla_gflops": None if xla is None else float(xla) / 1e9,
            "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "host_cpu": host_cpu(),
        }
        self.times: list[float] = []
        self.out = None

    def run(self) -> float:
        t0 = time.perf_counter()
        self.out = jax.block_until_ready(self.compiled(*self.args))
        ms = (time.perf_counter() - t0) * 1e3
        self.times.append(ms)
        return ms

    def finish(self, peak_tflops: float | None = None, warmup: int = 1) -> dict[str, Any]:
        times = self.times[warmup:] or self.times
        rec = dict(self.record, repeats=len(times), time_ms=statistics.median(times),
                   times_ms=times, device_peak_mib=device_peak_mib())
        stats = (self.out or {}).get("stats") if rec["mode"] == "infer" else None
        if stats:
            rec["solver_nstep"] = float(np.mean(np.asarray(stats["nstep"])))
        rec.update(self.executed_gflops(rec.get("solver_nstep")))
        rec["gflops_per_s"] = rec["gflops"] / (rec["time_ms"] / 1e3)
        peak, rec["peak_source"] = reference_peak(rec["device"], peak_tflops, rec["backend"])
        rec["peak_gflops"] = peak
        rec["peak_fraction"] = None if peak is None else rec["gflops_per_s"] / peak
        return rec

    def executed_gflops(self, solver_nstep: float | None) -> dict[str, Any]:
        """Convolution + matrix-product GFLOP the program ran; a loop whose trip count XLA does
        not know (a solver stopping on a tolerance) at the solver's mean steps, else at the
        iteration count (an upper bound)."""
        from jflow.flops import count_compiled_flops

        trips = solver_nstep if solver_nstep is not None else (self.record["iters"] or 1)
        counts = count_compiled_flops(self.compiled, unknown_trips=trips)
        return {"gflops": (counts["conv"] + counts["dot"]) / 1e9,
                "loop_trips": trips if counts["unknown_loops"] else None}


def benchmark(config, height: int, width: int, *, batch: int = 1, iters: int | None = None,
              mode: str = "infer", repeats: int = 5, seed: int = 0,
              peak_tflops: float | None = None, warmup: int = 1) -> dict[str, Any]:
    """Compiles and times one model; returns the JSON record (see the module docstring)."""
    return side_by_side([("", config)], height, width, batch=batch, iters=iters, mode=mode,
                        repeats=repeats, seed=seed, peak_tflops=peak_tflops, warmup=warmup)[0]


def side_by_side(configs: list[tuple[str, Any]], height: int, width: int, *, batch: int = 1,
                 iters: int | None = None, mode: str = "infer", repeats: int = 5, seed: int = 0,
                 peak_tflops: float | None = None, warmup: int = 1) -> list[dict[str, Any]]:
    """``(label, config)`` pairs compiled first, then timed alternately (``warmup`` untimed
    rounds, then ``repeats`` rounds of A B C ...); each record gets ``label`` and ``ratio`` = its
    median time over the first config's."""
    check_mode(mode)
    check_counts(repeats, iters)
    if warmup < 0:
        raise InputError(f"jflow.benchmark: --warmup must be >= 0, got {warmup}")
    if not configs:
        raise InputError("jflow.benchmark: --compare needs at least one config")
    preps = [Prepared(c, height, width, batch=batch, iters=iters, mode=mode, seed=seed)
             for _, c in configs]
    for _ in range(repeats + warmup):
        for prep in preps:
            prep.run()
    records = [dict(p.finish(peak_tflops, warmup), label=label) for (label, _), p in zip(configs, preps)]
    for r in records:
        r["ratio"] = r["time_ms"] / records[0]["time_ms"]
    return records


def parse_compare(spec: str) -> tuple[str, Any]:
    """``"file.py[:arg] key=value ..."`` -> ``(spec, config)``: the file's config with the dotted
    keys set (values read as Python literals, else kept as strings; every key must exist, or be
    ``deq.<field>`` of a DEQ model's ``DEQConfig`` field the recipe leaves at its default, e.g.
    ``deq.unroll_impl=python``)."""
    import dataclasses

    from jflow.config_files import load_config
    from jflow.deq import DEQConfig
    from jflow.models import is_deq

    deq_fields = {f.name for f in dataclasses.fields(DEQConfig)}

    path, *overrides = spec.split() or [""]
    if not path:
        raise InputError("jflow.benchmark: --compare needs a config file, got an empty spec")
    config = load_config(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part] if sep and part in node else None
            if node is None:
                break
        default_deq = parents == ["deq"] and leaf in deq_fields and is_deq(config)
        if not sep or node is None or (leaf not in node and not default_deq):
            raise InputError(f"jflow.benchmark: --compare {spec!r}: {item!r} is not "
                             f"key=value with an existing config field")
        try:
            node[leaf] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            node[leaf] = raw
    return spec, config


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a ptlflow-style table row (memory: device peak if known, else XLA total)."""
    mem = record["device_peak_mib"]
    if mem is None:
        mem = record["memory_mib"].get("total", float("nan"))
    gflops, fraction = record.get("gflops"), record.get("peak_fraction")
    return {"Model": record["model"], "Params": record["params"], "InputH": record["height"],
            "InputW": record["width"], "Batch": record["batch"], "Mode": record["mode"],
            "Iters": "-" if record["iters"] is None else record["iters"],
            "Time(ms)": f"{record['time_ms']:.2f}", "Memory(MiB)": f"{mem:.1f}",
            "GFLOPs": "" if gflops is None else f"{gflops:.1f}",
            "GFLOP/s": "" if gflops is None else f"{record['gflops_per_s']:.1f}",
            "Peak%": "" if fraction is None else f"{100 * fraction:.2f}"}


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
    if f.compare:
        if f.format != "jit":
            raise InputError("jflow.benchmark: --compare times jit-compiled configs only")
        records = side_by_side([parse_compare(spec) for spec in f.compare], f.height, f.width,
                               batch=f.batch, iters=f.iters, mode=f.mode, repeats=f.repeats,
                               seed=f.seed, peak_tflops=f.peak_tflops, warmup=f.warmup)
        print(format_csv(records), end="")
        for r in records:
            print(f"{r['ratio']:6.3f}x  {r['time_ms']:10.1f} ms  {r['label']}")
        _write(f.output, records)
        return
    if f.config is None:
        raise InputError("jflow.benchmark: give --config (one model) or --compare (several)")
    if f.format == "onnx":
        from jflow.export_onnx import INSTALL_HINT, onnx_available

        if f.mode != "infer":
            raise InputError("jflow.benchmark: --format=onnx times inference only (--mode=infer)")
        if not onnx_available():
            raise InputError(f"jflow.benchmark: {INSTALL_HINT}")
    record = benchmark(f.config, f.height, f.width, batch=f.batch, iters=f.iters, mode=f.mode,
                       repeats=f.repeats, seed=f.seed, peak_tflops=f.peak_tflops,
                       warmup=f.warmup)
    if f.format == "onnx":  # the same model, weights and images in onnxruntime
        from jflow.export_onnx import benchmark_onnx

        record.update(benchmark_onnx(f.config, f.height, f.width, batch=f.batch, iters=f.iters,
                                     repeats=f.repeats, seed=f.seed))
    print(format_csv([record]), end="")
    print(f"compile {record['compile_s']:.1f} s; XLA memory (MiB): "
          + ", ".join(f"{k} {v:.1f}" for k, v in record["memory_mib"].items()))
    if "onnx_time_ms" in record:
        print(f"onnxruntime {record['onnx_time_ms']:.2f} ms vs jit {record['onnx_jit_time_ms']:.2f}"
              f" ms (the exported function, runs alternated); conversion "
              f"{record['onnx_convert_s']:.1f} s, max |flow diff| "
              f"{record['onnx_max_abs_diff_px']:.2g} px")
    _write(f.output, record)


def _write(path: str | None, result: Any) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {path}")


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
    flags.DEFINE_integer("warmup", 1, "untimed runs first (per config)")
    flags.DEFINE_integer("seed", 0, "random weights and images")
    flags.DEFINE_enum("format", "jit", ["jit", "onnx"], "onnx: also convert the model to ONNX at "
                      "this size and time it in onnxruntime beside the jit (extra jflow[onnx])")
    flags.DEFINE_string("output", None, "JSON file for the full record (a list with --compare)")
    flags.DEFINE_float("peak_tflops", None, "the device's peak TFLOP/s for Peak% (default: the "
                       "float32 peak of known GPUs; on CPUs the measured rate of a float32 "
                       "matrix product)")
    flags.DEFINE_multi_string("compare", [], "side by side: 'file.py[:arg] [key=value ...]', one "
                              "flag per config; timed alternately, ratios to the first")


def run() -> None:
    """Console entry point ``jflow-benchmark`` (same as ``python -m jflow.benchmark``)."""
    from jflow.cli import run_app

    run_app(main, _define_flags)


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so that the error classes raised
    # inside jflow are the ones the friendly-error handler catches.
    from jflow.benchmark import run as _run

    _run()
