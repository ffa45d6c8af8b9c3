"""`build_source`: a dataset or weighted mixture from a spec string.

Spec DSL (whitespace ignored)::

    spec    := term ("+" term)*
    term    := [weight "*"] name ["(" option ("," option)* ")"]
    option  := key "=" value
    name    := synthetic | chairs | things | things_clean | things_final
             | sintel | sintel_clean | sintel_final | kitti | hd1k | tartanair | spring

`weight` (a positive integer, default 1) repeats a dataset as RAFT's `100*sintel_clean` does.
`things` and `sintel` mean both passes (clean + final). Options for every dataset:
`scale=MIN:MAX` (log2 scale range), `flip=0|1` and `pad=0|1` (sparse sets: zero-pad an image
smaller than the crop, as SEA-RAFT does, instead of scaling it up) override the augmentation.
Options for `synthetic`: `n` (samples), `h`, `w` (size), `max_flow`, `layers=MIN:MAX`; they
override the keyword arguments of `build_source` (`num_samples`, `height`, `width`, ...).

Augmentation defaults follow RAFT's stages: chairs (-0.1, 1.0, flip), things (-0.4, 0.8, flip),
sintel (-0.2, 0.6, flip), kitti (-0.2, 0.4, no flip, sparse). In a spec that contains Sintel
(RAFT's sintel stage, e.g. `100*sintel_clean+100*sintel_final+200*kitti+5*hd1k+things_clean`)
things uses Sintel's range, kitti (-0.3, 0.5, flip) and hd1k (-0.5, 0.2, flip), as RAFT does.
SEA-RAFT's sets keep their own: tartanair (-0.2, 0.4, flip, sparse: its flow masks) and spring
(-1.0, -0.8, flip: 1080p frames trained at about 540p).

`root`: one folder holding the standard sub-folders `FlyingChairs_release`, `FlyingThings3D`,
`Sintel`, `KITTI`, `HD1K`, `tartanair` and `spring` (default: `$JFLOW_DATA_DIR`, else
`./datasets` as in RAFT and SEA-RAFT), or a dict mapping `chairs`, `things`, `sintel`, `kitti`,
`hd1k`, `tartanair`, `spring` to each dataset's own folder.
`split`: "train", "val" or "test" (Chairs val = split-file id 2; Sintel and KITTI validate on
their training sets as RAFT does, test = the benchmark sets without ground truth; Things val and
test = its TEST folder; HD1K and TartanAir have only training data; Spring val = its `val`
folder when there is one, else its training set, test = its test set without ground truth). Synthetic data uses
`seed` for training and a disjoint seed for "val"/"test".
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

from jflow.data import params as P
from jflow.data.chairs import FlyingChairs
from jflow.data.hd1k import HD1K
from jflow.data.kitti import Kitti
from jflow.data.mixture import Mixture
from jflow.data.sintel import MpiSintel
from jflow.data.spring import Spring
from jflow.data.synthetic import SyntheticFlow
from jflow.data.tartanair import TartanAir
from jflow.data.things import FlyingThings3D

FOLDERS = {"chairs": "FlyingChairs_release", "things": "FlyingThings3D", "sintel": "Sintel",
           "kitti": "KITTI", "hd1k": "HD1K", "tartanair": "tartanair", "spring": "spring"}
NAMES = ("synthetic", "chairs", "things", "things_clean", "things_final", "sintel",
         "sintel_clean", "sintel_final", "kitti", "hd1k", "tartanair", "spring")
VAL_SEED_OFFSET = 1_000_003
SYNTHETIC_DEFAULTS = dict(num_samples=10_000, height=96, width=128)

_TERM = re.compile(r"^(?:(\d+)\*)?([a-z0-9_]+)(?:\((.*)\))?$")


@dataclasses.dataclass(frozen=True)
class Term:
    """One parsed spec term."""

    weight: int
    name: str
    options: dict


def parse_spec(spec: str) -> list[Term]:
    """Parse a spec string into terms; errors name the bad term and the grammar."""
    terms = []
    for raw in re.sub(r"\s+", "", spec).split("+"):
        m = _TERM.match(raw)
        if not m or m.group(2) not in NAMES:
            raise ValueError(f"data spec {spec!r}: bad term {raw!r}; expected [N*]name[(k=v,...)]"
                             f" with name in {NAMES}")
        options = {}
        if m.group(3):
            for item in m.group(3).split(","):
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ValueError(f"data spec {spec!r}: bad option {item!r} (want key=value)")
                options[key] = value
        weight = int(m.group(1) or 1)
        if weight < 1:
            raise ValueError(f"data spec {spec!r}: weight must be >= 1 in {raw!r}")
        terms.append(Term(weight, m.group(2), options))
    return terms


def _pair(value: str, what: str, cast=float) -> tuple:
    lo, sep, hi = value.partition(":")
    if not sep:
        raise ValueError(f"data spec option {what}={value!r}: expected MIN:MAX")
    return cast(lo), cast(hi)


def default_params(name: str, sintel_stage: bool) -> P.AugmentParams:
    """RAFT's augmentation for dataset family `name`, in the sintel stage or its own."""
    family = name.split("_")[0]
    own = {"tartanair": P.TARTANAIR, "spring": P.SPRING}  # SEA-RAFT's, in any mixture
    if family in own:
        return own[family]
    if sintel_stage:
        return {"kitti": P.KITTI_IN_SINTEL_MIX, "hd1k": P.HD1K_IN_SINTEL_MIX,
                "synthetic": P.SYNTHETIC}.get(family, P.SINTEL)
    return {"chairs": P.CHAIRS, "things": P.THINGS, "sintel": P.SINTEL, "kitti": P.KITTI,
            "hd1k": P.HD1K_IN_SINTEL_MIX, "synthetic": P.SYNTHETIC}[family]


def _params(term: Term, sintel_stage: bool) -> P.AugmentParams:
    params = default_params(term.name, sintel_stage)
    opts = dict(term.options)
    if "scale" in opts:
        lo, hi = _pair(opts.pop("scale"), "scale")
        params = dataclasses.replace(params, min_scale=lo, max_scale=hi)
    for key, field in (("flip", "do_flip"), ("pad", "pad_to_crop")):
        if key in opts:
            params = dataclasses.replace(params, **{field: opts.pop(key) not in ("0", "false",
                                                                                 "no")})
    return params


def _sintel_stage(terms: list[Term]) -> bool:
    return any(t.name.startswith("sintel") for t in terms) and len(terms) > 1


def spec_augmentation(spec: str) -> list[tuple[int, str, P.AugmentParams]]:
    """``(weight, name, AugmentParams)`` of every term of ``spec``: the augmentation
    :func:`build_source` gives its samples (no files are read)."""
    terms = parse_spec(spec)
    return [(t.weight, t.name, _params(t, _sintel_stage(terms))) for t in terms]


def dataset_root(root: str | Mapping[str, str] | None, family: str) -> str:
    """The folder of dataset `family` under `root` (see the module docstring)."""
    if isinstance(root, Mapping):
        if family not in root:
            raise ValueError(f"data root dict has no entry for {family!r} (keys: {sorted(root)})")
        return os.fspath(root[family])
    base = root or os.environ.get("JFLOW_DATA_DIR") or "datasets"
    return os.path.join(os.fspath(base), FOLDERS[family])


def _build_term(term: Term, root, split: str, seed: int, sintel_stage: bool,
                skip_corrupt: bool, synthetic_kwargs: dict) -> list[Any]:
    params = _params(term, sintel_stage)
    opts = {k: v for k, v in term.options.items() if k not in ("scale", "flip", "pad")}
    if term.name == "synthetic":
        kw = {**SYNTHETIC_DEFAULTS, **synthetic_kwargs}
        names = {"n": "num_samples", "h": "height", "w": "width", "max_flow": "max_flow"}
        for key, value in opts.items():
            if key == "layers":
                kw["num_layers"] = _pair(value, "layers", int)
            elif key in names:
                kw[names[key]] = float(value) if key == "max_flow" else int(value)
            else:
                raise ValueError(f"data spec: unknown synthetic option {key!r}")
        if split != "train":
            seed = seed + VAL_SEED_OFFSET
        return [SyntheticFlow(seed=seed, augment_params=params, **kw)]
    if opts:
        raise ValueError(f"data spec: unknown option(s) {sorted(opts)} for {term.name!r}")
    family, _, dstype = term.name.partition("_")
    where = dataset_root(root, family)
    common = dict(augment_params=params, skip_corrupt=skip_corrupt)
    passes = [dstype] if dstype else ["clean", "final"]
    if family == "chairs":
        return [FlyingChairs(where, split, **common)]
    if family == "things":  # validation and test both use the held-out TEST folder
        return [FlyingThings3D(where, p, "train" if split == "train" else "test", **common)
                for p in passes]
    if family == "sintel":
        return [MpiSintel(where, p, split, **common) for p in passes]
    if family == "kitti":
        return [Kitti(where, split, **common)]
    if family == "tartanair":
        if split != "train":
            raise ValueError("data spec: tartanair has only training data (no val/test split)")
        return [TartanAir(where, "train", **common)]
    if family == "spring":
        return [Spring(where, split, **common)]
    return [HD1K(where, "train", **common)]


def build_source(spec: str, root: str | Mapping[str, str] | None = None, split: str = "train",
                 seed: int = 0, *, skip_corrupt: bool = False, **synthetic_kwargs: Any):
    """A random-access source for `spec` (see the module docstring for the DSL and roots).

    `synthetic_kwargs` (`num_samples`, `height`, `width`, `max_flow`, ...) configure synthetic
    terms and are ignored by the others. A single dataset is returned as itself; several terms
    (or a weight) give a `Mixture`.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"build_source: split must be train, val or test, got {split!r}")
    terms = parse_spec(spec)
    sintel_stage = _sintel_stage(terms)
    parts = []
    for term in terms:
        for ds in _build_term(term, root, split, seed, sintel_stage, skip_corrupt,
                              synthetic_kwargs):
            parts.append((term.weight, ds))
    if len(parts) == 1 and parts[0][0] == 1:
        return parts[0][1]
    return Mixture(parts)
