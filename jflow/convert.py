"""Official PyTorch checkpoints (RAFT, RAFT-small, GMA, DEQ-Flow v1/v2) -> jflow orbax checkpoints.

    python -m jflow.convert --config=configs/deq_raft.py:H \\
        --torch_checkpoint=deq-flow-H-things-test-1x.pth --output=/tmp/deq_h

The ``.pth`` (or Lightning ``.ckpt``) is read with :mod:`jflow.torch_pickle` (no torch, no
pickled code is executed); a ``.safetensors`` file (HuggingFace, e.g. SEA-RAFT's
``model.safetensors``) with ``safetensors.numpy``. Keys are mapped onto the variables of the model
that ``config`` builds:

* the ``module.`` prefix (DataParallel) is dropped, and a ``model.`` prefix when every key has it
  (a Lightning module wrapping the network);
* torch module paths become Flax paths: ``fnet.layer1.0.conv1`` -> ``fnet/layer1_0/conv1`` (a
  numeric index joins its parent with ``_``; ``parent/layers_<i>`` is tried as well);
* conv ``weight`` OIHW -> ``kernel`` HWIO; norm ``weight`` -> ``scale``; BatchNorm
  ``running_mean/var`` -> ``batch_stats/.../mean|var``; ``num_batches_tracked`` is dropped;
* weight norm: ``weight_g``/``weight_v`` map to ``kernel_g``/``kernel_v`` when the model keeps
  them (exact), and are folded ``w = g v/||v||`` when it has a plain ``kernel``; a plain
  ``weight`` loads into a weight-normed conv as ``v = w, g = ||w||`` (also exact);
* DEQ-Flow v1 keeps the mask head inside the update block (``update_block.mask.*``): it is moved
  to ``mask.*`` when the model has it there;
* strided BatchNorm residual blocks register one BatchNorm twice (``norm3``, or ``norm4`` in
  bottleneck blocks, and ``downsample.1``): the copies must be equal and one is loaded; a file
  holding only one of the two names (safetensors keeps one name of shared tensors) loads too;
* GMA's position tables (``att.pos_emb.*``) are unused in content-only attention: when the model
  has no such variables they are ignored with a logged note.

Every other difference -- a model variable with no tensor, a tensor with no variable, a shape
mismatch -- is collected and raised as one :class:`ConversionError`; nothing is loaded non-strictly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np

from jflow.deq.weight_norm import fold_weight_norm
from jflow.errors import UserError
from jflow.torch_pickle import load_torch_state_dict

log = logging.getLogger("jflow.convert")  # not __main__ under python -m

PyTree = Any
Path = tuple[str, ...]
# Tensors of the official models that no jflow variable needs in the given mode.
IGNORABLE = (
    (re.compile(r"(^|\.)att\.pos_emb\.(rel_height\.weight|rel_width\.weight|rel_ind)$"),
     "GMA position embedding (tables, index buffer), unused by content-only attention"),
    (re.compile(r"(^|\.)attn\.pos_emb\..*$"), "DEQ-GMA position tables, unused"),
)
# Module paths registered twice in torch (the same BatchNorm under two names): residual blocks
# alias ``downsample.1`` to ``norm3``, bottleneck blocks to ``norm4`` (tried first), SEA-RAFT's
# ResNet-FPN blocks to ``bn3``.
ALIASES = (("downsample.1", "norm4"), ("downsample.1", "norm3"), ("downsample.1", "bn3"))
# Module moves between checkpoint layouts: (torch prefix, alternative prefix).
MOVES = (("update_block.mask.", "mask."),)


class ConversionError(UserError):
    """The checkpoint does not match the model: lists every missing, unexpected or misshapen key."""


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _module_candidates(module: str) -> list[Path]:
    """Flax module paths a dotted torch module path may have: ``a.0.b`` -> a_0/b, a/layers_0/b."""
    tokens = [t for t in module.split(".") if t]
    joined: list[str] = []
    layered: list[str] = []
    for t in tokens:
        if t.isdigit() and joined:
            joined[-1] = f"{joined[-1]}_{t}"
            layered.append(f"layers_{t}")
        else:
            joined.append(t)
            layered.append(t)
    return list(dict.fromkeys([tuple(joined), tuple(layered)]))


def _hwio(w: np.ndarray) -> np.ndarray:
    if w.ndim == 4:
        return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO
    if w.ndim == 2:
        return np.transpose(w)  # Linear (out, in) -> (in, out)
    raise ValueError(f"cannot convert a {w.ndim}-d weight into a kernel")


def _vnorm(v_hwio: np.ndarray) -> np.ndarray:
    v64 = v_hwio.astype(np.float64)
    return np.sqrt(np.sum(v64 * v64, axis=tuple(range(v64.ndim - 1)))).astype(v_hwio.dtype)


class _Target:
    """Index of the model's variables: (collection, module path) -> {leaf name: shape/dtype}."""

    def __init__(self, variables: Mapping[str, PyTree]):
        self.leaves: dict[tuple[str, Path], dict[str, Any]] = {}
        for collection, tree in variables.items():
            for path, leaf in _flatten(tree).items():
                self.leaves.setdefault((collection, path[:-1]), {})[path[-1]] = leaf

    def module(self, candidates: Iterable[Path], names: Iterable[str]) -> Path | None:
        """First candidate module path that has any of ``names`` in params or batch_stats."""
        names = set(names)
        for path in candidates:
            for collection in ("params", "batch_stats"):
                if names & set(self.leaves.get((collection, path), {})):
                    return path
        return None

    def has(self, collection: str, path: Path, name: str) -> bool:
        return name in self.leaves.get((collection, path), {})


def _group_by_module(state: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        groups.setdefault(module, {})[leaf] = value
    return groups


def _module_tensors(module: str, tensors: Mapping[str, np.ndarray], path: Path,
                    target: _Target) -> tuple[dict[tuple[str, Path], np.ndarray], list[str]]:
    """Maps one torch module's tensors onto ``path``; returns {(collection, leaf path): array} and
    the torch keys it could not place."""
    out: dict[tuple[str, Path], np.ndarray] = {}
    left: list[str] = []
    params = lambda name: ("params", path + (name,))  # noqa: E731
    tensors = dict(tensors)
    tensors.pop("num_batches_tracked", None)
    wn = target.has("params", path, "kernel_v")
    if "weight_v" in tensors and "weight_g" in tensors:
        v = _hwio(tensors.pop("weight_v"))
        g = tensors.pop("weight_g").reshape(-1)
        if wn:
            out[params("kernel_v")], out[params("kernel_g")] = v, g
        else:
            out[params("kernel")] = fold_weight_norm(v, g)
    if "weight" in tensors:
        w = tensors.pop("weight")
        if wn and w.ndim == 4:
            out[params("kernel_v")] = _hwio(w)
            out[params("kernel_g")] = _vnorm(_hwio(w))
        elif target.has("params", path, "kernel"):
            out[params("kernel")] = _hwio(w)
        elif target.has("params", path, "scale"):
            out[params("scale")] = w
        elif target.has("params", path, "embedding"):
            out[params("embedding")] = w
        else:
            left.append(f"{module}.weight")
    for torch_name, flax_name in (("running_mean", "mean"), ("running_var", "var")):
        if torch_name in tensors:
            out[("batch_stats", path + (flax_name,))] = tensors.pop(torch_name)
    for name, value in tensors.items():  # bias, gamma, ... keep their names
        if target.has("params", path, name):
            out[params(name)] = value
        else:
            left.append(f"{module}.{name}")
    return out, left


def torch_to_flax(state_dict: Mapping[str, np.ndarray], variables: Mapping[str, PyTree], *,
                  source: str = "state_dict") -> dict[str, PyTree]:
    """Maps an official state_dict onto ``variables`` (the model's own variables or their shapes,
    ``jflow.models.variable_shapes(model)``); returns ``{'params': ..., 'batch_stats': ...}`` of
    numpy arrays in the target dtypes. Raises :class:`ConversionError` listing every mismatch."""
    target = _Target(variables)
    state = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
             for k, v in state_dict.items()}
    unexpected: list[str] = []
    ignored: list[str] = []
    mapped: dict[tuple[str, Path], tuple[str, np.ndarray]] = {}
    conflicts: list[str] = []
    for module, tensors in _group_by_module(state).items():
        candidates = list(_module_candidates(module))
        for old, new in MOVES:
            if (module + ".").startswith(old):
                candidates += _module_candidates(new + (module + ".")[len(old):].rstrip("."))
        for old, new in ALIASES:
            if module.endswith(old):
                candidates += _module_candidates(module[: -len(old)] + new)
        leaf_names = {"kernel", "kernel_v", "scale", "bias", "mean", "var", "embedding",
                      *tensors}
        path = target.module(candidates, leaf_names)
        if path is None:
            out, left = {}, [f"{module}.{name}" if module else name for name in tensors
                             if name != "num_batches_tracked"]
        else:
            out, left = _module_tensors(module, tensors, path, target)
        for key in left:
            reason = next((why for pat, why in IGNORABLE if pat.search(key)), None)
            if reason:
                ignored.append(f"{key} ({reason})")
            else:
                unexpected.append(key)
        for leaf, value in out.items():
            if leaf in mapped:
                other_key, other = mapped[leaf]
                if other.shape != value.shape or not np.array_equal(other, value):
                    conflicts.append(f"{other_key} and {module} both map to {'/'.join(leaf[1])} "
                                     "but differ")
                continue
            mapped[leaf] = (module, value)
    if ignored:
        log.info("%s: ignoring %d tensors the model does not use: %s", source, len(ignored),
                 ", ".join(sorted(ignored)))

    expected = {(c, p + (n,)): leaf for (c, p), leaves in target.leaves.items()
                for n, leaf in leaves.items()}
    missing = sorted("/".join((c,) + p) for (c, p) in expected if (c, p) not in mapped)
    misshapen = []
    result: dict[tuple[str, Path], np.ndarray] = {}
    for leaf, (module, value) in mapped.items():
        want = expected.get(leaf)
        if want is None:
            unexpected.append(f"{module} -> {'/'.join((leaf[0],) + leaf[1])}")
            continue
        if tuple(want.shape) != tuple(value.shape):
            misshapen.append(f"{module} -> {'/'.join((leaf[0],) + leaf[1])}: checkpoint "
                             f"{tuple(value.shape)}, model {tuple(want.shape)}")
            continue
        result[leaf] = np.asarray(value, dtype=want.dtype)
    problems = []
    for title, items in (("model variables with no tensor in the checkpoint", missing),
                         ("checkpoint tensors the model has no variable for", sorted(unexpected)),
                         ("shape mismatches", misshapen), ("conflicting duplicates", conflicts)):
        if items:
            problems.append(f"{len(items)} {title}:\n  " + "\n  ".join(items))
    if problems:
        raise ConversionError(f"{source} does not match the model:\n" + "\n".join(problems))
    by_collection: dict[str, dict[Path, np.ndarray]] = {}
    for (collection, path), value in result.items():
        by_collection.setdefault(collection, {})[path] = value
    out = {c: _unflatten(flat) for c, flat in by_collection.items()}
    out.setdefault("batch_stats", {})
    return out


# ------------------------------------------------------------------------------- model plumbing

SAFETENSORS_SUFFIXES = (".safetensors",)


def _is_safetensors(path: str) -> bool:
    """By suffix, or by content: an 8-byte little-endian header length, then a JSON ``{``."""
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: array}`` from a PyTorch ``.pth`` / Lightning ``.ckpt`` (:mod:`jflow.torch_pickle`,
    no code executed) or a ``.safetensors`` file (``safetensors.numpy``); a ``model.`` prefix on
    every key (a Lightning module holding the network as ``self.model``) is dropped."""
    path = os.fspath(path)
    if _is_safetensors(path):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ConversionError(f"{path}: reading .safetensors needs the safetensors package "
                                  "(pip install safetensors)") from None
        try:
            state = dict(load_file(path))
        except Exception as e:  # noqa: BLE001  (SafetensorError, OSError, ValueError ...)
            raise ConversionError(f"{path}: not a readable safetensors file "
                                  f"({type(e).__name__}: {e})") from None
    else:
        state = load_torch_state_dict(path)
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    return state


def _preprocess_liteflownet2(state: dict[str, np.ndarray], config, source: str
                             ) -> dict[str, np.ndarray]:
    from jflow.models.liteflownet2 import ptlflow_to_jflow_state
    return ptlflow_to_jflow_state(state, str(config.model.get("variant", "sintel")), source)


def _preprocess_sea_raft(state: dict[str, np.ndarray], config, source: str
                         ) -> dict[str, np.ndarray]:
    from jflow.models.sea_raft import check_checkpoint_size
    check_checkpoint_size(state, str(config.model.get("size", "S")), source)
    return state


# Per-model re-layout of a checkpoint before the generic mapping: model name ->
# fn(state_dict, config, source) -> state_dict (e.g. ptlflow's LiteFlowNet2: transposed convs,
# frozen constants; SEA-RAFT and DEQ SEA-RAFT, which has its parameters: one clear error for
# another size or model).
PREPROCESS = {"liteflownet2": _preprocess_liteflownet2, "sea_raft": _preprocess_sea_raft,
              "deq_sea_raft": _preprocess_sea_raft}


def convert_checkpoint(config, torch_checkpoint: str | os.PathLike, output: str | os.PathLike
                       ) -> str:
    """Reads ``torch_checkpoint``, maps it onto the model ``config`` builds and writes an orbax
    checkpoint (step 0, no optimiser state) under ``output``; returns the step directory."""
    from jflow.checkpoint import save_checkpoint
    from jflow.models import build_model, variable_shapes

    torch_checkpoint = os.fspath(torch_checkpoint)
    existing = os.path.join(os.fspath(output), "0")
    if os.path.exists(existing):
        raise ConversionError(f"--output {output}: already holds a converted checkpoint "
                              f"({existing}); choose a new folder or remove it")
    state = load_state_dict(torch_checkpoint)
    model = build_model(config.model, config.deq if "deq" in config else None)
    prep = PREPROCESS.get(str(config.model.name))
    if prep is not None:
        state = prep(state, config, torch_checkpoint)
    variables = torch_to_flax(state, variable_shapes(model), source=torch_checkpoint)
    with open(torch_checkpoint, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    meta = {"config": json.loads(config.to_json_best_effort()), "model": str(config.model.name),
            "source": os.path.abspath(torch_checkpoint), "sha256": digest,
            "converted_by": "jflow.convert"}
    return save_checkpoint(output, 0, variables["params"], variables["batch_stats"] or None,
                           None, meta)


def main(argv) -> None:
    from absl import flags

    del argv
    from jflow.cli import cli_logging

    cli_logging()
    cfg = flags.FLAGS.config
    out = convert_checkpoint(cfg, flags.FLAGS.torch_checkpoint, flags.FLAGS.output)
    print(f"wrote {out}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "model config file, e.g. configs/raft.py",
                                    lock_config=False)
    flags.DEFINE_string("torch_checkpoint", None, "official checkpoint: PyTorch .pth, Lightning "
                        ".ckpt (ptlflow) or HuggingFace .safetensors")
    flags.DEFINE_string("output", None, "output directory (orbax checkpoint, step 0)")
    flags.mark_flags_as_required(["config", "torch_checkpoint", "output"])


def run() -> None:
    """Console entry point ``jflow-convert`` (same as ``python -m jflow.convert``)."""
    from jflow.cli import run_app

    run_app(main, _define_flags)


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so that the error classes raised
    # inside jflow are the ones the friendly-error handler catches.
    from jflow.convert import run as _run

    _run()
