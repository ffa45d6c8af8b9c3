"""jaxopt's fixed-point solvers behind the jflow solver interface, for side-by-side comparison.

Registered names: ``jaxopt_fixed_point`` (``jaxopt.FixedPointIteration``), ``jaxopt_anderson``
(``jaxopt.AndersonAcceleration``; kwargs ``memory``, ``ridge``, ``beta`` mapped to jaxopt's
``history_size``, ``ridge``, ``beta``), ``jaxopt_broyden`` (``jaxopt.Broyden`` on the root
function ``g(z) = f(z) - z``). Any other keyword goes to the jaxopt constructor unchanged.

How: jaxopt solvers are not batched per sample, so the adapter ``vmap``s jaxopt's
``init_state``/``update`` over the batch (each sample has its own jaxopt state) and lets the
jflow loop drive them one ``update`` per step: stopping, per-sample freezing, return rules and
stats are then exactly those of the native solvers. Cost: each step calls ``f`` inside jaxopt's
``update`` and once more in the loop for the shared residual stats (2 f evaluations per step;
jaxopt's own ``tol``/``maxiter`` are unused). Use it for comparisons, not for speed.

Broyden: jaxopt's default (``stepsize=0`` = backtracking line search, ``gamma=1`` = inverse
Jacobian ``+I``) silently fails to converge on fixed-point problems (no error; the test suite
checks this): the Jacobian of ``f(z) - z`` is about ``-I``, so ``+I`` points the wrong way. The
adapter defaults to ``gamma=-1`` (first step = Picard, as the native Broyden) and ``stepsize=1``
(no line search); pass ``stepsize=0.0, gamma=1.0`` to get jaxopt's default behaviour.

jaxopt is unmaintained and warns on import; only that ``DeprecationWarning`` is filtered.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jflow.deq.batching import batch_to_batched as _batch_to_batched
from jflow.deq.solvers import register_solver

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained",
                            category=DeprecationWarning)
    import jaxopt


def _per_sample(f: Callable, z_example: jax.Array) -> tuple[Callable, tuple]:
    """The (B, D) map seen as a (D,) map ``f1(z, *consts)``, for jaxopt under ``vmap`` over B.

    ``f`` may close over per-sample inputs (the API's ``x``) and over arrays traced by an outer
    ``jit``: ``jax.closure_convert`` hoists those into explicit ``consts`` (jaxopt passes them on
    as ``*args``), ``custom_vmap`` hands the whole batch back to ``f``, and a ``custom_vjp``
    (batched the same way) makes it differentiable in ``z`` for jaxopt's line search. The
    unbatched forms (only traced for shapes, never used) apply ``f`` to ``B`` copies.
    """
    f_conv, consts = jax.closure_convert(f, z_example)
    batch = z_example.shape[0]
    tile = lambda a: jnp.broadcast_to(a, (batch,) + a.shape)  # noqa: E731
    value = _batch_to_batched(lambda z, *c: f_conv(tile(z), *c)[0], f_conv, 1)
    pullback = _batch_to_batched(
        lambda z, ct, *c: jax.vjp(lambda y: f_conv(y, *c), tile(z))[1](tile(ct))[0][0],
        lambda z, ct, *c: jax.vjp(lambda y: f_conv(y, *c), z)[1](ct)[0],
        2,
    )

    @jax.custom_vjp
    def f1(z, *c):
        return value(z, *c)

    def fwd(z, *c):
        return value(z, *c), (z, c)

    def bwd(res, ct):
        z, c = res
        return (pullback(z, ct, *c), *[jnp.zeros_like(a) for a in c])

    f1.defvjp(fwd, bwd)
    return f1, tuple(consts)


@dataclasses.dataclass(frozen=True)
class JaxoptSolver:
    """Adapter: ``kind`` in {"fixed_point", "anderson", "broyden"}, ``options`` jaxopt kwargs."""

    kind: str
    options: tuple = ()

    def _make(self, f: Callable, x: jax.Array):
        f1, consts = _per_sample(f, x)
        opts = dict(self.options)
        if self.kind == "fixed_point":
            solver = jaxopt.FixedPointIteration(fixed_point_fun=f1, **opts)
        elif self.kind == "anderson":
            solver = jaxopt.AndersonAcceleration(fixed_point_fun=f1, **opts)
        elif self.kind == "broyden":
            solver = jaxopt.Broyden(fun=lambda z, *c: f1(z, *c) - z, **opts)
        else:
            raise ValueError(f"jflow.deq.jaxopt_backend: unknown kind {self.kind!r}")
        return solver, consts

    def init(self, x0: jax.Array, f: Callable) -> Any:
        solver, consts = self._make(f, x0)
        axes = (0,) + (None,) * len(consts)
        return jax.vmap(solver.init_state, in_axes=axes)(x0, *consts)

    def update(self, state: Any, x: jax.Array, fx: jax.Array, f: Callable) -> tuple[jax.Array, Any]:
        solver, consts = self._make(f, x)
        axes = (0, 0) + (None,) * len(consts)
        x_next, state = jax.vmap(solver.update, in_axes=axes)(x, state, *consts)
        return x_next, state


def _options(**kwargs: Any) -> tuple:
    return tuple(sorted(kwargs.items()))


@register_solver("jaxopt_fixed_point")
def jaxopt_fixed_point(**kwargs: Any) -> JaxoptSolver:
    return JaxoptSolver("fixed_point", _options(**kwargs))


@register_solver("jaxopt_anderson")
def jaxopt_anderson(memory: int = 6, ridge: float = 1e-4, beta: float = 1.0, **kwargs: Any) -> JaxoptSolver:
    return JaxoptSolver("anderson", _options(history_size=memory, ridge=ridge, beta=beta, **kwargs))


@register_solver("jaxopt_broyden")
def jaxopt_broyden(stepsize: float = 1.0, gamma: float = -1.0, **kwargs: Any) -> JaxoptSolver:
    return JaxoptSolver("broyden", _options(stepsize=stepsize, gamma=gamma, **kwargs))
