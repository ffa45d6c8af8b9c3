"""Published training recipes and the shared config skeleton used by ``configs/*.py``.

Stage tables: RAFT ``train_standard.sh``, GMA ``train.sh``, DEQ-Flow v2 ``train_H.sh`` (Chairs,
Things) and v1 ``train_H_full.sh`` (Sintel, KITTI), as the papers and official repositories
publish them. Every config file builds on :func:`base_config` and :func:`apply_stage`, so the
numbers live here once.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

STAGES = ("synthetic", "chairs", "things", "sintel", "kitti")
DEQ_SIZES = ("T", "B", "L", "H", "G", "D")  # D: jflow's reading, no checkpoint


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage: data, optimiser and loss settings."""
    steps: int
    batch: int
    lr: float
    crop: tuple[int, int]
    wd: float
    gamma: float
    train: str
    val: tuple[str, ...]
    freeze_bn: bool


_CHAIRS = dict(crop=(368, 496), wd=1e-4, gamma=0.8, train="chairs", val=("chairs",),
               freeze_bn=False)
_THINGS = dict(crop=(400, 720), wd=1e-4, gamma=0.8, train="things_clean+things_final",
               val=("sintel_clean", "sintel_final"), freeze_bn=True)
SINTEL_MIX = "100*sintel_clean+100*sintel_final+200*kitti+5*hd1k+things_clean"
_SINTEL = dict(crop=(368, 768), wd=1e-5, gamma=0.85, train=SINTEL_MIX,
               val=("sintel_clean", "sintel_final"), freeze_bn=True)
_KITTI = dict(crop=(288, 960), wd=1e-5, gamma=0.85, train="kitti", val=("kitti",),
              freeze_bn=True)

# RAFT train_standard.sh (2 GPUs, fp32).
RAFT_STAGES = {
    "chairs": Stage(100_000, 10, 4e-4, **_CHAIRS),
    "things": Stage(100_000, 6, 1.25e-4, **_THINGS),
    "sintel": Stage(100_000, 6, 1.25e-4, **_SINTEL),
    "kitti": Stage(50_000, 6, 1e-4, **_KITTI),
}
# GMA train.sh (AMP, 2 GPUs): RAFT's crops, weight decay and gamma.
GMA_STAGES = {
    "chairs": Stage(120_000, 8, 2.5e-4, **_CHAIRS),
    "things": Stage(120_000, 6, 1.25e-4, **_THINGS),
    "sintel": Stage(120_000, 6, 1.25e-4, **_SINTEL),
    "kitti": Stage(50_000, 6, 1.25e-4, **_KITTI),
}
# DEQ-Flow: v2 train_H.sh for Chairs and Things (wd 1e-4 throughout), v1 train_H_full.sh for
# Sintel and KITTI (gamma 0.9).
DEQ_STAGES = {
    "chairs": Stage(120_000, 12, 4e-4, **_CHAIRS),
    "things": Stage(120_000, 6, 1.25e-4, **_THINGS),
    "sintel": Stage(120_000, 6, 1.25e-4, **{**_SINTEL, "wd": 1e-4, "gamma": 0.9}),
    "kitti": Stage(50_000, 6, 1e-4, **{**_KITTI, "wd": 1e-4, "gamma": 0.9}),
}
# DEQ solver settings per stage (config.deq fields):
# v2 train_H.sh: C f_thres 36, 6 states x 1 phantom step; T f_thres 40, 2 states x 3 (its
# --all_grad, gradients through the coordinates inside f, is a model option: config.model.all_grad).
# v1 train_H_full.sh: S 6 x 3, K 6 x 1 (broyden/36 there; v2's naive/40 kept here).
DEQ_SOLVER_STAGES = {
    "synthetic": dict(f_max_steps=12, n_states=2, phantom_steps=1),
    "chairs": dict(f_max_steps=36, n_states=6, phantom_steps=1),
    "things": dict(f_max_steps=40, n_states=2, phantom_steps=3),
    "sintel": dict(f_max_steps=40, n_states=6, phantom_steps=3),
    "kitti": dict(f_max_steps=40, n_states=6, phantom_steps=1),
}
DEQ_ALL_GRAD = {"synthetic": False, "chairs": False, "things": True, "sintel": True, "kitti": True}
DEQ_EVAL_FACTOR = 1.5  # deq-flow eval_factor: test iterations = int(f_thres * 1.5) = 60 for H

# Evaluation iterations per dataset family (protocols.md): RAFT evaluate.py, GMA evaluate.py.
RAFT_EVAL_ITERS = {"chairs": 24, "sintel": 32, "kitti": 24, "things": 32, "synthetic": 12}
GMA_EVAL_ITERS = {"chairs": 12, "sintel": 12, "kitti": 12, "things": 12, "synthetic": 12}
# DIP demo.py: 20 iterations (12 when warm-started) on every dataset.
DIP_EVAL_ITERS = {"chairs": 20, "sintel": 20, "kitti": 20, "things": 20, "synthetic": 20}


def parse_arg(arg: str | None, *, stages: tuple[str, ...] = STAGES,
              **defaults: Any) -> ml_collections.ConfigDict:
    """Parses ``"H,stage=things,smoke"`` into a ConfigDict typed like ``defaults``.

    ``key=value`` sets ``key`` (converted to the type of its default); a bare word sets a boolean
    default to True, or else the ``size`` key (``"H"`` -> ``size="H"``). Unknown keys raise.
    """
    out = ml_collections.ConfigDict(dict(defaults))
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, sep, value = token.partition("=")
        if not sep:
            if isinstance(defaults.get(key), bool):
                out[key] = True
                continue
            if "size" in defaults:
                key, value = "size", token
            else:
                raise ValueError(f"config argument {token!r}: unknown flag; known: {sorted(defaults)}")
        if key not in defaults:
            raise ValueError(f"config argument {token!r}: unknown key {key!r}; known: "
                             f"{sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config argument {token!r}: expected true/false")
            out[key] = value.lower() in ("true", "1")
        else:
            out[key] = type(default)(value)
    if "stage" in out and out.stage not in stages:
        raise ValueError(f"config argument stage={out.stage!r}: expected one of {stages}")
    return out


def base_config() -> ml_collections.ConfigDict:
    """Every section and field with its default; the synthetic quick-start data settings."""
    c = ml_collections.ConfigDict()
    c.seed = 1234
    c.mode = "train"  # "train" | "eval"
    c.stage = "synthetic"

    c.model = ml_collections.ConfigDict(dict(
        name="raft", size="", iters=12, eval_iters=24, corr="all_pairs", corr_levels=4,
        corr_radius=4, wnorm=False, mixed_precision=False, freeze_bn=False, all_grad=False))
    c.deq = ml_collections.ConfigDict()  # filled by DEQ configs (fields of jflow.deq.DEQConfig)

    c.data = ml_collections.ConfigDict(dict(
        train="synthetic", val=("synthetic",), root="", crop=(64, 96), augment=False,
        num_workers=0, synthetic_train_size=1024, synthetic_val_size=16, synthetic_size=(64, 96)))

    c.train = ml_collections.ConfigDict(dict(
        num_steps=300, batch_size=4, lr=4e-4, wd=1e-4, clip=1.0, gamma=0.8, adam_eps=1e-8,
        pct_start=0.05, div_factor=25.0, final_div_factor=1e4, schedule_extra_steps=100,
        correction_weights="exp", log_every=10, eval_every=0, ckpt_every=100, keep_ckpts=3,
        num_devices=0, debug_inject_nan_at_step=-1, num_pictures=4, init_from=""))

    c.eval = ml_collections.ConfigDict(dict(
        datasets=("synthetic",), iters=ml_collections.ConfigDict(RAFT_EVAL_ITERS), checkpoint="",
        root="", max_samples=0, submission="", warm_start=True, output=""))
    return c


def apply_stage(c: ml_collections.ConfigDict, stage: str, table: dict[str, Stage]) -> None:
    """Sets data, optimiser and loss fields of ``c`` from ``table[stage]`` (no-op for synthetic)."""
    c.stage = stage
    if stage == "synthetic":
        return
    s = table[stage]
    c.train.num_steps, c.train.batch_size, c.train.lr = s.steps, s.batch, s.lr
    c.train.wd, c.train.gamma = s.wd, s.gamma
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 100, 5000, 5000
    c.data.train, c.data.val, c.data.crop, c.data.augment = s.train, s.val, s.crop, True
    c.data.num_workers = 4
    c.model.freeze_bn = s.freeze_bn
    c.eval.datasets = s.val


def apply_smoke(c: ml_collections.ConfigDict) -> None:
    """A few steps on tiny synthetic images: for tests and CI."""
    c.stage = "synthetic"
    c.data.train, c.data.val, c.data.augment = "synthetic", ("synthetic",), False
    c.data.crop = c.data.synthetic_size = (32, 48)
    c.data.synthetic_train_size, c.data.synthetic_val_size, c.data.num_workers = 16, 2, 0
    c.train.num_steps, c.train.batch_size, c.train.lr = 4, 2, 4e-4
    c.train.log_every, c.train.eval_every, c.train.ckpt_every, c.train.num_pictures = 1, 0, 2, 1
    c.model.iters, c.model.eval_iters = 2, 2
    c.eval.datasets = ("synthetic",)
    c.eval.iters = ml_collections.ConfigDict({k: 2 for k in RAFT_EVAL_ITERS})


def recurrent_config(name: str, arg: str | None, stages: dict[str, Stage],
                     eval_iters: dict[str, int]) -> ml_collections.ConfigDict:
    """RAFT / GMA: ``arg`` = ``[small][,stage=...][,smoke]``."""
    a = parse_arg(arg, size="", stage="synthetic", smoke=False)
    c = base_config()
    c.model.name = "raft_small" if (name == "raft" and a.size == "small") else name
    if a.size not in ("", "small") or (a.size == "small" and name != "raft"):
        raise ValueError(f"config argument size={a.size!r}: {name} has no such variant")
    if c.model.name == "raft_small":
        c.model.corr_radius = 3
    c.eval.iters = ml_collections.ConfigDict(eval_iters)
    c.model.eval_iters = eval_iters["sintel"]
    apply_stage(c, a.stage, stages)
    if a.smoke:
        apply_smoke(c)
    return c


def deq_config(name: str, arg: str | None) -> ml_collections.ConfigDict:
    """DEQ-RAFT / DEQ-GMA: ``arg`` = ``[T|B|L|H|G|D][,stage=...][,smoke]``.

    Model size H reproduces deq-flow v2 (``--huge --wnorm``, naive solver, f_thres 36/40, eval
    ``int(40 * 1.5) = 60`` iterations, the official naive return rule); without a size the
    quick-start Tiny model is used.
    """
    a = parse_arg(arg, size="", stage="synthetic", smoke=False)
    if a.size not in ("", *DEQ_SIZES):
        raise ValueError(f"config argument size={a.size!r}: expected one of {DEQ_SIZES}")
    c = base_config()
    c.model.name = name
    c.model.size = a.size or "T"
    c.model.wnorm = True
    # An explicit size without a stage gets the published (Things, v2) solver settings.
    solver_stage = "things" if (a.stage == "synthetic" and a.size) else a.stage
    s = DEQ_SOLVER_STAGES[solver_stage]
    c.model.all_grad = DEQ_ALL_GRAD[solver_stage]
    # Training memory: recompute the encoders / the supervised states' gradient steps in the
    # backward pass instead of storing their activations (jflow.models.deq_raft; measured in
    # experiments/README.md: the encoders' recomputation saves a third at no measured time cost).
    c.model.remat_encoder = True
    c.model.remat_states = False
    c.model.corr_feature_grad = False
    c.deq = ml_collections.ConfigDict(dict(
        solver="naive", f_max_steps=s["f_max_steps"], f_tol=1e-3, f_stop_mode="abs",
        return_rule="official_naive", grad="phantom", phantom_steps=s["phantom_steps"], tau=1.0,
        b_solver="naive", b_max_steps=40, b_tol=1e-3, core="sliced", n_states=s["n_states"],
        jac_loss_weight=0.0, jac_loss_samples=1))  # deq-flow has no Jacobian loss wired in
    # deq-flow evaluates with int(f_thres * eval_factor) iterations (v2 H: 40 * 1.5 = 60).
    eval_iters = int(s["f_max_steps"] * DEQ_EVAL_FACTOR)
    c.model.iters = c.deq.f_max_steps
    c.model.eval_iters = eval_iters
    c.eval.iters = ml_collections.ConfigDict({k: eval_iters for k in RAFT_EVAL_ITERS})
    apply_stage(c, a.stage, DEQ_STAGES)
    if a.smoke:
        apply_smoke(c)
        c.deq.f_max_steps, c.deq.n_states, c.deq.phantom_steps = 3, 2, 1
        c.model.iters = c.deq.f_max_steps
    return c


# LiteFlowNet2 (TPAMI 2020; the paper's schedule as mmflow's configs give it, reference
# liteflownet2.md section 6). Chairs is level-wise in the paper (M6S6 300k -> M6S6R6 300k ->
# M5S5R5 240k -> M4S4R4 240k -> M3S3R3 240k, lr 1e-4 and 6e-5 for the last, halved at 120k /
# 160k / 200k within each stage); jflow trains all levels at once for the summed 1.32M steps at
# 1e-4. Batch 8 on Chairs; the fine-tuning batch is not given there: 4 here. gamma and
# freeze_bn are unused (no recurrence, no BatchNorm).
_LFN2 = dict(gamma=0.8, freeze_bn=False)
LFN2_STAGES = {
    "chairs": Stage(1_320_000, 8, 1e-4, (320, 448), 4e-4, train="chairs", val=("chairs",),
                    **_LFN2),
    "things": Stage(500_000, 4, 3e-6, (384, 768), 4e-4, train="things_clean+things_final",
                    val=("sintel_clean", "sintel_final"), **_LFN2),
    "sintel": Stage(600_000, 4, 5e-5, (320, 768), 4e-4, train="sintel_clean+sintel_final+kitti",
                    val=("sintel_clean", "sintel_final"), **_LFN2),
    "kitti": Stage(500_000, 4, 5e-5, (320, 896), 4e-4, train="kitti", val=("kitti",), **_LFN2),
}
# Loss per stage: L2 end-point error on Chairs / Things, generalised Charbonnier (q 0.2, eps
# 0.01) when fine-tuning; sparse KITTI ground truth is compared at full resolution.
LFN2_LOSS = {"synthetic": ("multilevel_l2", "downsample"), "chairs": ("multilevel_l2", "downsample"),
             "things": ("multilevel_l2", "downsample"),
             "sintel": ("multilevel_charbonnier", "upsample"),
             "kitti": ("multilevel_charbonnier", "upsample")}


def liteflownet2_config(arg: str | None) -> ml_collections.ConfigDict:
    """LiteFlowNet2: ``arg`` = ``[kitti][,stage=...][,smoke]`` (``kitti``: the KITTI model with
    the pseudo level L2)."""
    from jflow import losses

    a = parse_arg(arg, kitti=False, stage="synthetic", smoke=False)
    c = base_config()
    c.model.name = "liteflownet2"
    c.model.variant = "kitti" if a.kitti else "sintel"
    c.model.iters = c.model.eval_iters = 1  # not iterative
    c.eval.iters = ml_collections.ConfigDict({k: 1 for k in RAFT_EVAL_ITERS})
    apply_stage(c, a.stage, LFN2_STAGES)
    if a.stage == "synthetic":
        c.train.lr, c.train.wd = 1e-4, 4e-4
    kind, resize = LFN2_LOSS[a.stage]
    weights = losses.LFN_LEVEL_WEIGHTS + ((losses.LFN_L2_WEIGHT,) if a.kitti else ())
    c.train.loss, c.train.loss_resize = kind, resize
    c.train.level_weights = weights
    c.train.full_res_weight = losses.LFN_FULL_RES_WEIGHT
    c.train.clip = 1e8  # Caffe clips no gradients
    if a.smoke:
        apply_smoke(c)
        c.data.crop = c.data.synthetic_size = (64, 64)
        c.model.iters = c.model.eval_iters = 1
        c.eval.iters = ml_collections.ConfigDict({k: 1 for k in RAFT_EVAL_ITERS})
    return c


# SEA-RAFT (princeton-vl/SEA-RAFT config/train/*.json; 8 GPUs, global batch, fp32): every stage
# AdamW eps 1e-8, OneCycle (steps + 100, 5 % warm-up), clip 1.0, BatchNorm trained throughout,
# 4 iterations (5 supervised predictions), the mixture-of-Laplace loss. Each stage starts from the
# previous one (``--config.train.init_from``). TartanAir and Spring are read by
# jflow/data/tartanair.py and spring.py (data spec names ``tartanair``, ``spring``).
SEA_RAFT_STAGE_NAMES = ("synthetic", "tartan", "chairs", "things", "tskh", "kitti", "spring")
# Official augmentation per stage (core/datasets.py fetch_dataloader, utils/augmentor.py): each
# dataset is resized by 2^U(s + a, s + b) with the stage's base scale s (config "scale": spring
# -1, else 0), flipped when ``flip``; TartanAir, KITTI and HD1K use the sparse augmentor, which
# zero-pads an image smaller than the crop (KITTI's 375 rows at a 432-high crop) instead of
# scaling it up. Stage -> (s, [(dataset, weight, a, b, flip)]); written into the stage's data
# spec as options, so the loader applies exactly these.
SEA_RAFT_AUGMENT = {
    "tartan": (0, [("tartanair", 1, -0.2, 0.4, True)]),
    "chairs": (0, [("chairs", 1, -0.1, 1.0, True)]),
    "things": (0, [("things_clean", 1, -0.4, 0.8, True), ("things_final", 1, -0.4, 0.8, True)]),
    "tskh": (0, [("sintel_clean", 20, -0.2, 0.6, True), ("sintel_final", 20, -0.2, 0.6, True),
                 ("kitti", 80, -0.3, 0.5, True), ("hd1k", 30, -0.5, 0.2, True),
                 ("things_clean", 1, -0.2, 0.6, True)]),
    "kitti": (0, [("kitti", 1, -0.2, 0.4, False)]),
    "spring": (-1, [("spring", 1, 0.0, 0.2, True)]),
}
SEA_RAFT_SPARSE = ("tartanair", "kitti", "hd1k")
# The rest of the official augmentor is RAFT's, as jflow.data.augment.Augmentor's defaults: resize
# probability 0.8, stretch probability 0.8 (dense) by 2^U(-0.2, 0.2), h-flip 0.5, v-flip 0.1
# (dense), eraser 0.5, asymmetric colour jitter 0.2 (dense), scale clamp (crop + 8) / size
# (dense) or (crop + 1) / size (sparse).
SEA_RAFT_AUGMENTOR = dict(spatial_prob=0.8, stretch_prob=0.8, max_stretch=0.2, h_flip_prob=0.5,
                          v_flip_prob=0.1, eraser_prob=0.5, asymmetric_color_prob=0.2)


def sea_raft_train_spec(stage: str) -> str:
    """The data spec of a SEA-RAFT stage with its augmentation options, e.g.
    ``kitti(scale=-0.2:0.4,flip=0,pad=1)``."""
    base, terms = SEA_RAFT_AUGMENT[stage]
    parts = []
    for name, weight, a, b, flip in terms:
        opts = f"scale={base + a:g}:{base + b:g},flip={int(flip)}"
        opts += ",pad=1" if name in SEA_RAFT_SPARSE else ""
        parts.append(f"{weight}*{name}({opts})" if weight > 1 else f"{name}({opts})")
    return "+".join(parts)


_SR_SINTEL_VAL = ("sintel_clean", "sintel_final")
_SR = sea_raft_train_spec
SEA_RAFT_STAGES = {
    "tartan": Stage(300_000, 32, 4e-4, (480, 640), 1e-5, 0.85, _SR("tartan"), _SR_SINTEL_VAL,
                    False),
    "chairs": Stage(100_000, 16, 2.5e-4, (368, 496), 1e-4, 0.8, _SR("chairs"), ("chairs",),
                    False),
    "things": Stage(120_000, 32, 4e-4, (432, 960), 1e-5, 0.85, _SR("things"), _SR_SINTEL_VAL,
                    False),
    "tskh": Stage(300_000, 32, 4e-4, (432, 960), 1e-5, 0.85, _SR("tskh"), _SR_SINTEL_VAL, False),
    "kitti": Stage(10_000, 16, 1e-4, (432, 960), 1e-5, 0.85, _SR("kitti"), ("kitti",), False),
    "spring": Stage(120_000, 32, 4e-4, (540, 960), 1e-5, 0.85, _SR("spring"), ("spring",), False),
}
SEA_RAFT_EVAL_ITERS = {"S": 4, "M": 4, "L": 12}


def sea_raft_config(arg: str | None) -> ml_collections.ConfigDict:
    """SEA-RAFT: ``arg`` = ``[S|M|L][,stage=...][,smoke]`` (L = M weights at 12 iterations)."""
    a = parse_arg(arg, stages=SEA_RAFT_STAGE_NAMES, size="S", stage="synthetic", smoke=False)
    size = a.size.upper()
    if size not in SEA_RAFT_EVAL_ITERS:
        raise ValueError(f"config argument size={a.size!r}: expected one of "
                         f"{tuple(SEA_RAFT_EVAL_ITERS)}")
    c = base_config()
    c.model.name = "sea_raft"
    c.model.size = size
    c.model.iters = 4
    c.model.eval_iters = SEA_RAFT_EVAL_ITERS[size]
    c.model.scale = 0
    c.model.init_encoder_from = ""  # torchvision resnet18/34 .pth: the official encoder init
    c.eval.iters = ml_collections.ConfigDict({k: SEA_RAFT_EVAL_ITERS[size]
                                              for k in RAFT_EVAL_ITERS})
    c.eval.warm_start = False  # the official evaluation and submission have no warm start
    c.train.loss = "mixture_laplace"
    c.train.gamma = 0.85
    c.train.wd = 1e-5
    apply_stage(c, a.stage, SEA_RAFT_STAGES)
    if a.stage == "spring":
        c.model.scale = -1  # 1080p evaluated at 540p
    if a.smoke:
        apply_smoke(c)
        c.data.crop = c.data.synthetic_size = (64, 64)
        c.model.iters = c.model.eval_iters = 2
    return c


def deq_sea_raft_config(arg: str | None) -> ml_collections.ConfigDict:
    """DEQ SEA-RAFT (jflow's; no published recipe): ``arg`` = ``[S|M|L][,stage=...][,smoke]``.

    SEA-RAFT's config for the size and stage (data, optimiser, mixture loss), with DEQ-RAFT's
    quick-start solver section (naive, 12 steps, 2 correction states x 1 phantom step; ``smoke``:
    3 steps) and its evaluation rule ``int(1.5 * f_max_steps)`` steps.
    """
    a = parse_arg(arg, stages=SEA_RAFT_STAGE_NAMES, size="S", stage="synthetic", smoke=False)
    c = sea_raft_config(f"{a.size},stage={a.stage}" + (",smoke" if a.smoke else ""))
    c.model.name = "deq_sea_raft"
    c.deq = deq_config("deq_raft", "smoke" if a.smoke else None).deq
    c.model.iters = c.deq.f_max_steps
    c.model.eval_iters = int(c.deq.f_max_steps * DEQ_EVAL_FACTOR)
    c.eval.iters = ml_collections.ConfigDict({k: c.model.eval_iters for k in RAFT_EVAL_ITERS})
    return c
