"""optimistix (the maintained successor of jaxopt) behind the jflow solver interface, and its
implicit adjoint as an alternative IFT gradient.

Registered solvers (forward or IFT backward, ``DEQConfig.solver`` / ``b_solver``):

- ``optimistix_fixed_point``: ``optx.FixedPointIteration`` (kwarg ``damp``, optimistix's
  damping: ``y <- (1 - damp) f(y) + damp y``).
- ``optimistix_newton``: ``optx.Newton`` on the root function ``g(z) = f(z) - z``; Newton-Krylov:
  the Newton system is solved matrix-free by ``lineax.GMRES`` (kwargs ``gmres_rtol`` 1e-3,
  ``gmres_max_steps`` 40, ``restart`` 20). Each outer step costs one f evaluation plus one JVP per
  GMRES iteration (not counted in ``nstep``; compare wall time).

``optx.Chord`` is not offered: its state stores the linearised Jacobian as a jaxpr, which cannot
be carried per sample through the solve loop. optimistix 0.1 has no Anderson or Broyden
(optimistix issue #3). Any other keyword goes to the optimistix constructor. A dense linear solver (optimistix's default ``AutoLinearSolver``)
would materialise a D x D Jacobian per sample; GMRES never does.

How: as the jaxopt adapter, optimistix's per-sample ``init`` / ``step`` are ``vmap``ped over the
batch (each sample has its own optimistix state; ``jflow.deq.batching`` hands the whole batch to
``f`` and gives it a batched JVP for Newton) and driven by jflow's loop, so stopping,
per-sample freezing, return rules and stats are those of the native solvers (optimistix's own
``rtol``/``atol``/``max_steps`` are unused). Cost: the loop evaluates f once per step for the
shared residual stats and optimistix once more inside ``step``.

Gradient: ``implicit_fixed_point`` (``DEQConfig(grad="optimistix_ift")``) returns one
``optx.fixed_point`` step from the stopped fixed point, differentiated by
``optx.ImplicitAdjoint`` with ``lineax.GMRES(rtol=atol=b_tol, max_steps=b_max_steps)``: the
adjoint system ``(I - J)^T g = v`` is solved matrix-free on the whole batch (block-diagonal, so
the tolerance is relative to the whole batch's cotangent rather than per sample), with the
cotangent scaled to unit RMS first so that the result does not depend on the loss scale.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from jflow.deq.batching import per_sample_jvp
from jflow.deq.solvers import register_solver

KINDS = ("fixed_point", "newton")


def _gmres(rtol: float, max_steps: int, restart: int = 20) -> lx.GMRES:
    return lx.GMRES(rtol=float(rtol), atol=0.0, max_steps=int(max_steps), restart=int(restart),
                    stagnation_iters=int(restart))


@dataclasses.dataclass(frozen=True)
class OptimistixSolver:
    """Adapter: ``kind`` in ``KINDS``, ``options`` optimistix constructor kwargs (sorted pairs)."""

    kind: str
    options: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"jflow.deq.optimistix_backend: unknown kind {self.kind!r}; {KINDS}")

    def _make(self):
        opts = dict(self.options)
        gmres = _gmres(opts.pop("gmres_rtol", 1e-3), opts.pop("gmres_max_steps", 40),
                       opts.pop("restart", 20))
        opts.setdefault("rtol", 1e-6)  # termination only: unused, the jflow loop stops
        opts.setdefault("atol", 1e-6)
        if self.kind == "fixed_point":
            return optx.FixedPointIteration(**opts)
        opts.setdefault("linear_solver", gmres)
        return optx.Newton(**opts)

    def _fn(self, f1: Callable) -> Callable:
        if self.kind == "fixed_point":
            return lambda y, c: (f1(y, *c), None)
        return lambda y, c: (f1(y, *c) - y, None)

    def init(self, x0: jax.Array, f: Callable) -> Any:
        solver, (f1, consts) = self._make(), per_sample_jvp(f, x0)
        fn = self._fn(f1)

        def one(y, *c):
            struct = jax.ShapeDtypeStruct(y.shape, y.dtype)
            return solver.init(fn, y, c, {}, struct, None, frozenset())

        return jax.vmap(one, in_axes=(0,) + (None,) * len(consts))(x0, *consts)

    def update(self, state: Any, x: jax.Array, fx: jax.Array, f: Callable) -> tuple[jax.Array, Any]:
        solver, (f1, consts) = self._make(), per_sample_jvp(f, x)
        fn = self._fn(f1)

        def one(y, st, *c):
            y_new, st_new, _ = solver.step(fn, y, c, {}, st, frozenset())
            return y_new, st_new

        return jax.vmap(one, in_axes=(0, 0) + (None,) * len(consts))(x, state, *consts)


def _options(**kwargs: Any) -> tuple:
    return tuple(sorted(kwargs.items()))


@register_solver("optimistix_fixed_point")
def optimistix_fixed_point(**kwargs: Any) -> OptimistixSolver:
    return OptimistixSolver("fixed_point", _options(**kwargs))


@register_solver("optimistix_newton")
def optimistix_newton(**kwargs: Any) -> OptimistixSolver:
    return OptimistixSolver("newton", _options(**kwargs))


def implicit_fixed_point(f: Callable, params: Any, x: Any, z_star: Any, tol: float = 1e-3,
                         max_steps: int = 40) -> Any:
    """``f(params, z*, x)`` with optimistix's implicit gradient (``optx.ImplicitAdjoint``).

    lineax's GMRES tests convergence per element (``|r_i| < atol + rtol |v_i|``) and detects
    breakdown with an absolute threshold, so the cotangent is scaled to unit RMS before
    optimistix sees it and the gradients are scaled back (the adjoint is linear in v): GMRES runs
    with ``rtol = atol = tol``, i.e. ``|r_i| < tol (RMS(v) + |v_i|)`` at any loss scale.
    """
    z_star = jax.lax.stop_gradient(z_star)
    f_closed, consts = jax.closure_convert(lambda p, z, xx: f(p, z, xx), params, z_star, x)
    return _implicit(f_closed, (float(tol), int(max_steps)), params, x, z_star, tuple(consts))


def _optx_step(f_closed, opts, params, x, z, consts):
    tol, max_steps = opts
    # rtol = atol = 0: optimistix's own termination never triggers; max_steps=1 takes exactly one
    # step from z*, so the value is f(z*) as with the native "ift" mode.
    sol = optx.fixed_point(
        lambda zz, args: f_closed(args[0], zz, args[1], *args[2]),
        optx.FixedPointIteration(rtol=0.0, atol=0.0), z, args=(params, x, consts), max_steps=1,
        throw=False,
        adjoint=optx.ImplicitAdjoint(linear_solver=lx.GMRES(
            rtol=tol, atol=tol, max_steps=max_steps, restart=20, stagnation_iters=20)))
    return sol.value


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _implicit(f_closed, opts, params, x, z, consts):
    return f_closed(params, z, x, *consts)


def _implicit_fwd(f_closed, opts, params, x, z, consts):
    return f_closed(params, z, x, *consts), (params, x, z, consts)


def _implicit_bwd(f_closed, opts, res, v):
    params, x, z, consts = res
    leaves = jax.tree_util.tree_leaves(v)
    n = sum(a.size for a in leaves)
    rms = jnp.sqrt(sum(jnp.sum(jnp.square(a.astype(jnp.float32))) for a in leaves) / n)
    scale = jnp.where(rms > 0, rms, 1.0)
    _, vjp = jax.vjp(lambda p, xx, cs: _optx_step(f_closed, opts, p, xx, z, cs), params, x, consts)
    g_params, g_x, g_consts = jax.tree_util.tree_map(
        lambda g: (g * scale).astype(g.dtype),
        vjp(jax.tree_util.tree_map(lambda a: (a / scale).astype(a.dtype), v)))
    return g_params, g_x, jax.tree_util.tree_map(jnp.zeros_like, z), g_consts


_implicit.defvjp(_implicit_fwd, _implicit_bwd)
