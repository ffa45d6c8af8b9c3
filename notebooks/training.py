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
# # Train a DEQ-RAFT on synthetic data, then look at it
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jflow-dev/jflow/blob/main/notebooks/training.ipynb)
#
# The README's quick start as a notebook: train the small DEQ-RAFT of `configs/deq_raft.py` on
# jflow's procedural synthetic dataset (no download; textured layers with affine motions and
# exact ground truth), then plot the training curves, compare validation before and after, and
# look at its flow on held-out synthetic pairs and on real Sintel frames. On a 2-core CPU the
# full run takes about 3–5 minutes; `JFLOW_NOTEBOOK_SMOKE=1` (used by the tests) trains the
# `:smoke` variant for a few steps instead.
#
# The same run from a shell: `python -m jflow.main --config=configs/deq_raft.py --workdir=runs/q`.

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

from jflow import train, viz
from jflow.config_files import load_config
from jflow.data.demo import load_sintel
from jflow.data.synthetic import SyntheticFlow
from jflow.metrics import flow_metrics
from jflow.plots import line_plot, show
from jflow.predict import FlowPredictor

SMOKE = os.environ.get("JFLOW_NOTEBOOK_SMOKE") == "1"
OUT = pathlib.Path(os.environ.get("JFLOW_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="jflow_"))
OUT.mkdir(parents=True, exist_ok=True)
WORKDIR = OUT / "run"

# %% [markdown]
# ## The config
# `configs/deq_raft.py` with no argument is the quick-start recipe: DEQ-RAFT-T, naive solver,
# phantom gradients with the fixed-point correction loss, 300 steps of batch 4 on 64×96 synthetic
# pairs. Every field can be changed here before training (as `--config.x.y=...` does on the
# command line).

# %%
config = load_config("deq_raft.py:smoke" if SMOKE else "deq_raft.py")
config.train.log_every = 1 if SMOKE else 10
print(f"model {config.model.name}-{config.model.size}, solver {config.deq.solver} "
      f"({config.deq.f_max_steps} steps), gradient {config.deq.grad}, "
      f"{config.deq.n_states} supervised states")
print(f"{config.train.num_steps} steps, batch {config.train.batch_size}, crop "
      f"{tuple(config.data.crop)}, lr {config.train.lr}")

# %% [markdown]
# ## Train
# `train_and_evaluate` is what `python -m jflow.main` runs: it validates at step 0, trains with a
# progress bar, checkpoints (orbax) into `WORKDIR/checkpoints`, validates at the end and writes
# TensorBoard events, pictures, `validation.json` and `train_log.jsonl`. Running it again on the
# same workdir resumes from the last checkpoint.

# %%
summary = train.train_and_evaluate(config, str(WORKDIR))
first, last = summary["first_validation"], summary["last_validation"]
print(f"validation EPE: step {first['step']}: {first['synthetic']['epe']:.3f} px -> "
      f"step {last['step']}: {last['synthetic']['epe']:.3f} px")

# %% [markdown]
# ## Training curves
# `train_log.jsonl` holds one row per log step: the loss, the training EPE of the last supervised
# state, the learning rate (one-cycle schedule) and the DEQ solver's steps and residual.

# %%
log = train.read_train_log(str(WORKDIR))
steps = [r["step"] for r in log]
line_plot(str(OUT / "loss.png"), [
    {"x": steps, "y": [r["loss"] for r in log], "label": "loss"},
    {"x": steps, "y": [r["epe"] for r in log], "label": "train EPE (px)"},
], title="training", xlabel="step", ylabel="value", logy=True)
show(OUT / "loss.png", "loss and EPE")
line_plot(str(OUT / "solver.png"), [
    {"x": steps, "y": [r.get("nstep", np.nan) for r in log], "label": "solver steps"},
], title="DEQ solver steps per training step", xlabel="step", ylabel="steps")
show(OUT / "solver.png", "solver steps")

# %% [markdown]
# ## Its flow on held-out synthetic pairs
# The trained checkpoint loads through the same API users call on their own frames. Each panel:
# first frame | predicted flow | ground truth | end-point error (0–10 px).

# %%
predictor = FlowPredictor.from_config(config, WORKDIR)
h, w = config.data.synthetic_size
held_out = SyntheticFlow(2, h, w, seed=999)  # a seed the training never saw
for i in range(len(held_out)):
    s = held_out[i]
    flow = predictor.predict(s["image1"], s["image2"])
    err = flow_metrics(flow, s["flow"], s["valid"])["epe"]
    show(viz.make_panel(s["image1"], flow, s["flow"], s["valid"]), f"pair {i}: EPE {err:.2f} px")

# %% [markdown]
# ## And on real frames
# Two Sintel frames, downscaled. A model trained for a few minutes on synthetic layers is not a
# Sintel model, but its flow should already follow the moving regions.

# %%
sintel = load_sintel(2, scale=0.125 if SMOKE else 0.25)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    flow = predictor.predict(sintel[0], sintel[1])
show(viz.make_panel(sintel[0], flow), "Sintel frames 16 -> 17")
