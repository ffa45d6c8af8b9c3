"""Gradient modes around a fixed point ``z* = f(params, z*, x)``.

- :func:`phantom_steps`: k differentiable steps ``z <- (1 - tau) z + tau f(params, z, x)`` from
  the stopped-gradient fixed point (k = 1, tau = 1: the one-step / Jacobian-free gradient).
- :func:`implicit_step`: returns ``f(params, z*, x)`` whose gradient w.r.t. ``params``, ``x`` (and
  any array ``f`` closes over) is the implicit-function-theorem gradient: the cotangent ``v`` of
  the output is mapped to the fixed point of ``g = J^T g + v`` (J = df/dz at z*), solved per sample
  by a configurable solver, then pulled back through f. Implemented with ``jax.custom_vjp``;
  arrays ``f`` closes over are hoisted by ``jax.closure_convert`` so they receive gradients too.
  Training memory is one f call's, independent of the solver steps.

  Scale invariance: the equation is linear in v, so it is solved for ``v / ||v||`` (per sample)
  and the solution multiplied back by ``||v||``. The tolerance is therefore relative to the
  cotangent: in "abs" mode the solve stops when ``||J^T g + v - g|| < tol * ||v||``, in "rel"
  mode when ``||J^T g + v - g|| < tol * ||J^T g + v||``; a loss multiplied by any s > 0 (a mean
  over more pixels, a loss weight) gives the gradient multiplied by s, not a different one.
  The iteration starts at ``g = v``, whose pull-back is the one-step (phantom, k = 1) gradient,
  so even a solve that never improves returns that estimate rather than zero. (Before this, the
  solve started at ``g = 0`` with an absolute tolerance, as deq-flow does: every sample with
  ``||v|| < tol`` -- the normal case for mean-reduced losses -- got an exact zero gradient,
  reported as converged.)
- Unrolled backprop is ``solve(..., unroll=True)`` (see ``jflow.deq.solve``).
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jflow.deq.solve import solve
from jflow.deq.solvers import get_solver

PyTree = Any
Fn = Callable[[PyTree, PyTree, PyTree], PyTree]


@dataclasses.dataclass(frozen=True)
class BackwardSolve:
    """Settings of the IFT backward solve (hashable)."""

    solver: str = "anderson"
    solver_kwargs: tuple = ()
    max_steps: int = 40
    tol: float = 1e-3
    stop_mode: str = "abs"


def phantom_steps(f: Fn, params: PyTree, x: PyTree, z: PyTree, k: int = 1, tau: float = 1.0) -> PyTree:
    """k damped steps with gradient from ``stop_gradient(z)`` (k = 0 returns the stopped z)."""
    z = jax.lax.stop_gradient(z)
    for _ in range(int(k)):
        fz = f(params, z, x)
        z = fz if tau == 1.0 else jax.tree_util.tree_map(lambda a, b: (1 - tau) * a + tau * b, z, fz)
    return z


def implicit_step(
    f: Fn, params: PyTree, x: PyTree, z_star: PyTree, backward: BackwardSolve = BackwardSolve()
) -> PyTree:
    """``f(params, z*, x)`` with the implicit gradient (no gradient flows into ``z_star``)."""
    z_star = jax.lax.stop_gradient(z_star)
    f_closed, consts = jax.closure_convert(lambda p, z, xx: f(p, z, xx), params, z_star, x)
    return _implicit(f_closed, backward, params, x, z_star, tuple(consts))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _implicit(f_closed, backward, params, x, z, consts):
    return f_closed(params, z, x, *consts)


def _implicit_fwd(f_closed, backward, params, x, z, consts):
    return f_closed(params, z, x, *consts), (params, x, z, consts)


def _implicit_bwd(f_closed, backward, res, v):
    params, x, z, consts = res
    _, vjp = jax.vjp(lambda p, zz, xx, cs: f_closed(p, zz, xx, *cs), params, z, x, consts)

    solver = get_solver(backward.solver, **dict(backward.solver_kwargs))
    v_n, scale = _normalize(v)
    g, _ = solve(lambda gg: jax.tree_util.tree_map(jnp.add, vjp(gg)[1], v_n), v_n, solver,
                 backward.max_steps, backward.tol, backward.stop_mode)
    g = _scale(g, scale)
    g_params, _, g_x, g_consts = vjp(g)
    return g_params, g_x, jax.tree_util.tree_map(jnp.zeros_like, z), g_consts


def _per_sample(tree: PyTree, fn: Callable) -> PyTree:
    """Applies ``fn(leaf, ndim)`` to every leaf (helper for per-sample broadcasting)."""
    return jax.tree_util.tree_map(lambda a: fn(a, jnp.ndim(a)), tree)


def _normalize(v: PyTree) -> tuple[PyTree, jax.Array]:
    """``(v / ||v||, ||v||)`` per sample (norm over every leaf); zero cotangents stay zero."""
    leaves = jax.tree_util.tree_leaves(v)
    dt = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    sq = sum(jnp.sum(jnp.square(a.astype(dt)).reshape(a.shape[0], -1), axis=1) for a in leaves)
    norm = jnp.sqrt(sq)
    safe = jnp.where(norm > 0, norm, 1.0)
    v_n = _per_sample(v, lambda a, nd: (a / safe.reshape((-1,) + (1,) * (nd - 1))).astype(a.dtype))
    return v_n, safe


def _scale(g: PyTree, scale: jax.Array) -> PyTree:
    return _per_sample(g, lambda a, nd: (a * scale.reshape((-1,) + (1,) * (nd - 1))).astype(a.dtype))


_implicit.defvjp(_implicit_fwd, _implicit_bwd)
