"""Golden flows of the official RAFT, RAFT-small, GMA, DEQ-Flow (v2) and SEA-RAFT code (fidelity
tests).

Not part of the test suite and not run by CI: it needs torch and checkouts of the official
repositories, which never enter this repository (deq-flow is AGPL-3.0; only the arrays it
computes do). ``tests/test_fidelity.py`` then checks jflow against the files it writes.

Usage (from the repository root, in an environment with torch >= 2.0, numpy, scipy, opencv and
einops (GMA); jflow itself and jax are not needed)::

    python tools/fidelity/make_golden.py --raft /path/to/princeton-vl/RAFT \\
        --gma /path/to/zacjiang/GMA --deq_flow /path/to/locuslab/deq-flow \\
        --sea_raft /path/to/princeton-vl/SEA-RAFT [--out tests/data/golden] \\
        [--only raft,raft_small,gma,deq_flow_b,deq_flow_h,sea_raft_s,sea_raft_m]

Each path is the root of a checkout (the code is imported from ``core/``, for deq-flow from
``code.v.2.0/core/``). The goldens in the repository were made with princeton-vl/RAFT
2888e15a51fa41140771d3f498ed8023cff098d1, zacjiang/GMA 2f1fd29468a86a354d44dd25d107930b3f175043,
locuslab/deq-flow 869d4bcd9c1d227cbfa16639994d1b118510a9bb, princeton-vl/SEA-RAFT
f41d0a7ebff0e09def0f8ba9ebfd961686013b41, torch 2.13.0 (CPU).

SEA-RAFT (``sea_raft_s``, ``sea_raft_m``): the model is built from ``config/eval/sintel-{S,M}.json``
(as ``config/parser.py`` reads it), with two shims: ``ResNetFPN`` skips its torchvision ImageNet
download (``init_weight=False``; every tensor is then overwritten by the seeded weights, BatchNorm
running statistics included) and ``huggingface_hub`` is stubbed when missing (the model class
derives from its mixin). ``forward(image1, image2, iters=4, test_mode=True)`` on a 122x134 crop
(not a multiple of 8: the in-model replicate padding is exercised); the golden stores the final
flow plus ``extra:info`` (the 4 raw mixture channels) and ``extra:uncertainty`` (``demo.py``'s
``get_heatmap``: softmax-weighted clamped log-scales). No ``flow_low`` (the official forward does
not return it). The last flow-head conv (``flow_head.2.*``) is stored verbatim (``fixed:``) as
10x its seeded value, so that the flows are ~10 pixels rather than a fraction of one.

What it does, per model:

1. Builds the official model as its evaluation script does (RAFT/GMA ``evaluate.py`` arguments
   with ``mixed_precision=False``, ``test_mode=True``, 4 iterations; DEQ-Flow v2 ``val.sh``: ``--wnorm --f_thres 40 --f_solver
   naive_solver --eval_factor 1.5`` (+ ``--huge`` for H), with ``--eval_f_thres 8`` instead of
   60 steps for test speed (same code path: sliced core, naive solver, official return rule)),
   in ``eval()`` mode.
2. Fills its ``state_dict()`` with ``seeded_state_dict`` (``tests/golden_weights.py``, the
   documented recipe) from the key list, shapes and dtypes; tensors that torch registers under two
   keys (RAFT's ``norm3``/``downsample.1``) are found by shared storage and recorded as aliases.
   Loaded with ``strict=True``.
3. Runs the model in float64 (``model.double()``, float64 images, float64 default dtype) on a
   128x128 crop of two consecutive Sintel demo frames (``jflow/data/demo``, 2x2 box-downscaled):
   128 is the smallest size whose coarsest correlation level (H/64) is still >= 2 pixels; at 1 pixel
   the official ``bilinear_sampler`` divides by zero. The same run in float32 gives
   ``official_f32_err`` (the float32 vs float64 spread of the official code itself).
4. Writes ``<out>/<name>.npz`` with ``save_golden`` (format in ``tests/golden_weights.py``).

Shims (in this process only; the official files are not modified):

* ``torch.Tensor.float`` returns the tensor in the default dtype, so the official code's explicit
  float32 casts (``fmap1.float()``, the correlation's ``.float()``, ``coords_grid``) keep the
  float64 run in float64. In the float32 run it is the ordinary ``.float()``.
* deq-flow imports ``termcolor`` (for log colours): a stub module is installed if it is missing.
* DEQ-Flow: the model's ``deq.f_solver`` is wrapped to record the solver's residual trace
  (stored in ``provenance``; the script refuses a run that would have stopped early at f_eps).
* ``torch.cuda.amp.autocast(enabled=False)`` is used as is (a no-op on CPU); ``alt_cuda_corr`` is
  not compiled, which the official code tolerates; nothing calls ``.cuda()`` on these paths.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from golden_weights import save_golden, seeded_state_dict, state_dict_sha256  # noqa: E402

SEED = 20261203
SIZE = 128  # image height and width
CROP = (64, 200)  # top-left corner of the crop in the 2x2-downscaled 218x512 frames
FRAMES = ("frame_0016.png", "frame_0017.png")
RAFT_ITERS = 4  # RAFT / RAFT-small / GMA update iterations (test_mode=True)
DEQ_STEPS = 8  # DEQ-Flow naive solver steps (--eval_f_thres)

# name: (family, jflow config, official constructor options)
MODELS = {
    "raft": ("raft", "configs/raft.py", dict(small=False)),
    "raft_small": ("raft", "configs/raft.py:small", dict(small=True)),
    "gma": ("gma", "configs/gma.py", {}),
    "deq_flow_b": ("deq_flow", "configs/deq_raft.py:B", dict(size_flag=None)),
    "deq_flow_h": ("deq_flow", "configs/deq_raft.py:H", dict(size_flag="--huge")),
    "sea_raft_s": ("sea_raft", "configs/sea_raft.py:S", dict(eval_config="sintel-S")),
    "sea_raft_m": ("sea_raft", "configs/sea_raft.py:M", dict(eval_config="sintel-M")),
}
# SEA-RAFT pads inside the model: its goldens use a size that is not a multiple of 8 (padded to
# 128x136: the coarsest correlation level is still 2x2).
SEA_RAFT_HW = (122, 134)
SEA_RAFT_ITERS = 4
# The seeded weights give SEA-RAFT flows of a fraction of a pixel; its last flow-head conv is
# stored scaled by this gain (golden ``fixed:`` keys) so that the flows reach ~10 pixels and
# the correlation lookup, the upsampling and the clamps of the mixture see realistic values
# (10: mean |flow| 13 px, max 31 px on the 122x134 crop).
SEA_RAFT_HEAD_GAIN = 10.0
SEA_RAFT_FIXED = ("flow_head.2.weight", "flow_head.2.bias")


def load_images(hw: tuple[int, int] = (SIZE, SIZE)) -> tuple[np.ndarray, np.ndarray]:
    """Sintel demo frames 16 and 17, 2x2 box-downscaled, an ``hw`` crop at ``CROP``: uint8
    (1, H, W, 3)."""
    import cv2

    out = []
    for name in FRAMES:
        bgr = cv2.imread(os.path.join(REPO, "jflow", "data", "demo", name), cv2.IMREAD_COLOR)
        rgb = bgr[..., ::-1].astype(np.float64)
        h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
        small = rgb[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        y, x = CROP
        out.append(np.round(small[y:y + hw[0], x:x + hw[1]]).astype(np.uint8)[None])
    return out[0], out[1]


def install_shims(torch) -> None:
    if not getattr(torch.Tensor.float, "_jflow_shim", False):
        original = torch.Tensor.float

        def float_(self, *args, **kwargs):
            if torch.get_default_dtype() == torch.float64:
                return self.to(torch.float64)
            return original(self, *args, **kwargs)

        float_._jflow_shim = True
        torch.Tensor.float = float_
    try:
        import termcolor  # noqa: F401
    except ImportError:
        stub = types.ModuleType("termcolor")
        stub.colored = lambda text, *args, **kwargs: text
        sys.modules["termcolor"] = stub
    try:
        import huggingface_hub  # noqa: F401  (SEA-RAFT's RAFT derives from its mixin)
    except ImportError:
        stub = types.ModuleType("huggingface_hub")

        class PyTorchModelHubMixin:  # accepts the class keywords (repo_url, license, ...)
            def __init_subclass__(cls, **kwargs):
                super().__init_subclass__()

        stub.PyTorchModelHubMixin = PyTorchModelHubMixin
        sys.modules["huggingface_hub"] = stub


@contextlib.contextmanager
def official_imports(core: str):
    """Puts ``core`` first on sys.path and forgets its modules afterwards (the official repositories
    share module names: ``corr``, ``update``, ``extractor``, ``utils``)."""
    before = set(sys.modules)
    sys.path.insert(0, core)
    try:
        yield
    finally:
        sys.path.remove(core)
        for name in set(sys.modules) - before:
            mod = sys.modules[name]
            if getattr(mod, "__file__", None) and os.path.abspath(mod.__file__).startswith(core):
                del sys.modules[name]
            elif name in ("utils", "utils.utils", "deq", "deq.norm", "raft", "corr", "update",
                          "extractor", "layer"):
                del sys.modules[name]


def build(name: str, family: str, opts: dict, roots: dict):
    """The official model (float32, eval mode), its forward function and provenance notes."""
    if family == "raft":
        core = os.path.join(roots["raft"], "core")
        with official_imports(core):
            from raft import RAFT  # official
            args = argparse.Namespace(small=opts["small"], mixed_precision=False,
                                      alternate_corr=False, dropout=0)
            model = RAFT(args)

        def forward(m, im1, im2):
            low, up = m(im1, im2, iters=RAFT_ITERS, test_mode=True)
            return low, up, {}
        return model, forward, core, dict(args=vars(args), iters=RAFT_ITERS, test_mode=True)
    if family == "gma":
        core = os.path.join(roots["gma"], "core")
        with official_imports(core):
            from network import RAFTGMA  # official
            # evaluate.py's arguments (content-only attention, 1 head), fp32
            args = argparse.Namespace(num_heads=1, position_only=False,
                                      position_and_content=False, mixed_precision=False,
                                      replace=False, no_alpha=False, no_residual=False,
                                      dropout=0)
            model = RAFTGMA(args)

        def forward(m, im1, im2):
            low, up = m(im1, im2, iters=RAFT_ITERS, test_mode=True)
            return low, up, {}
        return model, forward, core, dict(args=vars(args), iters=RAFT_ITERS, test_mode=True)
    if family == "sea_raft":
        import torch

        core = os.path.join(roots["sea_raft"], "core")
        with open(os.path.join(roots["sea_raft"], "config", "eval",
                               opts["eval_config"] + ".json")) as f:
            args = argparse.Namespace(**json.load(f))  # as config/parser.py json_to_args
        with official_imports(core):
            import extractor  # official
            from raft import RAFT  # official

            init = extractor.ResNetFPN._init_weights

            def no_download(self, a):  # the ImageNet weights are overwritten by the seeded ones
                self.init_weight = False
                return init(self, a)

            extractor.ResNetFPN._init_weights = no_download
            try:
                model = RAFT(args)
            finally:
                extractor.ResNetFPN._init_weights = init

        def forward(m, im1, im2):
            out = m(im1, im2, iters=SEA_RAFT_ITERS, test_mode=True)
            info = out["info"][-1]
            # demo.py get_heatmap: sum_m softmax(w)_m * clamp(raw log b_m)
            raw = info[:, 2:]
            log_b = torch.zeros_like(raw)
            log_b[:, 0] = torch.clamp(raw[:, 0], min=0, max=args.var_max)
            log_b[:, 1] = torch.clamp(raw[:, 1], min=args.var_min, max=0)
            heat = (log_b * info[:, :2].softmax(dim=1)).sum(dim=1, keepdim=True)
            return None, out["flow"][-1], {"info": info, "uncertainty": heat}
        return model, forward, core, dict(args=vars(args), iters=SEA_RAFT_ITERS, test_mode=True,
                                          shims=["ResNetFPN init_weight=False (no torchvision "
                                                 "download)", "huggingface_hub stub if missing"])
    core = os.path.join(roots["deq_flow"], "code.v.2.0", "core")
    with official_imports(core):
        from deq.arg_utils import add_deq_args  # official
        from deq_flow import DEQFlow  # official
        parser = argparse.ArgumentParser()
        for flag in ("--tiny", "--large", "--huge", "--gigantic", "--old_version", "--gma",
                     "--mixed_precision", "--all_grad"):
            parser.add_argument(flag, action="store_true")
        parser.add_argument("--dropout", type=float, default=0.0)
        add_deq_args(parser)
        argv = ["--wnorm", "--f_thres", "40", "--f_solver", "naive_solver", "--eval_factor",
                "1.5", "--eval_f_thres", str(DEQ_STEPS)]
        if opts["size_flag"]:
            argv.append(opts["size_flag"])
        args = parser.parse_args(argv)
        model = DEQFlow(args)

    def forward(m, im1, im2):
        captured = {}
        solver = m.deq.f_solver

        def recording_solver(*args, **kwargs):  # records the solver's stats, changes nothing
            z, extra, info = solver(*args, **kwargs)
            captured.update(info)
            return z, extra, info

        m.deq.f_solver = recording_solver
        try:
            low, up, _ = m(im1, im2)
        finally:
            m.deq.f_solver = solver
        return low, up, captured
    return model, forward, core, dict(argv=argv, eval_steps=DEQ_STEPS)


def tensor_table(model) -> tuple[list, dict]:
    """[(key, shape, dtype)] of the state_dict and {alias key: source key} for shared tensors."""
    sd = model.state_dict()
    tensors = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    groups: dict = {}
    for k in sorted(sd):
        v = sd[k]
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape),
                 tuple(v.stride()))
        groups.setdefault(ident, []).append(k)
    aliases = {k: ks[0] for ks in groups.values() if len(ks) > 1 for k in ks[1:]}
    return tensors, aliases


def run(model, forward, state, im1, im2, dtype):
    import torch

    torch.set_default_dtype(dtype)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        model = model.to(dtype) if dtype == torch.float64 else model.float()
        model.eval()
        t1 = torch.from_numpy(im1).permute(0, 3, 1, 2).to(dtype)
        t2 = torch.from_numpy(im2).permute(0, 3, 1, 2).to(dtype)
        with torch.no_grad():
            low, up, info = forward(model, t1, t2)
        assert up.dtype == dtype and (low is None or low.dtype == dtype)
        low = None if low is None else low.permute(0, 2, 3, 1).numpy().astype(np.float64)
        up = up.permute(0, 2, 3, 1).numpy().astype(np.float64)
        return low, up, info
    finally:
        torch.set_default_dtype(torch.float32)


def commit_of(path: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raft", help="princeton-vl/RAFT checkout")
    parser.add_argument("--gma", help="zacjiang/GMA checkout")
    parser.add_argument("--deq_flow", help="locuslab/deq-flow checkout")
    parser.add_argument("--sea_raft", help="princeton-vl/SEA-RAFT checkout")
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "data", "golden"))
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--commits", default="{}",
                        help='JSON {"raft": sha, ...} when the checkouts are not git work trees')
    a = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    install_shims(torch)
    roots = {"raft": a.raft, "gma": a.gma, "deq_flow": a.deq_flow, "sea_raft": a.sea_raft}
    repos = {"raft": "princeton-vl/RAFT", "gma": "zacjiang/GMA", "deq_flow": "locuslab/deq-flow",
             "sea_raft": "princeton-vl/SEA-RAFT"}
    commits = json.loads(a.commits)
    os.makedirs(a.out, exist_ok=True)
    for name in a.only.split(","):
        family, config, opts = MODELS[name]
        if not roots[family]:
            raise SystemExit(f"{name} needs --{family}")
        model, forward, core, how = build(name, family, opts, roots)
        hw = SEA_RAFT_HW if family == "sea_raft" else (SIZE, SIZE)
        im1, im2 = load_images(hw)
        tensors, aliases = tensor_table(model)
        state = seeded_state_dict([(k, s) for k, s, _ in tensors], SEED,
                                  dtypes={k: d for k, _, d in tensors}, aliases=aliases)
        fixed = {}
        if family == "sea_raft":
            fixed = {k: state[k] * np.float32(SEA_RAFT_HEAD_GAIN) for k in SEA_RAFT_FIXED}
            state = seeded_state_dict([(k, s) for k, s, _ in tensors], SEED,
                                      dtypes={k: d for k, _, d in tensors}, aliases=aliases,
                                      fixed=fixed)
        low64, up64, info = run(model, forward, state, im1, im2, torch.float64)
        low32, up32, _ = run(model, forward, state, im1, im2, torch.float32)
        f32_err = float(np.max(np.abs(up32 - up64)))
        notes = {}
        extras = {}
        if family == "sea_raft":
            extras = {k: v.permute(0, 2, 3, 1).numpy().astype(np.float64) for k, v in info.items()}
            extras["uncertainty"] = extras["uncertainty"][..., 0]
        elif info:
            trace = [float(t.max()) for t in info["abs_trace"][1:]]  # [0] is the 1e8 init
            notes["solver_abs_trace"] = trace
            notes["solver_returned_step"] = [int(x) for x in info["nstep"].reshape(-1)]
            if min(trace) < 1e-3:  # f_eps: the official solver would stop early
                raise SystemExit(f"{name}: the solver converged below f_eps ({trace})")
        provenance = dict(
            repository=repos[family], commit=commits.get(family) or commit_of(roots[family]),
            code=os.path.relpath(core, roots[family]), torch=torch.__version__,
            python=platform.python_version(), how=how, script="tools/fidelity/make_golden.py",
            images=dict(frames=FRAMES, downscale=2, crop_yx=CROP, size=list(hw)),
            shims=["Tensor.float -> default dtype (float64 run)", "termcolor stub if missing"],
            **notes)
        iters = {"deq_flow": DEQ_STEPS, "sea_raft": SEA_RAFT_ITERS}.get(family, RAFT_ITERS)
        path = os.path.join(a.out, f"{name}.npz")
        save_golden(path, name=name, config=config, iters=iters, seed=SEED, tensors=tensors,
                    weights_sha256=state_dict_sha256(state), aliases=aliases, image1=im1,
                    image2=im2, flow=up64, flow_low=low64, official_f32_err=f32_err,
                    provenance=provenance, extras=extras, fixed=fixed)
        low_err = np.nan if low64 is None else np.max(np.abs(low32 - low64))
        print(f"{name}: {len(tensors)} tensors ({len(aliases)} aliases), |flow| max "
              f"{np.abs(up64).max():.3f} mean {np.abs(up64).mean():.3f} px, official f32 vs f64 "
              f"{f32_err:.2e} px, low-res f32 vs f64 {low_err:.2e}, "
              f"{os.path.getsize(path) / 1024:.0f} KiB -> {path}", flush=True)


if __name__ == "__main__":
    main()
