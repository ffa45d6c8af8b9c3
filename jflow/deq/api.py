"""``deq_fixed_point``: the one call a model makes to solve its equilibrium and train through it."""
from __future__ import annotations

from typing import Any, Callable

import jax

from jflow.deq import stats as stats_lib
from jflow.deq.adjoint import BackwardSolve, implicit_step, phantom_steps
from jflow.deq.config import DEQConfig
from jflow.deq.correction import indexing_positions, segment_lengths
from jflow.deq.ordered import Chain
from jflow.deq.regularize import jacobian_penalty
from jflow.deq.solve import solve
from jflow.deq.solvers import get_solver

PyTree = Any


def deq_fixed_point(
    f: Callable[[PyTree, PyTree, PyTree], PyTree],
    params: PyTree,
    x: PyTree,
    z0: PyTree,
    cfg: DEQConfig,
    *,
    train: bool,
    max_steps: int | None = None,
    key: jax.Array | None = None,
    jac_f: Callable[[PyTree, PyTree, PyTree], PyTree] | None = None,
    readout: Callable[[PyTree], PyTree] | None = None,
    ordered: bool = False,
    x_solve: PyTree | None = None,
) -> tuple[list[PyTree], dict]:
    """Solves ``z = f(params, z, x)`` from ``z0``; returns ``(states, stats)``.

    ``f`` maps a pytree ``z`` (every leaf with leading batch axis B) to the same structure; it
    may close over arrays (they get gradients under ``grad="ift"`` too). ``train=False``: one
    forward solve of ``max_steps`` (default ``cfg.f_max_steps``) steps, ``states = [z*]`` per
    ``cfg.return_rule``, no gradient. ``train=True``: ``cfg.n_states`` states to supervise per
    ``cfg.core`` (see ``jflow.deq.correction``), the last one being the fixed point, with
    gradients per ``cfg.grad``. ``stats``: see ``jflow.deq.stats`` (sliced segments merged);
    with ``cfg.jac_loss_weight > 0`` a training solve adds ``stats["jac_loss"]`` (a differentiable
    scalar, the Jacobian penalty at the fixed point; ``key`` seeds its probes, default key 0).
    ``jac_f`` is the map whose Jacobian is penalised when it differs from ``f`` (a model that
    detaches part of the state inside ``f`` passes the undetached map: the solver iterates it).
    ``readout``: applied to each returned state (``states`` then holds its outputs; a sliced
    segment still starts from the state itself). ``ordered`` (training, phantom / IFT gradients):
    each state's gradient steps and readout keep only their input and are recomputed in the
    backward pass one state at a time, last first (``jflow.deq.ordered.Chain``): the training
    memory of one supervised state instead of ``n_states``; same values and gradients (the
    readout is a segment of its own, recomputed before the state's gradient steps).
    ``x_solve``: an input ``f`` maps exactly as ``x`` (say, with a precomputed cache) for the
    gradient-free solve (not for ``grad="unrolled"``): the gradient steps use ``x``, so what only
    ``x_solve`` holds is not kept for the backward pass.
    """
    total = int(max_steps or cfg.f_max_steps)
    solver = get_solver(cfg.solver, **dict(cfg.solver_kwargs))
    sg = jax.lax.stop_gradient
    unrolled = train and cfg.grad == "unrolled"
    p_ng, x_ng = sg(params), sg(x if x_solve is None or unrolled else x_solve)

    def run(z_init, steps, capture=()):
        if unrolled:
            fz = lambda z: f(params, z, x)  # noqa: E731
        else:
            fz, z_init = (lambda z: f(p_ng, z, x_ng)), sg(z_init)
        return solve(fz, z_init, solver, steps, cfg.f_tol, cfg.f_stop_mode,
                     return_rule=cfg.return_rule, capture_steps=capture,
                     unroll=cfg.unroll_impl if unrolled else False)

    read = readout or (lambda z: z)
    if not train:
        z, st = run(z0, total)
        return [read(z)], st

    backward = BackwardSolve(cfg.b_solver, cfg.b_solver_kwargs, cfg.b_max_steps, cfg.b_tol,
                             cfg.b_stop_mode)

    def grad_steps(z, last):
        if cfg.grad == "unrolled":
            return z
        if cfg.grad == "ift" and last:
            return implicit_step(f, params, x, z, backward)
        if cfg.grad == "optimistix_ift" and last:
            from jflow.deq.optimistix_backend import implicit_fixed_point

            return implicit_fixed_point(f, params, x, z, cfg.b_tol, cfg.b_max_steps)
        return phantom_steps(f, params, x, z, cfg.phantom_steps, cfg.tau)

    chain = Chain() if ordered and not unrolled else None

    def supervised(z_star, last):  # -> (state, its readout)
        if chain is None:
            z = grad_steps(z_star, last)
            return z, read(z)
        z = chain(lambda zs: grad_steps(zs, last), z_star)
        return (z, z) if readout is None else chain(lambda z: (z, read(z)), z)

    n = cfg.n_states
    if cfg.core == "sliced":
        states, seg_stats, z = [], [], z0
        for i, steps in enumerate(segment_lengths(total, n)):
            z_star, st = run(z, steps)
            z, out = supervised(z_star, last=i == n - 1)
            states.append(out)
            seg_stats.append(st)
        st = stats_lib.merge(seg_stats)
    else:
        positions = indexing_positions(total, n)
        z_star, st = run(z0, total, capture=positions[:-1])
        captured = list(st.pop("states", ()))
        states = [supervised(s, last=i == len(captured))[1]
                  for i, s in enumerate(captured + [z_star])]
    if cfg.jac_loss_weight > 0:
        key = jax.random.PRNGKey(0) if key is None else key
        g = f if jac_f is None else jac_f
        st["jac_loss"] = jacobian_penalty(lambda z: g(params, z, x), sg(z_star), key,
                                          cfg.jac_loss_samples)
    return states, st
