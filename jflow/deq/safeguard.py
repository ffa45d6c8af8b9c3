"""Residual safeguard for accelerated solvers: reject a step that raised the residual.

An accelerated step (Anderson mixing, a Broyden step) is only known to be good once ``f`` has
been evaluated at it, and the solve loop evaluates ``f`` once per step. So the check is made one
step late: when the residual ``||f(x) - x||`` of an accelerated iterate exceeds ``factor`` times
that of the last accepted iterate, the iterate is rejected and the next one is the plain step
``f(x_base)`` from the last accepted iterate ``x_base`` (whose image is kept). Plain steps are
always accepted. The rejected evaluation still counts as a step of the loop (and its pair
``(x, f(x))`` is still valid secant information for the solver's history).

On a contraction in the 2-norm, the accepted residuals then never increase for ``factor <= 1``,
and no two consecutive evaluations lie above the lowest residual before them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def init(x0: jax.Array) -> dict:
    """The safeguard's part of a solver state (every leaf has the batch axis)."""
    rdt = jnp.promote_types(x0.dtype, jnp.float32)
    return {"base_f": jnp.zeros_like(x0), "base_r": jnp.full((x0.shape[0],), jnp.inf, rdt),
            "accelerated": jnp.zeros((x0.shape[0],), bool)}


def apply(sg: dict, x: jax.Array, fx: jax.Array, proposal: jax.Array, accelerated: jax.Array,
          factor: float) -> tuple[jax.Array, dict, jax.Array]:
    """Returns ``(x_next, new safeguard state, rejected)``.

    ``proposal`` is the solver's next iterate computed from ``(x, fx)``; ``accelerated`` (B,)
    says whether it is more than the plain step ``fx``.
    """
    r = jnp.linalg.norm((fx - x).astype(sg["base_r"].dtype), axis=1)
    rejected = sg["accelerated"] & ~(r <= factor * sg["base_r"])  # NaN residuals are rejected
    keep = rejected[:, None]
    x_next = jnp.where(keep, sg["base_f"], proposal)
    new = {"base_f": jnp.where(keep, sg["base_f"], fx),
           "base_r": jnp.where(rejected, sg["base_r"], r),
           "accelerated": ~rejected & accelerated}
    return x_next, new, rejected
