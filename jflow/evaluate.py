"""Validation protocols and benchmark submission writers.

Protocols (protocols.md): every image pair is padded to a multiple of 8 by replication
(``InputPadder`` mode 'kitti' for KITTI, 'sintel' otherwise; Chairs needs none), run with the
model's published iteration count for that dataset (``config.eval.iters``: RAFT 24/32/24 on
Chairs/Sintel/KITTI, GMA 12, DEQ-Flow int(f_thres*1.5) = 60), unpadded, and scored. KITTI reports
EPE and Fl-all both as the official mean of per-image values (RAFT ``evaluate.py``: EPE) and
pooled over all valid pixels (Fl); the table names the convention of every number.

``python -m jflow.main --config=configs/raft.py --config.mode=eval --workdir=DIR`` prints the
table and writes ``DIR/eval_results.{json,csv}``; ``--config.eval.submission=sintel|kitti`` writes
the benchmark files instead (Sintel: ``<pass>/<scene>/frame%04d.flo``, 1-based, warm start within
each scene; KITTI: 16-bit ``N_10.png``).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from jflow import geometry

PyTree = Any
Predictor = Callable[..., dict]


def dataset_family(spec: str) -> str:
    """'sintel_clean' -> 'sintel', 'things_final' -> 'things', 'kitti' -> 'kitti', ..."""
    return spec.split("_")[0].split("*")[-1]


def padding_mode(spec: str) -> str:
    return "kitti" if dataset_family(spec) == "kitti" else "sintel"


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------
def make_predictor(model, variables: PyTree, iters: int, padding: str = "sintel") -> Predictor:
    """``predict(image1, image2, flow_init=None, state_init=None) -> dict`` on one pair.

    Images are (H, W, 3) uint8/float numpy arrays of any size; they are padded as the model asks
    (``jflow.models.input_padding``: RAFT a multiple of 8 by replication, DIP 16 with zeros;
    ``padding`` mode), run through ``model.apply(..., train=False, iters=iters)`` (compiled once
    per padded size) and the returned ``flow`` is unpadded to (H, W, 2) numpy. ``flow_low`` and
    ``state`` stay at the padded 1/8 resolution (what the next frame of the scene needs).
    """
    from jflow.models import input_padding
    apply = _jitted_apply(model, iters)
    multiple, fill = input_padding(model)

    def predict(image1, image2, flow_init=None, state_init=None) -> dict:
        image1 = np.asarray(image1, np.float32)[None]
        image2 = np.asarray(image2, np.float32)[None]
        padder = geometry.InputPadder(image1.shape[1:3], multiple, mode=padding, fill=fill)
        image1, image2 = padder.pad(image1, image2)
        out = apply(variables, image1, image2, flow_init, state_init)
        flow = padder.unpad(np.asarray(jax.device_get(out["flow"]), np.float32))[0]
        return dict(out, flow=flow)

    return predict


@functools.lru_cache(maxsize=16)
def _jitted_apply(model, iters: int) -> Callable:
    """Evaluation forward pass, cached per (model, iters) so repeated validations reuse it."""
    def apply(variables, image1, image2, flow_init, state_init):
        return model.apply(variables, image1, image2, train=False, iters=iters,
                           flow_init=flow_init, state_init=state_init)
    return jax.jit(apply)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ValResult:
    """Scores of one dataset (``metrics``) and a few flow pictures (uint8 panels)."""
    metrics: dict[str, float]
    pictures: list[np.ndarray]


def validate(predict: Predictor, source: Sequence[dict], *, convention: str = "sintel",
             max_samples: int = 0, num_pictures: int = 0, pictures_dir: str | None = None,
             tag: str = "val") -> ValResult:
    """Runs ``predict`` over ``source`` (random-access samples with ground truth) and scores it.

    Metrics come from ``jflow.metrics.MetricAccumulator``: every metric in both averaging
    conventions (``epe/pooled``, ``epe/per_image_mean``, ...) plus headline keys (``epe``,
    ``fl_all``, ...) in ``convention`` ("kitti": EPE per image, the rest pooled, as RAFT).

    The first ``num_pictures`` samples are rendered with ``jflow.viz.make_panel`` and, with
    ``pictures_dir``, written there as ``<tag>_<i>.png``.
    """
    from jflow import viz
    from jflow.metrics import MetricAccumulator
    n = len(source) if not max_samples else min(max_samples, len(source))
    if n == 0:
        raise ValueError(f"validate: dataset {tag!r} is empty")
    scores, pictures = MetricAccumulator(convention), []
    for i in range(n):
        sample = source[i]
        out = predict(sample["image1"], sample["image2"])
        valid = np.asarray(sample["valid"]) >= 0.5
        scores.update(out["flow"], sample["flow"], valid)
        if i < num_pictures:
            panel = viz.make_panel(sample["image1"], out["flow"], sample["flow"], valid)
            pictures.append(panel)
            if pictures_dir:
                os.makedirs(pictures_dir, exist_ok=True)
                from jflow import io as jio
                jio.write_image(os.path.join(pictures_dir, f"{tag}_{i}.png"), panel)
    return ValResult(scores.result(), pictures)


def build_eval_source(config: ml_collections.ConfigDict, spec: str, split: str = "val"):
    """The validation (or test) source of ``spec`` with the config's data root."""
    from jflow.data import build_source
    root = config.eval.root or config.data.root or None
    kwargs = {}
    if dataset_family(spec) == "synthetic":
        h, w = config.data.synthetic_size
        kwargs = {"num_samples": config.data.synthetic_val_size, "height": h, "width": w}
    return build_source(spec, root, split, config.seed, **kwargs)


def eval_iters(config: ml_collections.ConfigDict, spec: str) -> int:
    family = dataset_family(spec)
    return int(config.eval.iters.get(family, config.model.eval_iters))


def validate_spec(model, variables: PyTree, config: ml_collections.ConfigDict, spec: str, *,
                  pictures_dir: str | None = None, step: int | None = None,
                  num_pictures: int = 0) -> ValResult:
    """The official protocol for dataset ``spec`` (iterations and padding from the config)."""
    predict = make_predictor(model, variables, eval_iters(config, spec), padding_mode(spec))
    tag = spec if step is None else f"{spec}_step{step:06d}"
    return validate(predict, build_eval_source(config, spec), convention=padding_mode(spec),
                    max_samples=config.eval.max_samples,
                    num_pictures=num_pictures, pictures_dir=pictures_dir, tag=tag)


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("epe/pooled", "epe/per_image_mean", "fl_all/pooled", "fl_all/per_image_mean",
                 "1px/pooled", "3px/pooled", "5px/pooled", "images", "iters")


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A fixed-width table with both averaging conventions of EPE and Fl-all (%)."""
    widths = [max(len(c), 8) + 2 for c in TABLE_COLUMNS]
    name_w = max([len("dataset")] + [len(n) for n in results]) + 2
    head = "dataset".ljust(name_w) + "".join(c.rjust(w) for c, w in zip(TABLE_COLUMNS, widths))
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        cells = "".join((f"{int(m.get(c, 0))}" if c in ("images", "iters") else
                         f"{m.get(c, float('nan')):.4f}").rjust(w)
                        for c, w in zip(TABLE_COLUMNS, widths))
        lines.append(name.ljust(name_w) + cells)
    lines.append("pooled: over all valid pixels; per_image_mean: mean of per-image means. "
                 "RAFT/DEQ-Flow report Sintel EPE pooled, KITTI EPE per image and Fl-all pooled.")
    return "\n".join(lines)


def write_results(results: dict[str, dict[str, float]], workdir: str,
                  meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """``eval_results.json`` (with ``meta``) and ``eval_results.csv`` in ``workdir``."""
    os.makedirs(workdir, exist_ok=True)
    json_path = os.path.join(workdir, "eval_results.json")
    csv_path = os.path.join(workdir, "eval_results.csv")
    with open(json_path, "w") as f:
        json.dump({"results": results, "meta": meta or {}}, f, indent=1)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("dataset",) + TABLE_COLUMNS)
        for name, m in results.items():
            w.writerow((name,) + tuple(m.get(c, "") for c in TABLE_COLUMNS))
    return json_path, csv_path


# ----------------------------------------------------------------------------------------------
# Submissions
# ----------------------------------------------------------------------------------------------
def _splat(flow_low: Any) -> np.ndarray:
    """RAFT's warm start: a 1/8-resolution flow forward-splatted to the next frame."""
    return geometry.forward_interpolate(np.asarray(jax.device_get(flow_low), np.float32))


def write_sintel_submission(predict: Predictor, sources: dict[str, Sequence[dict]],
                            output_dir: str, *, warm_start: bool = True,
                            reuse_state: bool = False) -> list[str]:
    """Writes ``<output_dir>/<pass>/<scene>/frame%04d.flo`` (1-based) for every test pair.

    ``sources`` maps a pass name (clean, final) to its samples in scene order. Within a scene
    the next pair starts from the previous result, reset at each scene change:
    ``reuse_state`` (DEQ fixed-point reuse) passes ``state_init = {h*, splat(flow*)}``;
    otherwise ``warm_start`` (RAFT) passes ``flow_init = splat(flow_low)``. Never both, which
    would add the flow twice (deq-flow's bug).
    """
    from jflow import io as jio
    written = []
    for pass_name, source in sources.items():
        prev_scene, out = None, None
        for i in range(len(source)):
            sample = source[i]
            meta = sample["meta"]
            if meta["scene"] != prev_scene:
                out = None
            kwargs = {}
            if out is not None and reuse_state:
                kwargs["state_init"] = {"h": out["state"]["h"],
                                        "flow": _splat(out["state"]["flow"])}
            elif out is not None and warm_start:
                kwargs["flow_init"] = _splat(out["flow_low"])
            out = predict(sample["image1"], sample["image2"], **kwargs)
            path = os.path.join(output_dir, pass_name, meta["scene"],
                                f"frame{int(meta['frame']) + 1:04d}.flo")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            jio.write_flo(path, out["flow"])
            written.append(path)
            prev_scene = meta["scene"]
    return written


def write_kitti_submission(predict: Predictor, source: Sequence[dict], output_dir: str
                           ) -> list[str]:
    """Writes ``<output_dir>/<N>_10.png`` (KITTI 16-bit flow PNG, all pixels valid)."""
    from jflow import io as jio
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for i in range(len(source)):
        sample = source[i]
        out = predict(sample["image1"], sample["image2"])
        path = os.path.join(output_dir, f"{sample['meta']['scene']}_10.png")
        jio.write_kitti_flow(path, out["flow"])
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def load_model(config: ml_collections.ConfigDict, workdir: str):
    """The model of ``config`` and its variables from ``config.eval.checkpoint`` or ``workdir``."""
    from jflow import checkpoint
    from jflow.models import model_from_config
    model = model_from_config(config)
    loaded = checkpoint.load_checked(config.eval.checkpoint or workdir, model,
                                     str(config.model.name))
    meta = loaded.pop("meta")
    return model, loaded, meta


def evaluate_and_report(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Evaluates ``config.eval.datasets`` (or writes ``config.eval.submission``) and reports."""
    model, variables, meta = load_model(config, workdir)
    print(f"Evaluating {config.model.name} (checkpoint step {meta.get('step')}, "
          f"{config.eval.checkpoint or workdir})", flush=True)
    if config.eval.submission:
        return {"written": write_submission(config, model, variables, workdir)}
    results = {}
    for spec in config.eval.datasets:
        res = validate_spec(model, variables, config, spec,
                            pictures_dir=os.path.join(workdir, "eval_pictures"),
                            num_pictures=config.train.num_pictures)
        results[spec] = dict(res.metrics, iters=eval_iters(config, spec))
        print(f"{spec}: EPE {res.metrics['epe']:.4f} ({eval_iters(config, spec)} iterations)",
              flush=True)
    print(format_table(results), flush=True)
    paths = write_results(results, workdir, {"checkpoint": config.eval.checkpoint or workdir,
                                             "step": meta.get("step"), "model": config.model.name})
    print(f"Results written to {paths[0]} and {paths[1]}", flush=True)
    return results


def write_submission(config: ml_collections.ConfigDict, model, variables: PyTree,
                     workdir: str) -> list[str]:
    """Sintel (clean + final, warm start / state reuse) or KITTI test-set submission files."""
    kind = config.eval.submission
    output = config.eval.output or os.path.join(workdir, f"{kind}_submission")
    if kind == "sintel":
        predict = make_predictor(model, variables, eval_iters(config, "sintel"), "sintel")
        sources = {p: build_eval_source(config, f"sintel_{p}", "test") for p in ("clean", "final")}
        from jflow.models import is_deq
        deq = is_deq(config)
        written = write_sintel_submission(predict, sources, output,
                                          warm_start=config.eval.warm_start and not deq,
                                          reuse_state=config.eval.warm_start and deq)
    elif kind == "kitti":
        predict = make_predictor(model, variables, eval_iters(config, "kitti"), "kitti")
        written = write_kitti_submission(predict, build_eval_source(config, "kitti", "test"), output)
    else:
        raise ValueError(f"config.eval.submission must be 'sintel' or 'kitti', got {kind!r}")
    print(f"Wrote {len(written)} {kind} submission files to {output}", flush=True)
    return written
