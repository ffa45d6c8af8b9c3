# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jflow quickstart: optical flow on two Sintel frames
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jflow-dev/jflow/blob/main/notebooks/quickstart.ipynb)
#
# Load a model through the Python API (`jflow.predict.FlowPredictor`), estimate the flow between
# two frames of the Sintel demo clip shipped with jflow, look at it, and save it as a Middlebury
# `.flo` file.
#
# **Weights.** Without a checkpoint the model has random weights and its flow is meaningless (a
# warning says so). For real flow, convert an official checkpoint once and point `CHECKPOINT` at
# the output (or set the `JFLOW_CHECKPOINT` environment variable, and `JFLOW_CONFIG` for a model
# other than DEQ-Flow-H, e.g. `raft.py`):
#
# ```
# python -m jflow.convert --config=configs/deq_raft.py:H \
#     --torch_checkpoint=deq-flow-H-things-test-1x.pth --output=/tmp/deq_h
# ```
#
# RAFT (`configs/raft.py`), RAFT-small (`configs/raft.py:small`), GMA, DEQ-GMA, DIP and
# LiteFlowNet2 checkpoints convert the same way; a jflow training workdir works as a checkpoint
# too. `JFLOW_NOTEBOOK_SMOKE=1` (used by the tests) runs everything on small, downscaled frames.

# %%
# On Colab only: fetch and install jflow (elsewhere install it from the repository first:
# `pip install -e ".[dev]"`). Takes a minute or two.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules and not os.path.isdir("configs"):
    subprocess.run("git clone -q --depth 1 https://github.com/jflow-dev/jflow && pip install -q ./jflow", shell=True, check=True)  # noqa: E501
    os.chdir("jflow")

# %%
import pathlib
import tempfile
import warnings

import numpy as np

from jflow import io as jio
from jflow import viz
from jflow.config_files import load_config
from jflow.data.demo import sintel_dir
from jflow.data.resize import resize_bilinear
from jflow.plots import show
from jflow.predict import FlowPredictor

SMOKE = os.environ.get("JFLOW_NOTEBOOK_SMOKE") == "1"
FRAMES = pathlib.Path(sintel_dir())  # ten Sintel frames shipped with jflow
CHECKPOINT = os.environ.get("JFLOW_CHECKPOINT")  # e.g. "/tmp/deq_h" from jflow.convert
# The config must build the checkpoint's model, e.g. "raft.py" for a converted RAFT checkpoint.
CONFIG = os.environ.get("JFLOW_CONFIG") or (
    "deq_raft.py:H" if CHECKPOINT else ("deq_raft.py:smoke" if SMOKE else "deq_raft.py"))
SCALE = 0.125 if SMOKE else 0.5  # the demo frames are 1024x436
OUT = pathlib.Path(os.environ.get("JFLOW_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="jflow_"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Load the model
# `FlowPredictor.from_config` builds the network of `config.model` and loads the checkpoint
# (random weights when `checkpoint=None`). `iters` is the number of solver steps for DEQ models
# (update iterations for RAFT/GMA).

# %%
config = load_config(CONFIG)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the random-weights warning, when no checkpoint
    predictor = FlowPredictor.from_config(config, checkpoint=CHECKPOINT, iters=4 if SMOKE else None)
print(config.model.name, config.model.size, "| weights:", CHECKPOINT or "RANDOM")

# %% [markdown]
# ## Two frames of the Sintel demo clip

# %%
paths = sorted(FRAMES.glob("*.png"))
frames = [jio.read_image(p) for p in paths[: 3 if SMOKE else len(paths)]]
if SCALE != 1.0:
    frames = [resize_bilinear(f, SCALE, SCALE) for f in frames]  # uint8 in, uint8 out
image1, image2 = frames[0], frames[1]
print(f"{len(frames)} frames of {image1.shape[1]}x{image1.shape[0]} from {FRAMES}")
show(np.concatenate([image1, image2], axis=1), "frame 1 | frame 2")

# %% [markdown]
# ## Estimate the flow
# `predict` pads the frames to a multiple of 8, runs the compiled model and unpads: the result is
# an (H, W, 2) float32 array of (dx, dy) in pixels.

# %%
flow = predictor.predict(image1, image2)
assert flow.shape == image1.shape[:2] + (2,) and np.isfinite(flow).all()
magnitude = np.linalg.norm(flow, axis=-1)
print(f"flow {flow.shape}, mean |flow| {magnitude.mean():.2f} px, max {magnitude.max():.2f} px")

# %% [markdown]
# Middlebury colour coding (hue = direction, saturation = magnitude), and a panel with the first
# frame next to it.

# %%
show(viz.flow_to_color(flow), "flow")
show(viz.make_panel(image1, flow), "panel")
show(viz.colorwheel_legend(96), "colour wheel")

# %% [markdown]
# ## Save it as `.flo` (and read it back)

# %%
flo_path = OUT / "frame_0001.flo"
jio.write_flo(flo_path, flow)
np.testing.assert_array_equal(jio.read_flo(flo_path), flow)
jio.write_image(OUT / "frame_0001.png", viz.make_panel(image1, flow))
print("wrote", flo_path, "and", OUT / "frame_0001.png")

# %% [markdown]
# ## A whole clip
# `predict_video` yields one flow per consecutive pair. DEQ models start each pair from the
# previous fixed point (its flow forward-warped): *fixed-point reuse*; RAFT uses the forward-warped
# flow as a warm start. The solver statistics show how many steps each pair took.

# %%
for out in predictor.predict_video(frames):
    s = out["stats"]
    print(f"pair {out['index']}: mean |flow| {np.linalg.norm(out['flow'], axis=-1).mean():.2f} px, "
          f"{int(s.get('nstep', 0))} solver steps, residual {s.get('abs_lowest', float('nan')):.3g}"
          + (" (from zero)" if out["reset"] else " (reused)"))

# %% [markdown]
# With random weights the solver does not converge within its step budget, so under reuse each
# pair continues from where the previous one stopped and the flow drifts from pair to pair: an
# artefact of the untrained operator (see `experiments/reuse.py` for the effect of reuse on the
# solver steps; run it with `--checkpoint` for a trained model).
#
# Command-line equivalents:
#
# ```
# python -m jflow.predict --config=configs/deq_raft.py:H --checkpoint=/tmp/deq_h \
#     --image1=a.png --image2=b.png --output=flow.flo --viz=flow.png
# python -m jflow.predict --config=configs/deq_raft.py:H --checkpoint=/tmp/deq_h \
#     --frames_dir=frames/ --output_dir=out/
# ```
