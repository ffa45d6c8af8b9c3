"""Optical flow for your own images: ``python -m jflow.predict`` and :class:`FlowPredictor`.

One pair::

    python -m jflow.predict --config=configs/deq_raft.py:H --checkpoint=/tmp/deq_h \\
        --image1=a.png --image2=b.png --output=flow.flo --viz=flow.png

A folder of frames (one ``.flo`` and one picture per consecutive pair; sub-folders are separate
scenes; RAFT warm start / DEQ fixed-point reuse across pairs, reset at each scene)::

    python -m jflow.predict --config=configs/raft.py --checkpoint=/tmp/raft \\
        --frames_dir=frames/ --output_dir=out/

``--iters`` is the number of update iterations for recurrent models and the solver's maximum
number of steps for DEQ models. Without ``--checkpoint`` the weights are random (a warning says
so). Python::

    predictor = FlowPredictor.from_config(config, checkpoint="/tmp/raft")
    flow = predictor.predict(image1, image2)             # (H, W, 2) float32
    flows = predictor.predict_batch(images1, images2)    # (B, H, W, 2)
    for out in predictor.predict_video(frames):          # dicts: index, flow, stats, reset
        ...
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jflow import geometry
from jflow.errors import InputError


PyTree = Any
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
RANDOM_WEIGHTS_WARNING = ("no checkpoint given: the model has RANDOM weights and its flow is "
                          "meaningless (pass a checkpoint from jflow training or jflow.convert)")


def _as_image_batch(images: Any, what: str) -> np.ndarray:
    """(H, W[, 1|3|4]) or (B, H, W, C), uint8 or float 0..255 -> (B, H, W, 3) float32."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected an image (H, W[, 1|3|4]) or a batch (B, H, W, C), "
                         f"got shape {np.shape(images)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]  # alpha dropped
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what}: expected numeric pixels, got dtype {arr.dtype}")
    return arr.astype(np.float32)


GIB = float(1 << 30)


def available_memory_bytes() -> float:
    """Memory the first device can use: its ``bytes_limit`` on accelerators, RAM on CPU."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (CPU backends may raise)
        stats = {}
    if stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(model, shape: tuple[int, ...], available: float | None = None) -> None:
    """Refuses, before compiling, a padded input ``shape`` (B, H, W, 3) whose all-pairs
    correlation volume (B (HW/64)^2 float32 values plus its pooled levels, 4/3 of that) cannot fit
    in memory, with the figure and the remedy."""
    if getattr(model, "corr", None) != "all_pairs":
        return
    b, h, w = shape[:3]
    need = b * float(h // 8 * (w // 8)) ** 2 * 4 * 4 / 3
    available = available_memory_bytes() if available is None else available
    if need > 0.8 * available:
        raise InputError(
            f"a {w}x{h} input needs about {need / GIB:,.1f} GiB for the all-pairs correlation "
            f"volume alone; this device has {available / GIB:,.1f} GiB: use "
            "--config.model.corr=on_the_fly (memory linear in the image size) or smaller images")


def _stats_to_host(stats: Mapping[str, Any]) -> list[dict[str, float]]:
    """Per-sample scalar solver statistics (``nstep``, ``abs_lowest``, ...) as Python floats."""
    out: list[dict[str, float]] = []
    for key, value in stats.items():
        value = np.asarray(value)
        if value.ndim != 1:
            continue  # traces (B, T) are left out of the per-pair log
        for i, v in enumerate(value):
            while len(out) <= i:
                out.append({})
            out[i][key] = float(v)
    return out


class FlowPredictor:
    """A model + weights, jit-compiled once per (padded) image size.

    Args:
      model: a Flax module from ``jflow.models.build_model``.
      variables: ``{'params': ..., 'batch_stats': ...}``.
      deq: the model is a DEQ model (its ``state`` is a fixed point that can be reused).
      iters: update iterations (recurrent) or solver max steps (DEQ); None = the model's default.
      padding: ``"sintel"`` (even split) or ``"kitti"`` (all vertical padding at the bottom).
    """

    def __init__(self, model, variables: Mapping[str, PyTree], *, deq: bool = False,
                 iters: int | None = None, padding: str = "sintel"):
        self.model = model
        self.variables = {k: v for k, v in variables.items() if k == "params" or v}
        self.deq = deq
        self.iters = iters
        self.padding = padding
        from jflow.models import input_padding
        self.pad_multiple, self.pad_fill = input_padding(model)

        def run(variables, image1, image2, flow_init, state_init):
            return self.model.apply(variables, image1, image2, train=False, iters=self.iters,
                                    flow_init=flow_init, state_init=state_init)

        self._run = jax.jit(run)
        self._zeros: dict[tuple[int, ...], tuple[Any, Any]] = {}

    @classmethod
    def from_config(cls, config, checkpoint: str | os.PathLike | None = None, *,
                    iters: int | None = None, seed: int = 0, padding: str = "sintel"
                    ) -> "FlowPredictor":
        """Builds ``config.model`` and loads ``checkpoint`` (a jflow training workdir, its
        ``checkpoints`` folder, a step folder or a ``jflow.convert`` output); random weights
        (with a warning) when ``checkpoint`` is None."""
        from jflow.models import is_deq, model_from_config, random_variables

        deq = is_deq(config)
        model = model_from_config(config)
        if checkpoint is None:
            warnings.warn(RANDOM_WEIGHTS_WARNING, UserWarning, stacklevel=2)
            variables = random_variables(model, seed)  # filled on the host: no init to compile
        else:
            variables = load_variables(checkpoint, model, config)
        return cls(model, variables, deq=deq, iters=iters, padding=padding)

    # ------------------------------------------------------------------ single pairs and batches
    def _forward(self, image1, image2, flow_init=None, state_init=None):
        im1 = _as_image_batch(image1, "image1")
        im2 = _as_image_batch(image2, "image2")
        if im1.shape != im2.shape:
            raise InputError(f"image1 {im1.shape[1:3]} and image2 {im2.shape[1:3]} must have the "
                             "same size (and batch)")
        padder = geometry.InputPadder(im1.shape[1:3], self.pad_multiple, mode=self.padding,
                                      fill=self.pad_fill)
        im1, im2 = padder.pad(im1, im2)
        check_memory(self.model, im1.shape)
        if (flow_init is None and state_init is None
                and getattr(type(self.model), "zero_init_is_cold_start", False)):
            # A zero warm start / zero fixed point is the model's own cold start: passing it
            # keeps one compiled function per image size for cold and reused pairs alike.
            flow_init, state_init = self._zero_init(im1.shape)
        out = self._run(self.variables, im1, im2, flow_init, state_init)
        if out.get("uncertainty") is not None:  # SEA-RAFT: (B, H, W), cropped like the flow
            out = dict(out, uncertainty=padder.unpad(np.asarray(out["uncertainty"])[..., None])
                       [..., 0])
        return padder.unpad(np.asarray(out["flow"])), out

    def _zero_init(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """(flow_init, state_init) of zeros for padded images of ``shape`` (cached)."""
        if shape not in self._zeros:
            img = jax.ShapeDtypeStruct(shape, jnp.float32)
            out = jax.eval_shape(lambda v, a, b: self.model.apply(
                v, a, b, train=False, iters=1), self.variables, img, img)
            zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)  # noqa: E731
            self._zeros[shape] = ((None, zeros(out["state"])) if self.deq
                                  else (zeros(out["flow_low"]), None))
        return self._zeros[shape]

    def predict(self, image1: Any, image2: Any) -> np.ndarray:
        """Flow (H, W, 2) float32 from ``image1`` to ``image2`` ((H, W, 3), uint8 or 0..255)."""
        if np.ndim(image1) == 4:
            raise ValueError("predict takes one pair; use predict_batch for (B, H, W, 3) arrays")
        return self._forward(image1, image2)[0][0]

    @property
    def outputs_uncertainty(self) -> bool:
        """Whether the model outputs an ``uncertainty`` map (SEA-RAFT); traced, not run."""
        if not hasattr(self, "_outputs_uncertainty"):
            img = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
            out = jax.eval_shape(lambda v, a, b: self.model.apply(v, a, b, train=False, iters=1),
                                 self.variables, img, img)
            self._outputs_uncertainty = out.get("uncertainty") is not None
        return self._outputs_uncertainty

    def predict_with_uncertainty(self, image1: Any, image2: Any
                                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """(flow (H, W, 2), uncertainty (H, W) or None): SEA-RAFT's per-pixel uncertainty
        ``sum_m pi_m log b_m`` (0 = confident, up to ``var_max``); None for models without one."""
        if np.ndim(image1) == 4:
            raise ValueError("predict_with_uncertainty takes one pair")
        flow, out = self._forward(image1, image2)
        unc = out.get("uncertainty")
        return flow[0], None if unc is None else np.asarray(unc[0], np.float32)

    def predict_batch(self, images1: Any, images2: Any) -> np.ndarray:
        """Flows (B, H, W, 2) for a batch of same-size pairs, in one compiled call."""
        if np.ndim(images1) != 4:
            raise ValueError("predict_batch: images1 must be (B, H, W, 3), got "
                             f"{np.shape(images1)}")
        return self._forward(images1, images2)[0]

    # ------------------------------------------------------------------------------- sequences
    def _next_init(self, out) -> dict[str, Any]:
        """What the next pair starts from: RAFT warm start (forward-interpolated ``flow_low``),
        DEQ fixed-point reuse (previous state with its flow forward-interpolated)."""
        if not self.deq:
            # The model's ``state`` is the flow its next pair warm-starts from (RAFT: 1/8-res
            # ``flow_low``; DIP: the full-resolution flow); None: no warm start.
            if out.get("state") is None:
                return {}
            flow = geometry.forward_interpolate(np.asarray(out["state"]))
            return {"flow_init": jnp.asarray(flow)}
        state = out["state"]
        if isinstance(state, Mapping) and "flow" in state:
            state = dict(state)
            state["flow"] = jnp.asarray(geometry.forward_interpolate(np.asarray(state["flow"])))
        return {"state_init": state}

    def predict_video(self, frames: Iterable[Any], scene_ids: Sequence[Any] | None = None, *,
                      reuse: bool = True) -> Iterator[dict[str, Any]]:
        """Flow for each consecutive pair of ``frames`` (an iterable of (H, W, 3) images).

        Yields ``{'index': i, 'flow': (H, W, 2), 'stats': {...}, 'reset': bool}`` (plus
        ``'uncertainty'`` (H, W) for models that output one, SEA-RAFT) for the pair
        (frame i, frame i+1). With ``reuse`` each pair starts from the previous one (RAFT warm
        start, DEQ fixed-point reuse); ``scene_ids`` (one per frame) starts over at every scene
        change, and no pair is formed across scenes. ``stats`` holds DEQ solver statistics
        (``nstep``, ``abs_lowest``, ``rel_lowest``; empty for recurrent models).
        """
        prev, prev_scene, init = None, None, {}
        for i, frame in enumerate(frames):
            scene = None if scene_ids is None else scene_ids[i]
            if prev is not None and scene == prev_scene:
                reset = not init
                flow, out = self._forward(prev, frame, **init)
                init = self._next_init(out) if reuse else {}
                stats = _stats_to_host(out.get("stats") or {})
                result = {"index": i - 1, "flow": flow[0], "stats": stats[0] if stats else {},
                          "reset": reset}
                if out.get("uncertainty") is not None:
                    result["uncertainty"] = np.asarray(out["uncertainty"][0], np.float32)
                yield result
            else:
                init = {}
            prev, prev_scene = frame, scene


# --------------------------------------------------------------------------------- checkpoints

def load_variables(checkpoint: str | os.PathLike, model, config=None) -> dict[str, PyTree]:
    """Loads ``params``/``batch_stats`` from ``checkpoint`` and checks them against ``model``
    (:func:`jflow.checkpoint.load_checked`)."""
    from jflow.checkpoint import load_checked

    loaded = load_checked(checkpoint, model, None if config is None else str(config.model.name))
    return {k: v for k, v in loaded.items() if k in ("params", "batch_stats")}


# ----------------------------------------------------------------------------------------- CLI

def list_frames(frames_dir: str) -> list[tuple[str, list[str]]]:
    """``[(scene, [frame paths])]``: the images in ``frames_dir`` (one scene) or, when it holds
    none, in each of its sub-folders (one scene each), sorted by name."""
    def images(d):
        return sorted(os.path.join(d, f) for f in os.listdir(d)
                      if f.lower().endswith(IMAGE_EXTENSIONS))

    if not os.path.isdir(frames_dir):
        raise InputError(f"--frames_dir {frames_dir}: no such directory")
    top = images(frames_dir)
    if top:
        return [("", top)]
    scenes = [(d, images(os.path.join(frames_dir, d))) for d in sorted(os.listdir(frames_dir))
              if os.path.isdir(os.path.join(frames_dir, d))]
    scenes = [(d, f) for d, f in scenes if f]
    if not scenes:
        raise InputError(f"--frames_dir {frames_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) "
                         "in it or in its sub-folders")
    return scenes


def check_frame_sizes(scenes: list[tuple[str, list[str]]]) -> None:
    """Every frame of a scene must have the first frame's size (read from the headers only)."""
    from PIL import Image

    for _, files in scenes:
        sizes = {}
        for path in files:
            try:
                with Image.open(path) as im:
                    sizes[path] = im.size
            except (OSError, ValueError) as e:
                raise InputError(f"{path}: not a readable image ({e})") from None
        first = files[0]
        for path, size in sizes.items():
            if size != sizes[first]:
                raise InputError(f"{path}: {size[0]}x{size[1]} differs from {first} "
                                 f"({sizes[first][0]}x{sizes[first][1]}); frames of one scene "
                                 "must have one size")


def check_output_path(path: str) -> None:
    """``--output`` must name a flow file type jflow writes (.flo, .pfm, KITTI 16-bit .png)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".flo", ".pfm", ".png"):
        raise InputError(f"--output {path}: unknown flow file extension {ext!r} (use .flo, .pfm "
                         "or .png for a KITTI 16-bit flow PNG)")


def _write_outputs(flow: np.ndarray, image1: np.ndarray, flo_path: str | None,
                   viz_path: str | None) -> None:
    from jflow import io as jio
    from jflow import viz

    if flo_path:
        os.makedirs(os.path.dirname(os.path.abspath(flo_path)), exist_ok=True)
        jio.write_flow(flo_path, flow)  # by extension: .flo, .pfm or KITTI 16-bit .png
    if viz_path:
        os.makedirs(os.path.dirname(os.path.abspath(viz_path)), exist_ok=True)
        jio.write_image(viz_path, viz.make_panel(image1, flow))


def uncertainty_picture(uncertainty: np.ndarray, vmax: float = 10.0) -> np.ndarray:
    """SEA-RAFT's uncertainty (H, W) as a uint8 RGB picture: viridis on the fixed scale
    [0, ``vmax``] (the clamp of log b, ``var_max``), so pictures of a video compare (dark =
    confident)."""
    from jflow import viz

    return viz.apply_colormap(np.asarray(uncertainty), vmax)


def _uncertainty_vmax(predictor: FlowPredictor) -> float:
    return float(getattr(predictor.model, "var_max", 10.0))


def check_uncertainty_path(path: str) -> None:
    """``--uncertainty`` is a picture: .png (lossless) or .jpg."""
    if os.path.splitext(path)[1].lower() not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--uncertainty {path}: must be a .png or .jpg picture")


def write_uncertainty(path: str, uncertainty: np.ndarray, vmax: float = 10.0) -> None:
    from jflow import io as jio

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    jio.write_image(path, uncertainty_picture(uncertainty, vmax))


def run_sequence(predictor: FlowPredictor, frames_dir: str, output_dir: str,
                 viz_ext: str = ".png") -> int:
    """Sequence mode of the CLI; returns the number of pairs written."""
    from tqdm import tqdm

    from jflow import io as jio

    scenes = list_frames(frames_dir)
    check_frame_sizes(scenes)
    paths = [p for _, files in scenes for p in files]
    scene_ids = [s for s, files in scenes for _ in files]
    n_pairs = sum(max(len(f) - 1, 0) for _, f in scenes)
    if n_pairs == 0:
        raise InputError(f"--frames_dir {frames_dir}: need at least two frames in a scene")
    frames = (jio.read_image(p) for p in paths)
    written = 0
    with tqdm(total=n_pairs, desc="flow", unit="pair") as bar:
        for out in predictor.predict_video(frames, scene_ids):
            i = out["index"]
            stem = os.path.splitext(os.path.basename(paths[i]))[0]
            out_dir = os.path.join(output_dir, scene_ids[i])
            _write_outputs(out["flow"], jio.read_image(paths[i]),
                           os.path.join(out_dir, stem + ".flo"),
                           os.path.join(out_dir, stem + viz_ext))
            if out.get("uncertainty") is not None:
                write_uncertainty(os.path.join(out_dir, stem + "_uncertainty.png"),
                                  out["uncertainty"], _uncertainty_vmax(predictor))
            if out["stats"]:
                s = out["stats"]
                nan = float("nan")
                msg = (f"{os.path.join(scene_ids[i], stem)}: {int(s.get('nstep', 0))} solver "
                       f"steps, abs residual {s.get('abs_lowest', nan):.4g}, rel "
                       f"{s.get('rel_lowest', nan):.3g}" + (" (reset)" if out["reset"] else ""))
                bar.write(msg)
            written += 1
            bar.update(1)
    return written


def main(argv) -> None:
    from absl import flags

    from jflow import io as jio
    from jflow.cli import cli_logging

    del argv
    cli_logging()
    f = flags.FLAGS
    single = bool(f.image1 or f.image2)
    if single == bool(f.frames_dir):
        raise InputError("give either --image1/--image2/--output or --frames_dir/--output_dir")
    if f.iters is not None and f.iters < 1:
        raise InputError(f"--iters must be >= 1, got {f.iters}")
    if single:
        if not (f.image1 and f.image2 and f.output):
            raise InputError("--image1, --image2 and --output are all required for one pair")
        check_output_path(f.output)
        if f.uncertainty:
            check_uncertainty_path(f.uncertainty)
        image1, image2 = jio.read_image(f.image1), jio.read_image(f.image2)
        if image1.shape != image2.shape:
            raise InputError(f"--image2 {f.image2} is {image2.shape[1]}x{image2.shape[0]} but "
                             f"--image1 {f.image1} is {image1.shape[1]}x{image1.shape[0]}: the "
                             "two frames must have one size")
    elif f.uncertainty:
        raise InputError("--uncertainty is for one pair; --frames_dir writes "
                         "<frame>_uncertainty.png beside each flow when the model has one")
    elif not f.output_dir:
        raise InputError("--frames_dir needs --output_dir")
    else:
        check_frame_sizes(list_frames(f.frames_dir))  # before the model is built
    if f.checkpoint is None:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor = FlowPredictor.from_config(f.config, f.checkpoint, iters=f.iters,
                                              padding=f.padding)
    if single:
        if f.uncertainty and not predictor.outputs_uncertainty:  # before any compile
            raise InputError(f"--uncertainty: the {f.config.model.name} model outputs no "
                             "uncertainty (SEA-RAFT does)")
        flow, unc = predictor.predict_with_uncertainty(image1, image2)
        _write_outputs(flow, image1, f.output, f.viz)
        if f.uncertainty:
            write_uncertainty(f.uncertainty, unc, _uncertainty_vmax(predictor))
        print(f"wrote {f.output}" + "".join(f" and {p}" for p in (f.viz, f.uncertainty) if p))
    else:
        n = run_sequence(predictor, f.frames_dir, f.output_dir)
        print(f"wrote {n} flows (.flo + .png) under {f.output_dir}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "model config file, e.g. configs/raft.py",
                                    lock_config=False)
    flags.DEFINE_string("checkpoint", None, "jflow checkpoint directory (training or convert)")
    flags.DEFINE_string("image1", None, "first image")
    flags.DEFINE_string("image2", None, "second image")
    flags.DEFINE_string("output", None, "flow file for --image1/--image2: .flo, .pfm or .png "
                        "(KITTI 16-bit)")
    flags.DEFINE_string("viz", None, "optional flow picture (image | flow colour) for one pair")
    flags.DEFINE_string("uncertainty", None, "optional uncertainty picture (.png) for one pair, "
                        "for models that output one (SEA-RAFT)")
    flags.DEFINE_string("frames_dir", None, "folder of frames (or of scene sub-folders)")
    flags.DEFINE_string("output_dir", None, "output folder for --frames_dir")
    flags.DEFINE_integer("iters", None, "update iterations (recurrent) / solver max steps (DEQ)")
    flags.DEFINE_enum("padding", "sintel", ["sintel", "kitti"], "how to pad to a multiple of 8")
    flags.mark_flag_as_required("config")


def run() -> None:
    """Console entry point ``jflow-predict`` (same as ``python -m jflow.predict``)."""
    from jflow.cli import run_app

    run_app(main, _define_flags)


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so that the error classes raised
    # inside jflow are the ones the friendly-error handler catches.
    from jflow.predict import run as _run

    _run()
