"""Export a model for deployment: ``python -m jflow.export`` and :func:`export_model`.

::

    python -m jflow.export --config=configs/raft.py:small --checkpoint=/tmp/raft_small \\
        --format=stablehlo --output=raft_small.jflow.zip --iters=12

The artifact is a zip: ``module.bin`` (``jax.export`` serialised StableHLO of the inference
function), ``weights.npz`` (its first argument, a flat list of arrays) and ``meta.json`` (the
config, jflow and jax versions, iterations, shapes, padding). The exported function takes two RGB
images (B, H, W, 3) (``--input_dtype``: float32 0..255 or uint8) and returns the flow (B, H, W, 2)
float32; padding to the model's multiple (``jflow.models.input_padding``), the normalisation and
the unpadding are inside the graph. Iterations (recurrent models) / solver steps (DEQ models) are
fixed at export time. ``--shape`` is a ``jax.export.symbolic_shape`` spec for (B, H, W): the
default ``"b, h, w"`` is any batch and any size; ``"b, 8*k, 8*l"`` takes multiples of 8 only;
``"1, 440, 1024"`` one size.

``--format=onnx`` writes one ``.onnx`` file instead (``jflow.export_onnx``, extra ``jflow[onnx]``).

Running it needs jax only (no jflow model code)::

    flow_fn = load_exported("raft_small.jflow.zip")   # or jax.export.deserialize(module.bin)
    flow = flow_fn(image1, image2)                     # (B, H, W, 2)
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from jflow.errors import UserError

PyTree = Any
FORMATS = ("stablehlo", "onnx")
FORMAT_VERSION = 1
INPUT_DTYPES = ("float32", "uint8")
DEFAULT_SHAPE = "b, h, w"
# Lower bounds (in pixels) that models with pooled pyramids need to be exportable with symbolic
# sizes: the coarsest correlation level must not pool away (RAFT family: 1/8 features, 3 poolings).
MIN_SIZE = 64
# Why a model's H, W cannot be symbolic (appended to the export error); see the README.
FIXED_SIZE_REASONS = {
    "liteflownet2": "LiteFlowNet2 resizes to a multiple of 32 with interpolation tables computed "
                    "on the host, so H and W must be concrete; its batch can be symbolic",
    "sea_raft": "SEA-RAFT with scale != 0 resizes the pair by 2^scale on concrete sizes, so H "
                "and W must be concrete; its batch can be symbolic (scale 0: any b, h, w)",
}

class ExportError(UserError):
    """A model, option or output that cannot be exported (one ``error:`` line in the CLI)."""


# ------------------------------------------------------------------------------ graph helpers

def _unpad_axis(x, axis: int, size, before):
    import jax
    import jax.numpy as jnp

    return jnp.take(x, jax.lax.iota(jnp.int32, size) + jnp.asarray(before, jnp.int32), axis=axis)


def inference_function(model, treedef, *, iters: int | None, padding: str = "sintel"):
    """``f(weights, image1, image2) -> flow``: ``weights`` the flat leaves of the variables
    (``treedef``), images (B, H, W, 3) of any dtype (cast to float32), with the model's padding and
    the unpadding inside (``jflow.predict.FlowPredictor`` semantics)."""
    import jax
    import jax.numpy as jnp

    from jflow.geometry import pad_amounts, pad_axis
    from jflow.models import input_padding

    multiple, fill = input_padding(model)

    def f(weights, image1, image2):
        variables = jax.tree_util.tree_unflatten(treedef, weights)
        im1 = image1.astype(jnp.float32)
        im2 = image2.astype(jnp.float32)
        _, h, w, _ = im1.shape
        top, bottom = pad_amounts(h, multiple, centered=padding != "kitti")
        left, right = pad_amounts(w, multiple)
        if multiple > 1:
            im1, im2 = [pad_axis(pad_axis(x, 1, top, bottom, fill), 2, left, right, fill)
                        for x in (im1, im2)]
        out = model.apply(variables, im1, im2, train=False, iters=iters)
        flow = out["flow"].astype(jnp.float32)
        if multiple > 1:
            flow = _unpad_axis(_unpad_axis(flow, 1, h, top), 2, w, left)
        return flow

    return f


# ------------------------------------------------------------------------------------- export

class ExportedModel:
    """An export: the ``jax.export.Exported``, the weights it takes and the metadata."""

    def __init__(self, exported, weights: Sequence[np.ndarray], meta: Mapping[str, Any]):
        self.exported = exported
        self.weights = [np.asarray(w) for w in weights]
        self.meta = dict(meta)

    def to_bytes(self) -> bytes:
        """The zip artifact (``module.bin``, ``weights.npz``, ``meta.json``)."""
        buf = io.BytesIO()
        npz = io.BytesIO()
        np.savez(npz, **{f"w{i:04d}": w for i, w in enumerate(self.weights)})
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("meta.json", json.dumps(self.meta, indent=1, sort_keys=True))
            z.writestr("module.bin", bytes(self.exported.serialize()))
            z.writestr("weights.npz", npz.getvalue())
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> int:
        """Writes the artifact atomically (nothing half-written on failure); returns its size."""
        return write_atomic(path, self.to_bytes())


def write_atomic(path: str | os.PathLike, data: bytes) -> int:
    """Writes ``data`` to ``path`` through a temporary file in the same directory (nothing
    half-written is left on failure); an unwritable place is an :class:`ExportError`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", dir=directory)
    except OSError as e:
        raise ExportError(f"--output {path}: cannot write there ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> an ordinary file's mode
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ExportError(f"--output {path}: cannot write there ({e.strerror or e})") from None
    return len(data)


def _shape_spec(shape: str, model, extra: Sequence[str] = ()) -> tuple[tuple, tuple[str, ...]]:
    """The ``(B, H, W, 3)`` symbolic shape of ``shape`` ("b, h, w") and its constraints (the
    model's minimum size and ``extra``, e.g. ``"b <= 64"``)."""
    from jax import export

    from jflow.models import input_padding

    parts = [p.strip() for p in str(shape).split(",")]
    if len(parts) != 3 or not all(parts):
        raise ExportError(f"--shape {shape!r}: expected three comma-separated dimensions "
                          "'B, H, W' (e.g. 'b, h, w', 'b, 8*k, 8*l' or '1, 440, 1024')")
    try:
        dims = export.symbolic_shape(", ".join(parts) + ", 3")
    except Exception as e:  # noqa: BLE001  (jax raises ValueError / TypeError for bad specs)
        raise ExportError(f"--shape {shape!r}: not a symbolic shape ({_first_line(e)})") from None
    constraints = []
    if input_padding(model)[0] > 1:  # pooled correlation pyramids: at least MIN_SIZE pixels
        for d in dims[1:3]:
            if not isinstance(d, int):
                constraints.append(f"{d} >= {MIN_SIZE}")
    constraints += [str(c).strip() for c in extra if str(c).strip()]
    if constraints:
        try:
            dims = export.symbolic_shape(", ".join(parts) + ", 3", constraints=constraints)
        except Exception as e:  # noqa: BLE001  (jax raises ValueError for bad constraints)
            raise ExportError(f"--constraints {list(extra)}: {_first_line(e)}") from None
    return tuple(dims), tuple(constraints)


def _first_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


class PreparedExport:
    """What every format needs: the model, its flat weights, the symbolic input shape and the
    inference function (``inference_function``), checked; ``meta`` is the format-independent
    part of the artifact's metadata."""

    def __init__(self, config, variables: Mapping[str, PyTree], *, iters: int | None,
                 shape: str, input_dtype: str, padding: str, constraints: Sequence[str],
                 checkpoint: str | None, fmt: str = "stablehlo"):
        import jax

        import jflow
        from jflow.models import input_padding, is_deq, model_from_config

        if input_dtype not in INPUT_DTYPES:
            raise ExportError(f"--input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")
        if padding not in ("sintel", "kitti"):
            raise ExportError(f"--padding must be 'sintel' or 'kitti', got {padding!r}")
        if iters is not None and iters < 1:
            raise ExportError(f"--iters must be >= 1, got {iters}")
        self.model = model_from_config(config)
        self.name = name = str(config.model.name)
        variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats") and
                     (k == "params" or v)}
        leaves, self.treedef = jax.tree_util.tree_flatten(variables)
        self.weights = [np.asarray(x) for x in leaves]
        self.shape_spec = shape
        self.dims, self.constraints = _shape_spec(shape, self.model, constraints)
        symbolic = not all(isinstance(d, int) for d in self.dims)
        if name == "dip" and symbolic and fmt == "onnx":
            raise ExportError(
                f"dip exports to ONNX at one size only (--shape={shape!r} is symbolic): its random "
                "initial flow needs static shapes (noise='jax': jax2onnx lowers jax.random bits "
                "for static shapes only; noise='torch': generated on the host); give one size, "
                "e.g. --shape='1, 448, 1024', or use --format=stablehlo (with noise='jax': "
                "symbolic b, h, w)")
        if name == "dip" and symbolic and str(config.model.get("noise", "")) == "torch":
            raise ExportError(
                f"dip with noise='torch' exports at one size only (--shape={shape!r} is symbolic): "
                "its evaluation noise is torch's seeded stream generated on the host for each "
                "(B, H, W); give one size (--shape='1, 448, 1024') or --config.model.noise=jax "
                "(symbolic b, h, w; a different random initial flow than the official code)")
        self.input_dtype = input_dtype
        self.fmt = fmt
        self.function = inference_function(self.model, self.treedef, iters=iters, padding=padding)
        multiple, fill = input_padding(self.model)
        self.meta = {
            "format_version": FORMAT_VERSION,
            "jflow_version": jflow.__version__,
            "jax_version": jax.__version__,
            "model": name,
            "deq": bool(is_deq(config)),
            "iters": iters,
            "iters_effective": _effective_iters(self.model, config, iters),
            "shape": ", ".join(str(d) for d in self.dims[:3]),
            "shape_spec": shape,
            "constraints": list(self.constraints),
            "input_dtype": input_dtype,
            "output": "flow (B, H, W, 2) float32, pixels",
            "padding": {"multiple": multiple, "fill": fill, "mode": padding},
            "num_weights": len(self.weights),
            "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
            "config": json.loads(config.to_json_best_effort()),
        }

    def image_spec(self):
        """The (B, H, W, 3) ``jax.ShapeDtypeStruct`` of either image."""
        import jax
        import jax.numpy as jnp

        return jax.ShapeDtypeStruct(self.dims, jnp.dtype(self.input_dtype))

    def shape_error(self, error: BaseException, what: str = "exported") -> ExportError:
        """The ExportError for a model that needs concrete sizes where the shape is symbolic."""
        name = self.name
        if name in FIXED_SIZE_REASONS:
            hint = f"{FIXED_SIZE_REASONS[name]}; give H and W, e.g. --shape='b, 440, 1024'"
        elif self.fmt == "onnx":
            hint = "export with a bound, e.g. --constraints='b <= 16', or one size, e.g. " \
                   "--shape='1, 440, 1024'"
        else:
            hint = "export with sizes given as multiples, e.g. --shape='b, 8*k, 8*l', a bound, " \
                   "e.g. --constraints='b <= 16', or one size, e.g. --shape='1, 440, 1024'"
        return ExportError(f"{name} cannot be {what} with --shape={self.shape_spec!r}: "
                           f"{_first_line(error)}; {hint}")


def export_model(config, variables: Mapping[str, PyTree], *, iters: int | None = None,
                 shape: str = DEFAULT_SHAPE, input_dtype: str = "float32",
                 padding: str = "sintel", platforms: Sequence[str] | None = None,
                 constraints: Sequence[str] = (), checkpoint: str | None = None
                 ) -> ExportedModel:
    """Exports ``config.model`` with ``variables`` as StableHLO (``jax.export``).

    ``iters``: update iterations / DEQ solver max steps (None: the config's ``eval_iters`` or the
    DEQ evaluation steps, as ``FlowPredictor``); ``shape``: symbolic (B, H, W) spec; ``padding``:
    "sintel" | "kitti" (``InputPadder`` mode); ``platforms``: lowering platforms (default: the
    current backend); ``constraints``: extra symbolic-shape constraints such as ``"b <= 64"``.
    Raises :class:`ExportError`
    for what cannot be exported. ``jflow.export_onnx.export_onnx`` takes the same arguments.
    """
    import jax
    from jax import export

    prep = PreparedExport(config, variables, iters=iters, shape=shape, input_dtype=input_dtype,
                          padding=padding, constraints=constraints, checkpoint=checkpoint)
    img = prep.image_spec()
    w_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in prep.weights]
    kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
    try:
        exported = export.export(jax.jit(prep.function), **kwargs)(w_specs, img, img)
    except _shape_errors() as e:
        raise prep.shape_error(e) from None
    meta = {"format": "stablehlo", **prep.meta, "platforms": list(exported.platforms)}
    return ExportedModel(exported, prep.weights, meta)


def _shape_errors() -> tuple[type[BaseException], ...]:
    """What tracing with symbolic shapes raises where a model needs concrete sizes."""
    import jax

    errors = [jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
              jax.errors.TracerIntegerConversionError]
    try:
        from jax._src.export.shape_poly import InconclusiveDimensionOperation
        errors.append(InconclusiveDimensionOperation)
    except ImportError:  # pragma: no cover  (moved in another jax version)
        pass
    return tuple(errors)


def _effective_iters(model, config, iters: int | None) -> int | None:
    """The iterations / solver steps the export runs (``iters`` or the model's default)."""
    if iters is not None:
        return int(iters)
    for attr in ("eval_iters", "eval_f_max_steps", "f_max_steps"):
        value = getattr(model, attr, None)
        if isinstance(value, int):
            return value
    return None


# --------------------------------------------------------------------------------------- load

def read_artifact(path: str | os.PathLike) -> tuple[bytes, list[np.ndarray], dict[str, Any]]:
    """``(module bytes, weights, meta)`` of an artifact written by :meth:`ExportedModel.save`."""
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json"))
            module = z.read("module.bin")
            with np.load(io.BytesIO(z.read("weights.npz"))) as npz:
                weights = [npz[f"w{i:04d}"] for i in range(len(npz.files))]
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as e:
        raise ExportError(f"{path}: not a jflow export artifact ({_first_line(e)})") from None
    return module, weights, meta


def artifact_inputs(image1, image2, meta: Mapping[str, Any]) -> tuple[list[np.ndarray], bool]:
    """``([image1, image2], single)``: both as (B, H, W, 3) arrays of the artifact's input dtype
    (a single pair (H, W, 3) gets a batch axis, ``single``); an ExportError for float images
    given to a uint8 artifact or for two shapes that are not one RGB shape."""
    dtype = np.dtype(meta.get("input_dtype", "float32"))
    single = np.ndim(image1) == 3
    ims = []
    for what, im in (("image1", image1), ("image2", image2)):
        im = np.asarray(im)
        if single:
            im = im[None]
        if im.dtype != dtype:
            if dtype == np.uint8:
                raise ExportError(f"{what}: this artifact takes uint8 images, got {im.dtype}")
            im = im.astype(dtype)
        ims.append(im)
    if ims[0].shape != ims[1].shape or ims[0].ndim != 4 or ims[0].shape[-1] != 3:
        raise ExportError(f"image1 {tuple(ims[0].shape)} and image2 {tuple(ims[1].shape)}: "
                          "expected two RGB images of one shape (B, H, W, 3) or (H, W, 3)")
    return ims, single


class LoadedFlowModel:
    """Callable ``(image1, image2) -> flow`` of an artifact, with plain JAX
    (``jax.export.deserialize``); ``meta`` holds the artifact's metadata."""

    def __init__(self, module: bytes, weights: Sequence[np.ndarray], meta: Mapping[str, Any]):
        import jax
        from jax import export

        self.exported = export.deserialize(bytearray(module))
        self.meta = dict(meta)
        self.weights = [jax.device_put(w) for w in weights]
        self._call = jax.jit(self.exported.call)

    def __call__(self, image1, image2):
        """Flow (B, H, W, 2) for images (B, H, W, 3) (or one pair (H, W, 3) -> (H, W, 2))."""
        ims, single = artifact_inputs(image1, image2, self.meta)
        try:
            flow = self._call(self.weights, *ims)
        except ValueError as e:  # jax.export's shape check: say what the artifact takes
            cons = self.meta.get("constraints") or []
            raise ExportError(
                f"images {tuple(ims[0].shape)} do not fit this artifact: it takes "
                f"({self.meta.get('shape')}, 3)" + (f" with {', '.join(cons)}" if cons else "")
                + f" ({_first_line(e)})") from None
        return flow[0] if single else flow


def load_exported(path: str | os.PathLike) -> LoadedFlowModel:
    """The artifact at ``path`` as a callable (needs jax only, not jflow's models)."""
    return LoadedFlowModel(*read_artifact(path))


# ----------------------------------------------------------------------------------------- CLI

def check_output(path: str | os.PathLike) -> None:
    """An :class:`ExportError` before any work for an output that cannot be written: a
    directory, or a path whose nearest existing parent is a file or not writable (missing
    directories below a writable one are created on save)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ExportError(f"--output {path}: is a directory (give a file name)")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ExportError(f"--output {path}: cannot write there ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"--output {path}: directory {parent} is not writable")


def main(argv) -> None:
    import warnings

    from absl import flags

    from jflow.cli import cli_logging
    from jflow.predict import RANDOM_WEIGHTS_WARNING

    del argv
    cli_logging()
    f = flags.FLAGS
    fmt = f.format.lower()
    if fmt not in FORMATS:
        raise ExportError(f"--format {f.format!r}: unknown format (use one of {', '.join(FORMATS)})")
    if f.input_dtype not in INPUT_DTYPES:
        raise ExportError(f"--input_dtype must be one of {INPUT_DTYPES}, got {f.input_dtype!r}")
    if f.iters is not None and f.iters < 1:
        raise ExportError(f"--iters must be >= 1, got {f.iters}")
    check_output(f.output)
    if fmt == "onnx":
        if f.platforms:
            raise ExportError("--platforms applies to --format=stablehlo only (an ONNX graph "
                              "runs wherever onnxruntime does)")
        from jflow.export_onnx import INSTALL_HINT, onnx_available

        if not onnx_available():
            raise ExportError(INSTALL_HINT)
    config = f.config
    from jflow.models import model_from_config, random_variables

    model = model_from_config(config)
    if f.checkpoint is None:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            variables = random_variables(model, 0)
    else:
        from jflow.predict import load_variables

        variables = load_variables(f.checkpoint, model, config)
    options = dict(iters=f.iters, shape=f.shape, input_dtype=f.input_dtype, padding=f.padding,
                   constraints=f.constraints or (), checkpoint=f.checkpoint)
    if fmt == "onnx":
        from jflow.export_onnx import export_onnx

        artifact = export_onnx(config, variables, **options)
        where = (f"onnx opset {artifact.meta['opset']}, onnxruntime check at "
                 f"{tuple(artifact.meta['verified']['shape'])}: max |flow diff| "
                 f"{artifact.meta['verified']['max_abs_diff_px']:.2g} px")
    else:
        artifact = export_model(config, variables, platforms=f.platforms or None, **options)
        where = f"platforms {','.join(artifact.meta['platforms'])}"
    size = artifact.save(f.output)
    m = artifact.meta
    print(f"wrote {f.output} ({size / 1024:,.0f} KiB): {m['model']}, input ({m['shape']}, 3) "
          f"{m['input_dtype']}, iters {m['iters_effective']}, {where}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "model config file, e.g. configs/raft.py",
                                    lock_config=False)
    flags.DEFINE_string("checkpoint", None, "jflow checkpoint directory (training or convert); "
                        "without it the weights are random")
    flags.DEFINE_string("format", "stablehlo", "export format: stablehlo (jax.export zip) or onnx "
                        "(a .onnx file; needs the extra jflow[onnx])")
    flags.DEFINE_string("output", None, "artifact file (a zip: module.bin, weights.npz, meta.json)")
    flags.DEFINE_integer("iters", None, "update iterations (recurrent) / solver max steps (DEQ), "
                         "fixed in the artifact; default: the config's evaluation value")
    flags.DEFINE_string("shape", DEFAULT_SHAPE, "symbolic (B, H, W): 'b, h, w' (any), "
                        "'b, 8*k, 8*l' (multiples of 8), '1, 440, 1024' (one size)")
    flags.DEFINE_list("constraints", None, "extra symbolic-shape constraints, e.g. 'b <= 16' "
                      "(comma-separated)")
    flags.DEFINE_string("input_dtype", "float32", "image dtype the artifact takes: float32 "
                        "(0..255) or uint8")
    flags.DEFINE_enum("padding", "sintel", ["sintel", "kitti"], "how to pad to the model's "
                      "multiple inside the graph")
    flags.DEFINE_list("platforms", None, "lowering platforms, e.g. cpu,cuda (default: this "
                      "machine's backend)")
    flags.mark_flag_as_required("config")
    flags.mark_flag_as_required("output")


def run() -> None:
    """Console entry point ``jflow-export`` (same as ``python -m jflow.export``)."""
    from jflow.cli import run_app

    run_app(main, _define_flags)


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so that the error classes raised
    # inside jflow are the ones the friendly-error handler catches.
    from jflow.export import run as _run

    _run()
