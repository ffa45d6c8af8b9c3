"""``Chain``: recomputed segments whose backward passes run one after another.

``jax.checkpoint`` lets a segment keep only its inputs and recompute the rest in the backward
pass, but independent segments (say, the supervised states of a DEQ, between which no gradient
flows) may then be recomputed side by side: XLA is free to schedule them so, and its CPU
scheduler does, which keeps every segment's activations live at once. A ``Chain`` applies
segments in order and ties their backward passes together: segment i is recomputed only after
the backward pass of segment i+1 has finished: the arrays the segments close over (parameters,
shared inputs) are threaded through them, so segment i's backward pass receives the gradient
accumulated by the later ones, and an ``optimization_barrier`` plus (since XLA:CPU drops such
barriers before eliminating common subexpressions) a data dependence make its recomputation
wait for it. One segment's activations are live at a time, and one gradient buffer per shared
array.

Values, gradients and the forward computation are those of the plain functions; the backward
pass recomputes each segment once.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


class Chain:
    """Applies functions as ordered, recomputed segments: ``out = chain(fn, *args)``.

    ``fn`` may close over arrays (parameters, shared inputs): they get gradients. Arrays closed
    over by several segments are threaded from one segment to the next (each passes them on
    unchanged), so their gradient is accumulated along the chain in one buffer, and a segment's
    backward pass starts from the accumulated gradient of the segments after it. Use one
    ``Chain`` per group of segments to be ordered, within one trace.
    """

    def __init__(self) -> None:
        self._current: dict[int, tuple[Any, Any]] = {}  # id(closed-over array) -> (it, threaded)
        self._token: jax.Array | None = None  # its gradient: "the later segments are done"

    def __call__(self, fn: Callable[..., PyTree], *args: PyTree) -> PyTree:
        if self._token is None:
            self._token = jnp.zeros((), jnp.float32)
        closed, consts = jax.closure_convert(fn, *args)
        threaded = tuple(self._current.get(id(c), (c, c))[1] for c in consts)
        out, self._token, passed = _segment(closed, self._token, args, threaded)
        for c, p in zip(consts, passed):
            self._current[id(c)] = (c, p)  # the pair keeps ``c`` alive: ids stay unique
        return out


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _segment(fn, token, args, consts):
    return fn(*args, *consts), token, consts


def _segment_fwd(fn, token, args, consts):
    return (fn(*args, *consts), token, consts), (args, consts)


def _segment_bwd(fn, res, cotangents):
    # g_later: the closed-over arrays' gradient from later segments; g_token: they are done
    g_out, g_token, g_later = cotangents
    # nothing of this segment is recomputed before the later segments' backward passes are done
    res, g_out, g_token, g_later = jax.lax.optimization_barrier((res, g_out, g_token, g_later))
    args, consts = res
    # XLA:CPU drops the barriers before common-subexpression elimination, which would then merge
    # the recomputation with the forward pass (keeping its activations): the inputs are also
    # multiplied by a runtime 1 that depends on the arriving gradients
    args = _tie(args, (g_out, g_token, g_later))
    _, vjp = jax.vjp(lambda a, c: fn(*a, *c), args, consts)
    grads = vjp(g_out)
    g_args, g_consts = grads
    g_consts = tuple(_add(a, b) for a, b in zip(g_later, g_consts))
    return _tie(jnp.zeros_like(g_token), grads), g_args, g_consts


def _add(a, b):
    return a + b if jnp.issubdtype(b.dtype, jnp.inexact) else b


def _tie(tree: PyTree, deps: PyTree) -> PyTree:
    """``tree`` unchanged in value (unless ``deps`` hold inf/NaN), but data-dependent on one
    element of every floating leaf of ``deps`` (XLA does not fold ``0 * x`` for floats)."""
    firsts = [jnp.ravel(d)[0].astype(jnp.float32) for d in jax.tree_util.tree_leaves(deps)
              if jnp.issubdtype(d.dtype, jnp.floating) and d.size]
    if not firsts:
        return tree
    one = 0 * sum(firsts) + 1

    def tie(a):
        return a * one.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree_util.tree_map(tie, tree)


_segment.defvjp(_segment_fwd, _segment_bwd)
