"""Solver statistics: a dict of arrays (a pytree), per sample.

Keys (B = batch, T = max steps of the solve):

- ``nstep`` (B,) int32: f evaluations the sample used (it stops at its first converged iterate).
- ``abs_trace``, ``rel_trace`` (B, T): ``||f(z) - z||`` and ``||f(z) - z|| / (||f(z)|| + 1e-8)``
  of the iterate evaluated at each step; entries after a sample stopped repeat its last value.
- ``abs_lowest``, ``rel_lowest`` (B,): the lowest of each trace (independent minima, as deq-flow).
- ``lowest_step`` (B,) int32: 1-based step of the lowest residual in the stop mode's metric.
- ``converged`` (B,) bool: that lowest residual is below the tolerance.
- ``states`` (only when capture steps were requested): a tuple of state pytrees, one per step.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

REL_EPS = 1e-8
STAT_KEYS = ("nstep", "abs_trace", "rel_trace", "abs_lowest", "rel_lowest", "lowest_step",
             "converged")


def residuals(x: jax.Array, fx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample (abs, rel) residuals of (B, D) iterates, in at least float32, no gradient."""
    x, fx = jax.lax.stop_gradient(x), jax.lax.stop_gradient(fx)
    dt = jnp.promote_types(x.dtype, jnp.float32)
    diff = jnp.linalg.norm((fx - x).astype(dt), axis=1)
    rel = diff / (jnp.linalg.norm(fx.astype(dt), axis=1) + REL_EPS)
    return diff, rel


def fill_after_stop(trace: jax.Array, nstep: jax.Array) -> jax.Array:
    """Repeats each row's value at ``nstep - 1`` in the entries after it."""
    idx = jnp.clip(nstep - 1, 0, trace.shape[1] - 1)[:, None]
    last = jnp.take_along_axis(trace, idx, axis=1)
    return jnp.where(jnp.arange(trace.shape[1])[None, :] < nstep[:, None], trace, last)


def merge(segments: Sequence[dict]) -> dict:
    """Stats of consecutive solves (sliced core) as one: traces concatenated, ``nstep`` summed,
    lowest residuals and convergence taken from the last segment (the returned state's solve),
    ``lowest_step`` offset to count from the first segment."""
    if len(segments) == 1:
        return dict(segments[0])
    out = dict(segments[-1])
    out["abs_trace"] = jnp.concatenate([s["abs_trace"] for s in segments], axis=1)
    out["rel_trace"] = jnp.concatenate([s["rel_trace"] for s in segments], axis=1)
    out["nstep"] = sum(s["nstep"] for s in segments)
    offset = sum(s["abs_trace"].shape[1] for s in segments[:-1])
    out["lowest_step"] = segments[-1]["lowest_step"] + offset
    out.pop("states", None)
    return out


def summarize(stats: dict) -> dict[str, float]:
    """Batch means as Python floats for logging (host side; call outside jit)."""
    out = {}
    for key in ("nstep", "abs_lowest", "rel_lowest", "converged"):
        if key in stats:
            out[key] = float(np.mean(np.asarray(stats[key], dtype=np.float64)))
    if "abs_trace" in stats:
        out["abs_final"] = float(np.mean(np.asarray(stats["abs_trace"])[:, -1]))
        out["rel_final"] = float(np.mean(np.asarray(stats["rel_trace"])[:, -1]))
    return out
