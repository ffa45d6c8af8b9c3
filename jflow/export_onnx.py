"""ONNX export through jax2onnx, checked with onnxruntime (the optional extra ``jflow[onnx]``).

::

    python -m jflow.export --config=configs/raft.py:small --checkpoint=/tmp/raft_small \\
        --format=onnx --output=raft_small.onnx --iters=12

The same inference function as the StableHLO export (``jflow.export.inference_function``:
padding, normalisation and unpadding inside, iterations / solver steps fixed) is traced by JAX
with the symbolic (B, H, W) of ``--shape`` into a jaxpr of ``lax`` primitives,
``jflow.onnx_rewrite`` re-traces it without the patterns jax2onnx cannot convert (same numbers),
and jax2onnx lowers that jaxpr (not the Python code: its patched ``jax.numpy`` functions do not
see jflow's code; ``jflow.onnx_converter`` adapts it: symbolic dimension names, linear-time
conversion of long graphs); identical initializers are then merged (``jflow.onnx_initializers``: jax2onnx
stores a constant broadcast once per use, i.e. per unrolled iteration). The weights are
initializers; inputs ``image1``, ``image2`` (B, H, W, 3) and output
``flow`` (B, H, W, 2) keep the symbolic names as ONNX dimension parameters. DEQ solvers'
``while_loop`` becomes an ONNX ``Loop`` with the solver's own stopping test. The file's metadata
(``metadata_props["jflow"]``) is the JSON of the StableHLO artifact's ``meta.json`` plus the
converter versions and the check: before writing, onnxruntime runs the graph on a random pair
at a size the artifact takes and its flow is compared with JAX's; a graph onnxruntime rejects or
a flow that differs is an :class:`~jflow.export.ExportError`, and nothing is written.

Running it needs onnxruntime only::

    flow_fn = load_onnx("raft_small.onnx")    # onnxruntime.InferenceSession + the metadata
    flow = flow_fn(image1, image2)            # (B, H, W, 2)
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import operator
import os
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from jflow.export import (DEFAULT_SHAPE, ExportError, PreparedExport, _first_line,
                          _shape_errors, artifact_inputs, write_atomic)
from jflow.onnx_converter import converting
from jflow.onnx_initializers import merge_identical_initializers
from jflow.onnx_rewrite import rewrite

PyTree = Any
META_KEY = "jflow"
INPUT_NAMES = ("image1", "image2")
OUTPUT_NAME = "flow"
# onnxruntime vs JAX on the export-time check (pixels): float32 reassociation only.
VERIFY_ATOL = 1e-3
INSTALL_HINT = ("--format=onnx needs the optional extra jflow[onnx] (jax2onnx, onnxruntime): "
                "pip install 'jflow[onnx]'")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def onnx_available() -> bool:
    """Whether jax2onnx and onnxruntime are installed (the ``jflow[onnx]`` extra)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("jax2onnx", "onnxruntime"))
    except ValueError:  # a module set to None in sys.modules (tests)
        return False


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    return onnxruntime


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Errors only from logger ``name`` (onnx_ir warns about every untyped shape value)."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _session(model, providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` of a path or bytes, logging errors only."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options,
                                providers=list(providers or ["CPUExecutionProvider"]))


class OnnxExport:
    """A converted model: the serialised ONNX ``ModelProto`` (metadata included) and ``meta``."""

    def __init__(self, model_bytes: bytes, meta: Mapping[str, Any]):
        self.model_bytes = model_bytes
        self.meta = dict(meta)

    def save(self, path: str | os.PathLike) -> int:
        """Writes the ``.onnx`` file atomically (nothing half-written on failure); its size."""
        return write_atomic(path, self.model_bytes)


def export_onnx(config, variables: Mapping[str, PyTree], *, iters: int | None = None,
                shape: str = DEFAULT_SHAPE, input_dtype: str = "float32",
                padding: str = "sintel", constraints: Sequence[str] = (),
                checkpoint: str | None = None, verify: bool = True) -> OnnxExport:
    """Converts ``config.model`` with ``variables`` to ONNX (arguments as
    ``jflow.export.export_model``). ``verify``: run the graph in onnxruntime at one size it takes
    and compare with JAX (an :class:`ExportError` beyond ``VERIFY_ATOL`` px); the CLI always
    does. Raises :class:`ExportError` for what cannot be converted."""
    import jax

    try:
        import jax2onnx
        import onnx
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    _onnxruntime()
    prep = PreparedExport(config, variables, iters=iters, shape=shape, input_dtype=input_dtype,
                          padding=padding, constraints=constraints, checkpoint=checkpoint,
                          fmt="onnx")
    for d in prep.dims[:3]:
        if not isinstance(d, int) and not str(d).isidentifier():
            raise ExportError(
                f"--format=onnx --shape={shape!r}: ONNX inputs have named or fixed dimensions, "
                f"not expressions such as {d} (give names, e.g. 'b, h, w', or sizes)")
    img = prep.image_spec()
    weights = [jax.numpy.asarray(w) for w in prep.weights]
    try:
        closed = jax.make_jaxpr(lambda a, b: prep.function(weights, a, b))(img, img)
    except _shape_errors() as e:
        raise prep.shape_error(e, "converted") from None

    try:
        closed = rewrite(closed, img, img)
    except _shape_errors() as e:
        raise prep.shape_error(e, "converted") from None

    def lax_graph(image1, image2):  # the rewritten jaxpr, re-bound primitive by primitive
        return jax.core.eval_jaxpr(closed.jaxpr, closed.consts, image1, image2)[0]

    try:
        with converting(), _quiet_logger("onnx_ir"):
            proto = jax2onnx.to_onnx(lax_graph, [img, img], model_name=f"jflow_{prep.name}",
                                     input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME])
    except Exception as e:  # noqa: BLE001  (jax2onnx raises many kinds for unsupported graphs)
        raise ExportError(
            f"{prep.name}: jax2onnx {_version('jax2onnx')} cannot convert this graph to ONNX "
            f"({type(e).__name__}: {_first_line(e)}); --format=stablehlo exports it") from None
    merge_identical_initializers(proto)  # jax2onnx stores a constant broadcast once per use
    meta = {"format": "onnx", **prep.meta, "jax2onnx_version": _version("jax2onnx"),
            "onnx_version": onnx.__version__,
            "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))}
    if meta["deq"]:
        meta["solver_loop"] = ("ONNX Loop: the solver's while_loop with its stopping test "
                               "(per-sample stopping kept)")
    if verify:
        meta["verified"] = _verify(proto.SerializeToString(), prep, meta)
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta, sort_keys=True)})
    return OnnxExport(proto.SerializeToString(), meta)


def _verify(model_bytes: bytes, prep: PreparedExport, meta: Mapping[str, Any]) -> dict:
    """Runs the graph in onnxruntime and the inference function in JAX on one random pair at
    :func:`probe_shape`; an ExportError if onnxruntime refuses it or the flows differ."""
    import jax

    _onnxruntime()  # the install hint, before anything else
    b, h, w = probe_shape(meta)
    rng = np.random.default_rng(0)
    im1 = rng.integers(0, 256, (b, h, w, 3)).astype(prep.input_dtype)
    im2 = np.roll(im1, (1, 2), axis=(1, 2))
    try:
        session = _session(model_bytes)
        got = session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, (im1, im2))))[0]
    except Exception as e:  # noqa: BLE001  (onnxruntime's errors are not one class)
        raise ExportError(f"{prep.name}: onnxruntime rejects the converted graph "
                          f"({_first_line(e)}); --format=stablehlo exports it") from None
    want = np.asarray(jax.jit(prep.function)(prep.weights, im1, im2))
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= VERIFY_ATOL:
        raise ExportError(f"{prep.name}: the ONNX graph's flow differs from JAX's by {diff:.3g} "
                          f"px at {(b, h, w)} (more than {VERIFY_ATOL}); nothing written")
    return {"shape": [b, h, w], "max_abs_diff_px": diff,
            "max_abs_flow_px": float(np.abs(want).max())}


# ------------------------------------------------------------------------------------ shapes

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMP = {ast.GtE: operator.ge, ast.LtE: operator.le, ast.Gt: operator.gt, ast.Lt: operator.lt,
        ast.Eq: operator.eq}


def _eval_dims(node: ast.AST, env: Mapping[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval_dims(node.left, env), _eval_dims(node.right, env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_dims(node.operand, env)
    raise ValueError(ast.dump(node))


def constraint_holds(constraint: str, env: Mapping[str, int]) -> bool | None:
    """Whether a symbolic-shape constraint (``"h >= 64"``, ``"b <= 16"``) holds for the sizes
    ``env``; None if it is not a simple comparison of sums and products."""
    try:
        node = ast.parse(constraint, mode="eval").body
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                and type(node.ops[0]) in _CMP):
            return None
        left, right = _eval_dims(node.left, env), _eval_dims(node.comparators[0], env)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None
    return bool(_CMP[type(node.ops[0])](left, right))


def probe_shape(meta: Mapping[str, Any]) -> tuple[int, int, int]:
    """A (B, H, W) the artifact of ``meta`` takes: its fixed sizes, and for each symbolic name
    the smallest of 1 (batch) / 70x75 (needs padding) raised to the constraints' lower bounds."""
    dims = [d.strip() for d in str(meta["shape"]).split(",")]
    start = (1, 70, 75)
    env: dict[str, int] = {}
    for d, s in zip(dims, start):
        if not d.isdigit():
            env[d] = s
    for c in meta.get("constraints") or []:
        node = ast.parse(c, mode="eval").body
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                and node.left.id in env and isinstance(node.ops[0], (ast.GtE, ast.Gt))
                and isinstance(node.comparators[0], ast.Constant)):
            bound = int(node.comparators[0].value) + isinstance(node.ops[0], ast.Gt)
            env[node.left.id] = max(env[node.left.id], bound)
    return tuple(int(d) if d.isdigit() else env[d] for d in dims)


def check_fits(shape: Sequence[int], meta: Mapping[str, Any]) -> None:
    """An ExportError unless (B, H, W) ``shape`` fits the artifact's dims and constraints."""
    dims = [d.strip() for d in str(meta["shape"]).split(",")]
    env: dict[str, int] = {}
    ok = len(shape) == 3
    for d, n in zip(dims, shape):
        if d.isdigit():
            ok &= int(d) == n
        elif env.setdefault(d, n) != n:
            ok = False
    cons = list(meta.get("constraints") or [])
    if ok and all(constraint_holds(c, env) is not False for c in cons):
        return
    raise ExportError(f"images {tuple(shape) + (3,)} do not fit this artifact: it takes "
                      f"({meta['shape']}, 3)" + (f" with {', '.join(cons)}" if cons else ""))


# -------------------------------------------------------------------------------------- load

class LoadedOnnxModel:
    """Callable ``(image1, image2) -> flow`` of a ``.onnx`` file in onnxruntime; ``meta`` holds
    the metadata jflow wrote, ``session`` the ``onnxruntime.InferenceSession``."""

    def __init__(self, path: str | os.PathLike | bytes, providers: Sequence[str] | None = None):
        _onnxruntime()  # the install hint, not a load error
        source = path if isinstance(path, bytes) else os.fspath(path)
        path = "<bytes>" if isinstance(path, bytes) else path
        try:
            self.session = _session(source, providers)
            self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY])
        except (KeyError, ValueError) as e:
            raise ExportError(f"{path}: not a jflow ONNX export ({_first_line(e)})") from None
        except Exception as e:  # noqa: BLE001  (onnxruntime's load errors are not one class)
            raise ExportError(f"{path}: onnxruntime cannot load it ({_first_line(e)})") from None

    def __call__(self, image1, image2):
        """Flow (B, H, W, 2) for images (B, H, W, 3) (or one pair (H, W, 3) -> (H, W, 2))."""
        ims, single = artifact_inputs(image1, image2, self.meta)
        check_fits(ims[0].shape[:3], self.meta)
        flow = self.session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, ims)))[0]
        return flow[0] if single else flow


def load_onnx(path: str | os.PathLike | bytes, providers: Sequence[str] | None = None
              ) -> LoadedOnnxModel:
    """The ``.onnx`` file at ``path`` (or its bytes) as a callable (needs onnxruntime only)."""
    return LoadedOnnxModel(path, providers)


def benchmark_onnx(config, height: int, width: int, *, batch: int = 1, iters: int | None = None,
                   repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """``jflow.benchmark --format=onnx``: converts the model with the benchmark's random weights at
    the fixed (batch, height, width), then runs the graph in onnxruntime (CPU, default session
    options) and the same inference function jit-compiled by JAX on the benchmark's images: one
    warm-up run each (their flows are compared), then ``repeats`` alternating timed runs (jit,
    onnxruntime, jit, ...); medians in ms."""
    import jax

    from jflow.benchmark import random_images
    from jflow.models import model_from_config, random_variables

    variables = random_variables(model_from_config(config), seed=seed)
    shape = f"{batch}, {height}, {width}"
    t0 = time.perf_counter()
    artifact = export_onnx(config, variables, iters=iters, shape=shape, verify=False)
    convert_s = time.perf_counter() - t0
    prep = PreparedExport(config, variables, iters=iters, shape=shape, input_dtype="float32",
                          padding="sintel", constraints=(), checkpoint=None)
    jit_fn, weights = jax.jit(prep.function), jax.device_put(prep.weights)
    image1, image2 = (np.asarray(x) for x in random_images(height, width, batch, seed))
    onnx_fn = load_onnx(artifact.model_bytes)
    runs = {"jit": lambda: jax.block_until_ready(jit_fn(weights, image1, image2)),
            "onnx": lambda: onnx_fn(image1, image2)}
    diff = float(np.abs(np.asarray(runs["jit"]()) - runs["onnx"]()).max())
    times: dict[str, list[float]] = {"jit": [], "onnx": []}
    for _ in range(repeats):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return {"onnx_time_ms": float(np.median(times["onnx"])), "onnx_times_ms": times["onnx"],
            "onnx_jit_time_ms": float(np.median(times["jit"])), "onnx_jit_times_ms": times["jit"],
            "onnx_convert_s": convert_s, "onnx_size_mib": len(artifact.model_bytes) / 2**20,
            "onnx_max_abs_diff_px": diff, "onnxruntime_version": _version("onnxruntime"),
            "jax2onnx_version": artifact.meta["jax2onnx_version"]}
