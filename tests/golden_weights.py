"""Seeded official-layout weights and golden files for the fidelity tests (numpy only).

The fidelity tests (``tests/test_fidelity.py``) compare jflow with the official PyTorch code on
the same weights. The weights are not stored: they are regenerated from the official model's key
list, shapes and dtypes and a seed by :func:`seeded_state_dict`, which ``tools/fidelity/
make_golden.py`` (the side-environment script that runs the official code) also uses. Only small
arrays enter the repository: the key list, the input images and the official flow.

Recipe (``seeded_state_dict``): one ``np.random.default_rng(seed)``, keys in sorted order, every
value drawn in float64 and then rounded to the key's dtype (float32 for every official model):

==============================================  ==========================================
key                                             value
==============================================  ==========================================
``*.weight`` / ``*.weight_v`` with ndim >= 2     U(-b, b), b = 1/sqrt(fan_in) (torch's default
                                                conv/linear scale), fan_in = prod(shape[1:])
``*.bias`` next to such a weight                U(-b, b) with that weight's b
``*.weight_g`` (weight norm)                    ||v|| * U(0.8, 1.2), ||v|| over all axes but 0
                                                of the sibling ``weight_v`` (computed in float64
                                                from the float32-rounded v)
``*.weight`` with ndim <= 1 (norm scale)        U(0.5, 1.5)
``*.gamma`` (GMA's aggregation weight)          U(0.5, 1.5) (non-zero, unlike its init)
``*.running_mean``                              U(-0.1, 0.1)
``*.running_var``                               U(0.5, 1.5)
any other floating tensor (norm ``bias``, ...)  U(-0.1, 0.1)
integer tensors (``num_batches_tracked``, ...)  0, no draw
aliases (one tensor under two keys)             a copy of the first key of the group, no draw
``fixed`` keys                                  the stored value, no draw
==============================================  ==========================================

Each non-integer, non-alias, non-fixed key draws exactly ``prod(shape)`` uniforms in sorted-key
order (``weight_g`` draws its U(0.8, 1.2) factors at its own turn and is scaled by ``||v||`` at
the end), so the values depend on the set of keys, shapes and dtypes, not on the order in which
the model lists them.

Golden file (``tests/data/golden/<name>.npz``, written by :func:`save_golden`)::

    format_version  int, 1
    name            str, e.g. "raft_small"
    config          str, the jflow config, e.g. "configs/raft.py:small", "configs/deq_raft.py:H"
    overrides       str, JSON {dotted config key: value} applied after get_config ("{}")
    iters           int, the ``iters`` passed to ``model.apply`` (-1: not passed)
    seed            int, the weights' seed
    tensors         str, JSON [[key, shape, dtype], ...] of the official state_dict (no
                    ``module.`` prefix)
    aliases         str, JSON {key: source key} for tensors registered twice in torch
    weights_sha256  str, :func:`state_dict_sha256` of the weights the official code ran with
                    (the tests check that the recipe still regenerates them)
    fixed:<key>     arrays stored verbatim (non-learned buffers whose value matters; optional)
    image1, image2  uint8 (B, H, W, 3) RGB, the model inputs (NHWC, as jflow takes them)
    flow            (B, H, W, 2) the official flow at full resolution, float64 run; float32
                    when rounding changes it by < 1e-6 px, else float64
    flow_low        (B, H/8, W/8, 2) optional, the official low-resolution flow (1/8 px units)
    extra:<name>    optional further official outputs (float64 run), compared with the model's
                    ``out[<name>]`` to ``atol`` (SEA-RAFT: ``info``, ``uncertainty``)
    atol            float, the tolerance on max |flow - golden| in px (1e-3: jflow's fidelity
                    criterion, float32 jflow vs float64 official)
    official_f32_err float, max |official float32 - official float64| in px, for scale
    provenance      str, JSON: official repository, commit, torch version, shims, command

To add a model: run the official code on ``seeded_state_dict(<its keys>, seed)`` in float64 and
write the file with :func:`save_golden` (``tools/fidelity/make_golden.py`` does this for the
RAFT family); ``tests/test_fidelity.py`` picks up every ``*.npz`` in ``tests/data/golden``. It
builds the model from ``config`` (+ ``overrides``), applies ``jflow.convert.PREPROCESS[model
name]`` if there is one, maps the weights with ``jflow.convert.torch_to_flax``, calls
``model.apply(variables, image1, image2[, iters=iters])`` on float32 images and compares
``out["flow"]`` (and ``out["flow_low"]``, to ``atol / 8``, when both exist).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

FORMAT_VERSION = 1
DEFAULT_ATOL = 1e-3  # px, float32 jflow vs float64 official (the project's fidelity criterion)
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")


def _leaf(key: str) -> tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _fan_in(shape: Sequence[int]) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def seeded_state_dict(keys_and_shapes: Iterable[tuple[str, Sequence[int]]] |
                      Mapping[str, Sequence[int]], seed: int, *,
                      dtypes: Mapping[str, str] | None = None,
                      aliases: Mapping[str, str] | None = None,
                      fixed: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Deterministic official-layout weights: ``{key: array}`` in sorted-key order, filled by the
    recipe in the module docstring from ``np.random.default_rng(seed)``.

    ``dtypes`` maps keys to numpy dtype names (default: ``int64`` for ``num_batches_tracked``,
    ``float32`` otherwise); ``aliases`` maps a key to the key whose tensor it shares; ``fixed``
    gives values to use verbatim.
    """
    items = keys_and_shapes.items() if isinstance(keys_and_shapes, Mapping) else keys_and_shapes
    shapes = {str(k): tuple(int(s) for s in shape) for k, shape in items}
    dtypes = dict(dtypes or {})
    aliases = dict(aliases or {})
    fixed = dict(fixed or {})
    for key, src in aliases.items():
        if key not in shapes or src not in shapes or shapes[key] != shapes[src]:
            raise ValueError(f"alias {key} -> {src}: both keys must exist with equal shapes")

    def dtype_of(key: str) -> np.dtype:
        default = "int64" if key.endswith("num_batches_tracked") else "float32"
        return np.dtype(dtypes.get(key, default))

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    g_factors: dict[str, np.ndarray] = {}
    for key in sorted(shapes):
        shape, dtype = shapes[key], dtype_of(key)
        module, leaf = _leaf(key)
        if key in aliases:
            continue
        if key in fixed:
            value = np.asarray(fixed[key])
            if value.shape != shape:
                raise ValueError(f"fixed value of {key}: shape {value.shape}, expected {shape}")
            out[key] = value.astype(dtype)
            continue
        if not np.issubdtype(dtype, np.floating):
            out[key] = np.zeros(shape, dtype)
            continue
        weight = shapes.get(f"{module}.weight", shapes.get(f"{module}.weight_v"))
        if leaf in ("weight", "weight_v") and len(shape) >= 2:
            b = 1.0 / np.sqrt(_fan_in(shape))
            value = rng.uniform(-b, b, shape)
        elif leaf == "bias" and weight is not None and len(weight) >= 2:
            b = 1.0 / np.sqrt(_fan_in(weight))
            value = rng.uniform(-b, b, shape)
        elif leaf == "weight_g":
            if f"{module}.weight_v" not in shapes:
                raise ValueError(f"{key} has no {module}.weight_v")
            g_factors[key] = rng.uniform(0.8, 1.2, shape)
            continue
        elif leaf in ("weight", "gamma", "running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # running_mean, norm biases, anything else
            value = rng.uniform(-0.1, 0.1, shape)
        out[key] = value.astype(dtype)
    for key, factor in g_factors.items():
        v = out[key[: -len("weight_g")] + "weight_v"].astype(np.float64)
        norm = np.sqrt(np.sum(v.reshape(v.shape[0], -1) ** 2, axis=1))
        out[key] = (norm.reshape(factor.shape) * factor).astype(dtype_of(key))
    for key, src in aliases.items():
        out[key] = out[src].copy()
    return {key: out[key] for key in sorted(out)}


def state_dict_sha256(state: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the sorted keys, each key's dtype, shape and little-endian bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        a = np.asarray(state[key])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Golden:
    """One golden file, loaded (see the module docstring for the fields)."""

    path: str
    name: str
    config: str
    overrides: dict[str, Any]
    iters: int | None
    seed: int
    tensors: list[tuple[str, tuple[int, ...], str]]
    aliases: dict[str, str]
    weights_sha256: str
    fixed: dict[str, np.ndarray]
    image1: np.ndarray
    image2: np.ndarray
    flow: np.ndarray
    flow_low: np.ndarray | None
    atol: float
    official_f32_err: float
    provenance: dict[str, Any]
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The official state_dict the golden flow was computed with (regenerated)."""
        return seeded_state_dict([(k, s) for k, s, _ in self.tensors], self.seed,
                                 dtypes={k: d for k, _, d in self.tensors},
                                 aliases=self.aliases, fixed=self.fixed)


def load_golden(path: str | os.PathLike) -> Golden:
    with np.load(path, allow_pickle=False) as z:
        version = int(z["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: golden format {version}, expected {FORMAT_VERSION}")
        iters = int(z["iters"])
        return Golden(
            path=os.fspath(path), name=str(z["name"]), config=str(z["config"]),
            overrides=json.loads(str(z["overrides"])), iters=None if iters < 0 else iters,
            seed=int(z["seed"]),
            tensors=[(k, tuple(s), d) for k, s, d in json.loads(str(z["tensors"]))],
            aliases=json.loads(str(z["aliases"])), weights_sha256=str(z["weights_sha256"]),
            fixed={k[len("fixed:"):]: z[k] for k in z.files if k.startswith("fixed:")},
            image1=z["image1"], image2=z["image2"], flow=z["flow"],
            flow_low=z["flow_low"] if "flow_low" in z.files else None,
            atol=float(z["atol"]), official_f32_err=float(z["official_f32_err"]),
            provenance=json.loads(str(z["provenance"])),
            extras={k[len("extra:"):]: z[k] for k in z.files if k.startswith("extra:")})


def golden_files(directory: str | os.PathLike = GOLDEN_DIR) -> list[str]:
    """The ``*.npz`` golden files in ``directory``, sorted."""
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".npz"))


def _compact(flow64: np.ndarray) -> np.ndarray:
    """float32 when that changes the flow by < 1e-6 px, else float64."""
    flow64 = np.asarray(flow64, np.float64)
    f32 = flow64.astype(np.float32)
    return f32 if np.max(np.abs(f32.astype(np.float64) - flow64), initial=0.0) < 1e-6 else flow64


def save_golden(path: str | os.PathLike, *, name: str, config: str, iters: int | None, seed: int,
                tensors: Sequence[tuple[str, Sequence[int], str]], weights_sha256: str,
                image1: np.ndarray, image2: np.ndarray, flow: np.ndarray,
                official_f32_err: float,
                provenance: Mapping[str, Any], aliases: Mapping[str, str] | None = None,
                fixed: Mapping[str, np.ndarray] | None = None,
                flow_low: np.ndarray | None = None, overrides: Mapping[str, Any] | None = None,
                atol: float = DEFAULT_ATOL,
                extras: Mapping[str, np.ndarray] | None = None) -> None:
    """Writes a golden file (compressed npz); ``flow``/``flow_low`` NHWC, float64 official."""
    for im in (image1, image2):
        if im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got {im.dtype} {im.shape}")
    arrays: dict[str, Any] = dict(
        format_version=np.int64(FORMAT_VERSION), name=np.str_(name), config=np.str_(config),
        overrides=np.str_(json.dumps(dict(overrides or {}), sort_keys=True)),
        iters=np.int64(-1 if iters is None else iters), seed=np.int64(seed),
        tensors=np.str_(json.dumps([[k, [int(s) for s in shape], str(d)]
                                    for k, shape, d in tensors])),
        aliases=np.str_(json.dumps(dict(aliases or {}), sort_keys=True)),
        weights_sha256=np.str_(weights_sha256), image1=image1, image2=image2,
        flow=_compact(flow), atol=np.float64(atol),
        official_f32_err=np.float64(official_f32_err),
        provenance=np.str_(json.dumps(dict(provenance), sort_keys=True)))
    if flow_low is not None:
        arrays["flow_low"] = _compact(flow_low)
    for key, value in (fixed or {}).items():
        arrays[f"fixed:{key}"] = np.asarray(value)
    for key, value in (extras or {}).items():
        arrays[f"extra:{key}"] = _compact(value)
    np.savez_compressed(path, **arrays)
