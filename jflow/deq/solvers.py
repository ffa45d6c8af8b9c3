"""Fixed-point solvers on a per-sample flattened state (B, D), and a registry by name.

A solver proposes the next iterate from the current one and its image; the driving loop
(:func:`jflow.deq.solve.solve`) evaluates ``f``, tracks residuals, stops each sample on its own and
freezes finished samples by masking, so a solver never needs to know about stopping. Protocol::

    state = solver.init(x0, f)                    # every leaf has the leading batch axis B
    x_next, state = solver.update(state, x, fx, f)  # fx = f(x), both (B, D)

``f`` is the batched (B, D) -> (B, D) map; native solvers never call it (one f evaluation per
step, made by the loop); it is there for solvers that need more (line searches, jaxopt).

Solvers are frozen dataclasses (hashable, usable as static jit arguments). Register a new one with
``@register_solver("name")`` and build it with ``get_solver("name", **kwargs)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from jflow.deq import safeguard


class Solver(Protocol):
    """What the solve loop needs from a solver."""

    def init(self, x0: jax.Array, f: Callable) -> Any: ...

    def update(self, state: Any, x: jax.Array, fx: jax.Array, f: Callable) -> tuple[jax.Array, Any]: ...


_REGISTRY: dict[str, Callable[..., Solver]] = {}


def register_solver(name: str) -> Callable:
    """Decorator registering a solver class (or factory) under ``name``."""

    def deco(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"jflow.deq.register_solver: solver {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def get_solver(name: str, **kwargs: Any) -> Solver:
    """Builds the registered solver ``name`` with ``kwargs`` (e.g. ``memory=6, ridge=1e-4``)."""
    if name.startswith("jaxopt_") and name not in _REGISTRY:
        from jflow.deq import jaxopt_backend  # noqa: F401  (registers the jaxopt_* solvers)
    if name.startswith("optimistix_") and name not in _REGISTRY:
        from jflow.deq import optimistix_backend  # noqa: F401  (registers the optimistix_* ones)
    if name not in _REGISTRY:
        raise ValueError(
            f"jflow.deq.get_solver: unknown solver {name!r}; available: {available_solvers()}"
        )
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"jflow.deq.get_solver: bad arguments {kwargs} for {name!r}: {e}") from e


def available_solvers() -> list[str]:
    """Names accepted by :func:`get_solver` (backend ones listed before their import)."""
    names = set(_REGISTRY) | {"jaxopt_fixed_point", "jaxopt_anderson", "jaxopt_broyden",
                              "optimistix_fixed_point", "optimistix_newton"}
    return sorted(names)


def _compute_dtype(x: jax.Array):
    """At least float32 for the small linear algebra, float64 when the state is float64."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _slot_mask(slot: jax.Array, m: int) -> jax.Array:
    """(B, m) one-hot of the ring slot per sample."""
    return jnp.arange(m)[None, :] == slot[:, None]


def _finite_rows(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))


@register_solver("naive")
@dataclasses.dataclass(frozen=True)
class Naive:
    """Damped fixed-point iteration ``x <- (1 - tau) x + tau f(x)`` (tau = 1: plain Picard)."""

    tau: float = 1.0

    def init(self, x0: jax.Array, f: Callable = None) -> tuple:
        return ()

    def update(self, state: tuple, x: jax.Array, fx: jax.Array, f: Callable = None
               ) -> tuple[jax.Array, tuple]:
        if self.tau == 1.0:
            return fx, state
        return (1.0 - self.tau) * x + self.tau * fx, state


@register_solver("anderson")
@dataclasses.dataclass(frozen=True)
class Anderson:
    """Anderson acceleration with history ``memory`` (m), ridge ``ridge`` (lambda), mixing ``beta``.

    As deq-flow: ``X1 = f(X0)``; then with ``G = F - X`` over the n = min(k, m) stored columns,
    solve the bordered system ``[[0, 1^T], [1, G G^T + lambda I]] [nu; alpha] = [1; 0]`` and set
    ``x = beta * sum(alpha F) + (1 - beta) * sum(alpha X)`` (ring slot k mod m). The (m+1)^2 system
    is solved per sample in at least float32; unused slots are masked so the system stays regular,
    and a sample whose solution is not finite falls back to the plain step ``x = f(x)``.

    ``relative_ridge=True`` (jflow's default) scales lambda by the mean of ``diag(G G^T)``, so the
    regularisation is scale-free. deq-flow's ridge is absolute (``relative_ridge=False``, the
    official behaviour, used by the published recipes): once residuals are small
    (``|G|^2 << lambda``) the weights tend to uniform and convergence stalls (tests: no sample
    reaches abs 1e-5 in 400 steps on a problem that the relative ridge solves in 36-40), and the
    result depends on the units of the state.

    Two standard guards, both off by default: ``safeguard > 0`` rejects a mixed iterate whose
    residual exceeds ``safeguard`` times the last accepted one and takes the plain step from
    that one instead (``jflow.deq.safeguard``); ``restart_cond > 0`` clears the history (keeping
    the newest pair, so the step is the plain one) when the condition number of ``G G^T`` over
    the stored columns, before the ridge, exceeds ``restart_cond``.
    """

    memory: int = 6
    ridge: float = 1e-4
    beta: float = 1.0
    relative_ridge: bool = True
    safeguard: float = 0.0
    restart_cond: float = 0.0

    def __post_init__(self):
        if self.memory < 1:
            raise ValueError(f"jflow.deq Anderson: memory must be >= 1, got {self.memory}")
        if self.safeguard < 0 or self.restart_cond < 0:
            raise ValueError("jflow.deq Anderson: safeguard and restart_cond must be >= 0 (0: off)")

    def init(self, x0: jax.Array, f: Callable = None) -> dict:
        b, d = x0.shape
        state = {
            "X": jnp.zeros((b, self.memory, d), x0.dtype),
            "F": jnp.zeros((b, self.memory, d), x0.dtype),
            "valid": jnp.zeros((b, self.memory), bool),
            "count": jnp.zeros((b,), jnp.int32),
        }
        if self.safeguard:
            state["sg"] = safeguard.init(x0)
        return state

    def update(self, state: dict, x: jax.Array, fx: jax.Array, f: Callable = None
               ) -> tuple[jax.Array, dict]:
        m, count = self.memory, state["count"]
        slot = _slot_mask(count % m, m)
        put = slot[..., None]
        X = jnp.where(put, x[:, None, :], state["X"])
        F = jnp.where(put, fx[:, None, :], state["F"])
        valid = state["valid"] | slot  # (B, m)
        cdt = _compute_dtype(x)
        G = ((F - X) * valid[..., None]).astype(cdt)
        gram = jnp.einsum("bid,bjd->bij", G, G)
        if self.restart_cond:  # the cleared columns' rows and columns of the same Gram matrix
            valid = jnp.where(self._ill_conditioned(gram, valid, cdt)[:, None], slot, valid)
            gram = gram * (valid[:, :, None] & valid[:, None, :])
        ridge = jnp.full((x.shape[0],), self.ridge, cdt)
        if self.relative_ridge:
            diag = jnp.einsum("bii->bi", gram)
            n = jnp.sum(valid, axis=1).astype(cdt)
            ridge = ridge * jnp.sum(diag, axis=1) / n + jnp.finfo(cdt).tiny
        gram = gram + ridge[:, None, None] * jnp.eye(m, dtype=cdt)
        border = valid.astype(cdt)
        top = jnp.concatenate([jnp.zeros_like(border[:, :1]), border], axis=1)[:, None, :]
        rest = jnp.concatenate([border[:, :, None], gram], axis=2)
        system = jnp.concatenate([top, rest], axis=1)  # (B, m+1, m+1)
        rhs = jnp.zeros((x.shape[0], m + 1), cdt).at[:, 0].set(1.0)
        alpha = jnp.linalg.solve(system, rhs[..., None])[:, 1:, 0]  # (B, m)
        mixed_f = jnp.einsum("bi,bid->bd", alpha, F.astype(cdt))
        if self.beta == 1.0:
            x_next = mixed_f
        else:
            mixed_x = jnp.einsum("bi,bid->bd", alpha, X.astype(cdt))
            x_next = self.beta * mixed_f + (1.0 - self.beta) * mixed_x
        ok = _finite_rows(alpha) & (jnp.sum(valid, axis=1) > 1)
        x_next = jnp.where(ok[:, None], x_next.astype(x.dtype), fx)
        new = {"X": X, "F": F, "valid": valid, "count": count + 1}
        if self.safeguard:
            x_next, new["sg"], _ = safeguard.apply(state["sg"], x, fx, x_next, ok, self.safeguard)
        return x_next, new

    def _ill_conditioned(self, gram: jax.Array, valid: jax.Array, cdt) -> jax.Array:
        """(B,) cond(gram) over the valid columns > restart_cond (``gram`` zero outside them;
        unused slots get the mean diagonal, so they do not count)."""
        diag = jnp.einsum("bii->bi", gram)
        mean = jnp.sum(diag, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1)
        gram = gram + jnp.where(valid, 0.0, mean[:, None])[:, :, None] * jnp.eye(valid.shape[1])
        eig = jnp.linalg.eigvalsh(gram)
        cond = eig[:, -1] / jnp.maximum(eig[:, 0], jnp.finfo(cdt).tiny)
        return (jnp.sum(valid, axis=1) > 1) & (cond > self.restart_cond)


@register_solver("broyden")
@dataclasses.dataclass(frozen=True)
class Broyden:
    """Limited-memory "good" Broyden on g(x) = f(x) - x, without line search.

    The inverse Jacobian of g is ``-I + sum_i u_i v_i^T`` (so the first step is Picard,
    ``x = f(x)``), updated after every step from ``dx``, ``dg`` with
    ``v^T = dx^T J^-1``, ``u = (dx - J^-1 dg) / (v^T dg)``, stored in fixed (B, memory, D)
    buffers. When they are full the approximation restarts from ``-I`` (overwriting the oldest
    pair instead, as deq-flow's ring does, measured far worse: each stored u depends on the pairs
    before it). The step is ``x + step_size * (-J^-1 g)``.
    No line search (deq-flow's default ``ls=False``): a line search costs extra f evaluations per
    step and, in jaxopt, silently failed (see ``jaxopt_backend``). Updates with a vanishing
    denominator are skipped; a non-finite step falls back to Picard.

    ``update_rule="bad"`` uses the "bad" Broyden update of the inverse instead, ``v = dg`` (the
    secant condition with the least change of ``J^-1`` rather than of ``J``), denominator
    ``dg^T dg``. ``safeguard > 0`` rejects a step whose residual exceeds ``safeguard`` times the
    last accepted one and takes the plain step from that one (``jflow.deq.safeguard``; the
    rejected pair still updates ``J^-1``): a line search that costs no extra f evaluation.
    """

    memory: int = 30
    step_size: float = 1.0
    update_rule: str = "good"
    safeguard: float = 0.0

    def __post_init__(self):
        if self.memory < 1:
            raise ValueError(f"jflow.deq Broyden: memory must be >= 1, got {self.memory}")
        if self.update_rule not in ("good", "bad"):
            raise ValueError("jflow.deq Broyden: update_rule must be 'good' or 'bad', got "
                             f"{self.update_rule!r}")
        if self.safeguard < 0:
            raise ValueError(f"jflow.deq Broyden: safeguard must be >= 0 (0: off), got {self.safeguard}")

    def init(self, x0: jax.Array, f: Callable = None) -> dict:
        b, d = x0.shape
        state = {
            "U": jnp.zeros((b, self.memory, d), x0.dtype),
            "V": jnp.zeros((b, self.memory, d), x0.dtype),
            "x_prev": jnp.zeros_like(x0),
            "g_prev": jnp.zeros_like(x0),
            "count": jnp.zeros((b,), jnp.int32),
        }
        if self.safeguard:
            state["sg"] = safeguard.init(x0)
        return state

    @staticmethod
    def _matvec(U, V, v):  # J^-1 v
        return -v + jnp.einsum("bid,bi->bd", U, jnp.einsum("bid,bd->bi", V, v))

    @staticmethod
    def _rmatvec(U, V, v):  # v^T J^-1
        return -v + jnp.einsum("bid,bi->bd", V, jnp.einsum("bid,bd->bi", U, v))

    def update(self, state: dict, x: jax.Array, fx: jax.Array, f: Callable = None
               ) -> tuple[jax.Array, dict]:
        count, slot = state["count"], (state["count"] - 1) % self.memory
        restart = (slot == 0)[:, None, None]  # first update, or buffers full: back to -I
        U = jnp.where(restart, 0.0, state["U"])
        V = jnp.where(restart, 0.0, state["V"])
        g = fx - x
        dx, dg = x - state["x_prev"], g - state["g_prev"]
        vt = self._rmatvec(U, V, dx) if self.update_rule == "good" else dg
        denom = jnp.sum(vt * dg, axis=1)
        tiny = jnp.finfo(x.dtype).tiny ** 0.5
        good = (count > 0) & (jnp.abs(denom) > tiny) & jnp.isfinite(denom)
        u = (dx - self._matvec(U, V, dg)) / jnp.where(good, denom, 1.0)[:, None]
        good = good & _finite_rows(u) & _finite_rows(vt)
        put = (_slot_mask(slot, self.memory) & good[:, None])[..., None]
        U = jnp.where(put, u[:, None, :], U)
        V = jnp.where(put, vt[:, None, :], V)
        x_next = x - self.step_size * self._matvec(U, V, g)
        finite = _finite_rows(x_next)
        x_next = jnp.where(finite[:, None], x_next, fx)
        new = {"U": U, "V": V, "x_prev": x, "g_prev": g, "count": count + 1}
        if self.safeguard:
            accelerated = finite & ((count > 0) | (self.step_size != 1.0))
            x_next, new["sg"], _ = safeguard.apply(state["sg"], x, fx, x_next, accelerated,
                                                    self.safeguard)
        return x_next, new
