"""torchvision ImageNet ResNet-18/34 checkpoints -> SEA-RAFT's encoder stems (``cnet``, ``fnet``).

The official SEA-RAFT builds both ResNet-FPN encoders with ``init_weight=True``: Kaiming init
(fan_out, every conv bias 0, BatchNorm 1/0), then torchvision's ``IMAGENET1K_V1`` ResNet-18 (S)
or ResNet-34 (M, L) state_dict is loaded for every key the encoder shares with it: ``conv1``,
``bn1`` and the blocks of ``layer1``-``layer3`` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``downsample.0``, ``downsample.1`` = jflow's ``bn3``), weights and running statistics. ``layer4``
and ``fc`` have no counterpart; ``final_conv`` keeps its init. ``cnet`` takes 6 channels (both
images): its ``conv1`` is the ImageNet kernel concatenated with itself along the input channels
(not halved). torchvision convs have no bias, so the loaded convs keep the official zero bias;
:func:`init_encoders` also zeroes ``final_conv``'s bias as the official init does.

Reads ``resnet18-*.pth`` / ``resnet34-*.pth`` (download.pytorch.org, either pickle format) or a
``.safetensors`` export with :func:`jflow.convert.load_state_dict`: no torch, no torchvision.
Training applies it with ``config.model.init_encoder_from=PATH`` (jflow.train).
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from jflow.convert import ConversionError, load_state_dict

# torchvision BasicBlock ResNets: blocks per stage (layer1..layer4)
DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}
ENCODERS = ("cnet", "fnet")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def resnet_blocks(state: dict[str, np.ndarray], source: str) -> tuple[int, ...]:
    """Blocks per stage (layer1..layer4) of a torchvision BasicBlock ResNet state_dict; a
    :class:`ConversionError` for anything else (another model, a Bottleneck ResNet-50+)."""
    counts = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in state
               if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(max(idx) + 1 if idx else 0)
    if "conv1.weight" not in state or not all(counts):
        sample = ", ".join(f"{k} {tuple(np.shape(state[k]))}" for k in list(state)[:4])
        raise ConversionError(
            f"{source} is not a torchvision ResNet state_dict: it needs conv1.weight and "
            f"layer1..layer4 blocks (first keys: {sample or 'none'}; {len(state)} in all)")
    if any(k.endswith(".conv3.weight") for k in state):
        raise ConversionError(
            f"{source} is a Bottleneck ResNet (ResNet-50 or deeper; blocks {tuple(counts)}); "
            "SEA-RAFT's encoders take torchvision ResNet-18 (S) or ResNet-34 (M, L)")
    return tuple(counts)


def encoder_blocks(params: dict, net: str) -> tuple[int, ...]:
    """Blocks per stage of a SEA-RAFT ResNet-FPN encoder's parameters (``layerI_J`` entries)."""
    return tuple(sum(1 for k in params[net] if k.startswith(f"layer{i}_")) for i in (1, 2, 3))


def _pairs(blocks: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(torch module prefix, jflow module path, "conv" | "bn") of every loaded module."""
    out = [("conv1", "conv1", "conv"), ("bn1", "bn1", "bn")]
    for i, n in enumerate(blocks, start=1):
        for j in range(n):
            t, f = f"layer{i}.{j}.", f"layer{i}_{j}/"
            out += [(t + m, f + m, "bn" if m.startswith("bn") else "conv")
                    for m in ("conv1", "bn1", "conv2", "bn2")]
            out += [(t + "downsample.0", f + "downsample_0", "conv"),
                    (t + "downsample.1", f + "bn3", "bn")]
    return out


def init_encoders(variables: dict, state: dict[str, np.ndarray], source: str = "checkpoint"
                  ) -> dict:
    """``variables`` (``{"params", "batch_stats"}`` of a SEA-RAFT or DEQ SEA-RAFT model) with
    both encoders initialised from a torchvision ResNet ``state``, as the official code does.
    Returns new nested dicts of numpy arrays; raises :class:`ConversionError` when the depth or
    a shape does not fit."""
    params, stats = variables.get("params", {}), variables.get("batch_stats", {})
    if not all(net in params and {"bn1", "layer1_0", "final_conv"} <= set(params[net])
               for net in ENCODERS):
        raise ConversionError("config.model.init_encoder_from: the model has no SEA-RAFT "
                              "ResNet-FPN encoders (cnet, fnet); only sea_raft and deq_sea_raft "
                              "take torchvision weights")
    want = encoder_blocks(params, "fnet")
    _check_depth(resnet_blocks(state, source), want, source)

    tree = {"params": _copy(params), "batch_stats": _copy(stats)}
    for net in ENCODERS:
        for torch_name, path, kind in _pairs(want):
            if (torch_name + ".weight") not in state:
                continue  # blocks without a shortcut have no downsample
            keys = [net, *path.split("/")]
            if kind == "bn":
                for key, (col, name) in _BN.items():
                    _put(tree[col], keys, name, state.get(f"{torch_name}.{key}"),
                         f"{source}: {torch_name}.{key}")
                continue
            w = np.asarray(state[f"{torch_name}.weight"], np.float32)
            doubled = net == "cnet" and torch_name == "conv1"  # 6 input channels: cat(v, v)
            conv = _walk(tree["params"], keys) or {}
            if "kernel" in conv:
                kh, kw, i, o = np.shape(conv["kernel"])
                want_torch = (o, i // 2 if doubled else i, kh, kw)
                if w.shape != want_torch:
                    raise ConversionError(f"{source}: {torch_name}.weight has shape {w.shape}, "
                                          f"the model ({net}) expects {want_torch}")
            if doubled:
                w = np.concatenate([w, w], axis=1)
            _put(tree["params"], keys, "kernel", np.transpose(w, (2, 3, 1, 0)),
                 f"{source}: {torch_name}.weight")
            conv["bias"] = np.zeros_like(conv["bias"])
        final = tree["params"][net]["final_conv"]
        final["bias"] = np.zeros_like(final["bias"])
    return tree


def _check_depth(tv: tuple[int, ...], want: tuple[int, ...], source: str) -> None:
    if tv[:3] != want:
        have = f"ResNet-{DEPTHS[tv]}" if tv in DEPTHS else f"a ResNet with blocks {tv}"
        need = {(2, 2, 2): "resnet18 (SEA-RAFT S)", (3, 4, 6): "resnet34 (SEA-RAFT M, L)"}
        raise ConversionError(
            f"{source} is {have} (blocks per stage {tv}) but the model's encoders have "
            f"{want} blocks in their 3 stages: use a torchvision "
            f"{need.get(want, 'ResNet with matching stages')} checkpoint")


def _read(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"config.model.init_encoder_from: {path} is not a file (a "
                              "torchvision resnet18-*.pth / resnet34-*.pth checkpoint)")
    return path, load_state_dict(path)


def read_for_config(path: str | os.PathLike, config: Any) -> dict[str, np.ndarray]:
    """The state_dict of ``config.model.init_encoder_from``, checked against the config alone
    (a readable torchvision BasicBlock ResNet of the depth the SEA-RAFT size needs, a model
    that has the encoders) so that a wrong path or file is one :class:`ConversionError` before
    any model is built or compiled."""
    from jflow.models.sea_raft import SEA_RAFT_SIZES

    path, state = _read(path)
    name, size = str(config.model.name), str(config.model.get("size", "")).upper()
    if name not in ("sea_raft", "deq_sea_raft") or size not in SEA_RAFT_SIZES:
        raise ConversionError(f"config.model.init_encoder_from: model {name} (size {size or '-'})"
                              " has no SEA-RAFT ResNet-FPN encoders; only sea_raft and "
                              "deq_sea_raft (sizes S, M, L) take torchvision weights")
    _check_depth(resnet_blocks(state, path), SEA_RAFT_SIZES[size][0], path)
    return state


def init_encoders_from(path: str | os.PathLike, variables: dict,
                       state: dict[str, np.ndarray] | None = None) -> dict:
    """:func:`init_encoders` with the state_dict read from ``path`` (``.pth`` or
    ``.safetensors``), or ``state`` when given (already read from ``path``)."""
    if state is None:
        path, state = _read(path)
    return init_encoders(variables, state, os.fspath(path))


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _copy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _walk(tree: dict, keys: list[str]) -> dict | None:
    for k in keys:
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def _put(tree: dict, keys: list[str], name: str, value: Any, what: str) -> None:
    module = _walk(tree, keys)
    if value is None:
        raise ConversionError(f"{what} is missing")
    if module is None or name not in module:
        raise ConversionError(f"{what}: the model has no {'/'.join(keys)}/{name}")
    value = np.asarray(value)
    if value.shape != np.shape(module[name]):
        raise ConversionError(f"{what} has shape {value.shape}, the model expects "
                              f"{np.shape(module[name])}")
    module[name] = value.astype(np.asarray(module[name]).dtype)
