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
# # Deep-equilibrium solvers and gradients with `jflow.deq`
#
# A DEQ layer defines its output as a fixed point `z* = f(z*, x)`. `jflow.deq` finds it with a
# choice of solvers (`naive` Picard iteration, `anderson`, `broyden`, and jaxopt's for
# comparison) and differentiates through it without storing the solver's iterations (implicit
# or phantom gradients). This notebook
#
# 1. solves a toy contractive problem with each solver and plots the residual traces,
# 2. does the same for one DEQ-RAFT forward pass on two Sintel frames (random weights),
# 3. compares the gradient modes (`unrolled`, `phantom`, `ift`) with the exact implicit gradient.
#
# `JFLOW_NOTEBOOK_SMOKE=1` (used by the tests) shrinks every size.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jflow-dev/jflow/blob/main/notebooks/deq_solvers.ipynb)

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

import jax
import jax.numpy as jnp
import numpy as np

from jflow import io as jio
from jflow.data.demo import sintel_dir
from jflow.data.resize import resize_bilinear
from jflow.deq import DEQConfig, deq_fixed_point, get_solver, solve
from jflow.models import build_model, random_variables
from jflow.plots import line_plot, show

SMOKE = os.environ.get("JFLOW_NOTEBOOK_SMOKE") == "1"
OUT = pathlib.Path(os.environ.get("JFLOW_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="jflow_"))
OUT.mkdir(parents=True, exist_ok=True)


def plot_traces(traces, title, name):
    """Relative residual per step (batch mean) of each solver, on a log axis."""
    series = [{"x": np.arange(1, len(t) + 1), "y": t, "label": k, "marker": False}
              for k, t in traces.items()]
    path = OUT / name
    line_plot(str(path), series, title=title, xlabel="solver step", ylabel="relative residual",
              logy=True)
    show(path)


# %% [markdown]
# ## 1. A toy contractive problem
# `f(z) = tanh(W z + x)` with a symmetric `W` whose eigenvalues lie in `[-0.475, 0.95]`:
# contractive, but slow for plain iteration. `solve` works on a batch (each sample stops on its
# own when its residual drops below the tolerance) and returns statistics: `nstep`, the residual
# traces `abs_trace`/`rel_trace` (batch, steps), the lowest residuals.

# %%
DIM, BATCH = (64, 2) if SMOKE else (256, 4)
rng = np.random.default_rng(0)
q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
W = jnp.asarray(q @ np.diag(np.linspace(-0.475, 0.95, DIM)) @ q.T, jnp.float32)
X = jnp.asarray(0.5 * rng.standard_normal((BATCH, DIM)), jnp.float32)


def f_toy(z):
    return jnp.tanh(z @ W.T + X)


SOLVERS = {"naive": {}, "anderson (official ridge)": {"relative_ridge": False},
           "anderson (relative ridge)": {},
           "broyden": {}, "jaxopt_broyden": {}}
traces = {}
for label, kwargs in SOLVERS.items():
    solver = get_solver(label.split(" ")[0], **kwargs)
    z, stats = jax.jit(lambda z0, s=solver: solve(f_toy, z0, s, max_steps=100, tol=1e-5,
                                                  stop_mode="rel"))(jnp.zeros((BATCH, DIM)))
    traces[label] = np.asarray(stats["rel_trace"]).mean(0)
    err = float(jnp.max(jnp.abs(f_toy(z) - z)))
    print(f"{label:26s} steps {np.asarray(stats['nstep']).tolist()}  "
          f"|f(z) - z|_max {err:.1e}")
plot_traces(traces, "toy problem: tanh(Wz + x)", "toy_traces.png")

# %% [markdown]
# deq-flow's Anderson uses an *absolute* ridge (1e-4): once residuals are small the regularised
# system tends to equal weights and Anderson slows below plain iteration; jflow's default
# (`relative_ridge=True`) scales it with the residuals (`relative_ridge=False` is the official one). Broyden needs no tuning here.
#
# ## 2. One DEQ-RAFT forward pass
# The same solvers inside DEQ-RAFT-T (random weights: an untrained update operator, so this only
# shows the mechanics; load a checkpoint with `jflow.predict.load_variables` for real numbers).
# The solver settings are part of the model's `DEQConfig`.

# %%
SCALE, STEPS = (1 / 16, 6) if SMOKE else (1 / 4, 40)
frames_dir = pathlib.Path(sintel_dir())  # shipped with jflow
frames = [resize_bilinear(jio.read_image(p), SCALE, SCALE)
          for p in sorted(frames_dir.glob("*.png"))[:2]]
h, w = (s // 8 * 8 for s in frames[0].shape[:2])
im1, im2 = (jnp.asarray(f[None, :h, :w], jnp.float32) for f in frames)
print("frames", im1.shape)

deq_traces, variables = {}, None
for label in ("naive", "broyden") if SMOKE else ("naive", "anderson", "broyden"):
    deq = DEQConfig(solver=label, f_max_steps=STEPS, f_tol=1e-4, f_stop_mode="rel")
    model = build_model({"name": "deq_raft", "size": "T"}, deq)
    if variables is None:
        variables = random_variables(model, seed=0)
    out = jax.jit(lambda v, a, b, m=model: m.apply(v, a, b, iters=STEPS))(variables, im1, im2)
    deq_traces[label] = np.asarray(out["stats"]["rel_trace"]).mean(0)
    print(f"{label:9s} steps {int(out['stats']['nstep'][0])}, lowest relative residual "
          f"{float(out['stats']['rel_lowest'][0]):.2e}, flow {out['flow'].shape}")
plot_traces(deq_traces, "DEQ-RAFT-T (random weights)", "deq_raft_traces.png")

# %% [markdown]
# ## 3. Gradient modes
# `deq_fixed_point(f, params, x, z0, cfg, train=True)` returns the fixed point with a gradient
# chosen by `cfg.grad`:
#
# * `unrolled`: backpropagation through every solver step (memory grows with the steps);
# * `ift`: the implicit function theorem, `dL/dθ = (∂f/∂θ)ᵀ (I - ∂f/∂z)⁻ᵀ dL/dz*`, with a
#   backward fixed-point solve (`b_solver`, `b_max_steps`): constant memory;
# * `phantom`: `k` damped steps `z ← (1-τ) z + τ f(z)` from the stopped fixed point, an
#   inexpensive approximation (DEQ-Flow trains with it): constant memory.
#
# We compare each with the exact implicit gradient of `L = Σ z*²` w.r.t. `W`, computed with dense
# Jacobians (float64) on a small layer.

# %%
jax.config.update("jax_enable_x64", True)
D = 8
rng = np.random.default_rng(1)
params = {"W": jnp.asarray(0.5 * rng.standard_normal((D, D)) / np.sqrt(D)),
          "b": jnp.asarray(rng.standard_normal(D))}
x = jnp.asarray(rng.standard_normal((1, D)))


def f_layer(p, z, x):
    return jnp.tanh(z @ p["W"].T + x + p["b"])


def loss(p, cfg):
    states, _ = deq_fixed_point(f_layer, p, x, jnp.zeros((1, D)), cfg, train=True)
    return jnp.sum(states[-1] ** 2)


# Exact gradient: z* to machine precision, then the implicit function theorem with dense matrices.
z_star, _ = solve(lambda z: f_layer(params, z, x), jnp.zeros((1, D)), get_solver("anderson"),
                  200, 1e-12)
J_z = jax.jacobian(lambda z: f_layer(params, z, x)[0])(z_star[0])
J_p = jax.jacobian(lambda p: f_layer(p, z_star, x)[0])(params)
u = jnp.linalg.solve((jnp.eye(D) - J_z).T, 2 * z_star[0])  # (I - J)^-T dL/dz*
exact = jnp.einsum("i,ijk->jk", u, J_p["W"])

base = DEQConfig(solver="anderson", f_max_steps=60, f_tol=1e-10, b_solver="anderson",
                 b_max_steps=60, b_tol=1e-10)
for cfg in (base.replace(grad="unrolled"), base.replace(grad="ift"),
            base.replace(grad="phantom", phantom_steps=1),
            base.replace(grad="phantom", phantom_steps=5, tau=0.8)):
    g = jax.jit(jax.grad(loss), static_argnums=1)(params, cfg)["W"]
    rel = float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact))
    cos = float(jnp.vdot(g, exact) / (jnp.linalg.norm(g) * jnp.linalg.norm(exact)))
    name = cfg.grad + (f" k={cfg.phantom_steps} tau={cfg.tau}" if cfg.grad == "phantom" else "")
    print(f"{name:24s} relative error {rel:.1e}, cosine {cos:.4f}")
jax.config.update("jax_enable_x64", False)

# %% [markdown]
# IFT and unrolled (once the forward solve has converged) match the exact gradient; phantom
# gradients are a descent direction (high cosine) at a fraction of the cost. Memory: see
# `experiments/memory.py` (training-step memory flat in the solver steps for `phantom`/`ift`,
# linear for `unrolled` and for RAFT's iterations).
