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

from jflow.deq.solvers import register_solver

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained",
                            category=DeprecationWarning)
    import jaxopt


def _batch_to_batched(per_sample: Callable, batched: Callable) -> Callable:
    """A per-sample function whose ``vmap`` over the batch calls ``batched`` on whole arrays."""
    fn = jax.custom_batching.custom_vmap(per_sample)

    @fn.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)
                for a, b in zip(args, in_batched)]
        return batched(*args), True

    return fn


def _per_sample(f: Callable, batch: int) -> Callable:
    """The (B, D) map seen as a (D,) map, for jaxopt under ``vmap`` over the batch.

    ``f`` may close over per-sample inputs (the API's ``x``), so it cannot be split into
    independent per-sample calls: ``custom_vmap`` hands the whole batch back to it, and a
    ``custom_vjp`` (batched the same way) makes it differentiable for jaxopt's line search.
    The unbatched forms (only traced for shapes, never used) apply ``f`` to ``batch`` copies.
    """
    tile = lambda a: jnp.broadcast_to(a, (batch,) + a.shape)  # noqa: E731
    value = _batch_to_batched(lambda z: f(tile(z))[0], f)
    pullback = _batch_to_batched(
        lambda z, ct: jax.vjp(f, tile(z))[1](tile(ct))[0][0],
        lambda z, ct: jax.vjp(f, z)[1](ct)[0],
    )

    @jax.custom_vjp
    def f1(z):
        return value(z)

    f1.defvjp(lambda z: (value(z), z), lambda z, ct: (pullback(z, ct),))
    return f1


@dataclasses.dataclass(frozen=True)
class JaxoptSolver:
    """Adapter: ``kind`` in {"fixed_point", "anderson", "broyden"}, ``options`` jaxopt kwargs."""

    kind: str
    options: tuple = ()

    def _make(self, f: Callable, batch: int):
        f1 = _per_sample(f, batch)
        opts = dict(self.options)
        if self.kind == "fixed_point":
            return jaxopt.FixedPointIteration(fixed_point_fun=f1, **opts)
        if self.kind == "anderson":
            return jaxopt.AndersonAcceleration(fixed_point_fun=f1, **opts)
        if self.kind == "broyden":
            return jaxopt.Broyden(fun=lambda z: f1(z) - z, **opts)
        raise ValueError(f"jflow.deq.jaxopt_backend: unknown kind {self.kind!r}")

    def init(self, x0: jax.Array, f: Callable) -> Any:
        solver = self._make(f, x0.shape[0])
        return jax.vmap(solver.init_state)(x0)

    def update(self, state: Any, x: jax.Array, fx: jax.Array, f: Callable) -> tuple[jax.Array, Any]:
        solver = self._make(f, x.shape[0])
        x_next, state = jax.vmap(solver.update)(x, state)
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
