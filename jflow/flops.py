"""Floating-point operations of a JAX function, counted on its jaxpr with loops multiplied out.

XLA's ``compiled.cost_analysis()["flops"]`` counts the body of every ``while`` loop once, so for a
scan (DIP's and LiteFlowNet2's correlations) or the DEQ solver's ``while_loop`` it reports one
trip. :func:`count_flops` walks the jaxpr instead: convolutions and matrix products count
``2 * multiply-adds``; elementwise arithmetic one per output element; reductions one per input
element. ``scan`` bodies count ``length`` times; a ``while_loop`` counts its body at its step
limit, the largest integer ``k`` in a ``counter < k`` test of its condition (the DEQ solver's
``f_max_steps``): an upper bound when a solve stops early, exact when it runs to the limit.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax.extend import core as jex_core

_ELEMENTWISE = frozenset((
    "add", "sub", "mul", "div", "max", "min", "neg", "exp", "log", "tanh", "logistic", "sqrt",
    "rsqrt", "pow", "integer_pow", "abs", "sign", "floor", "ceil", "round", "erf", "exp2",
    "log1p", "expm1", "square", "select_n", "clamp", "add_any", "atan2", "sin", "cos"))
_REDUCTIONS = frozenset(("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax",
                         "argmin", "cumsum"))


def count_flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """Operations of ``fn(*args, **kwargs)`` (arrays or ShapeDtypeStructs); nothing is run."""
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_flops(closed.jaxpr)


def _size(var) -> int:
    shape = getattr(var.aval, "shape", ())
    return int(math.prod(shape))


def _jaxpr_flops(jaxpr) -> float:
    return float(sum(_eqn_flops(e) for e in jaxpr.eqns))


def _sub(param) -> Any:
    return param.jaxpr if isinstance(param, jex_core.ClosedJaxpr) else param


def _eqn_flops(eqn) -> float:
    name = eqn.primitive.name
    p = eqn.params
    if name == "dot_general":
        (lc, _), _ = p["dimension_numbers"]
        k = math.prod(eqn.invars[0].aval.shape[d] for d in lc)
        return 2.0 * _size(eqn.outvars[0]) * k
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        spec = p["dimension_numbers"].rhs_spec  # (out, in, spatial...)
        per_out = math.prod(rhs[d] for d in spec[1:])
        return 2.0 * _size(eqn.outvars[0]) * per_out
    if name == "scan":
        return p["length"] * _jaxpr_flops(_sub(p["jaxpr"]))
    if name == "while":
        body = _jaxpr_flops(_sub(p["body_jaxpr"])) + _jaxpr_flops(_sub(p["cond_jaxpr"]))
        return _trip_limit(_sub(p["cond_jaxpr"])) * body
    if name == "cond":
        return max(_jaxpr_flops(_sub(b)) for b in p["branches"])
    subs = [v for v in p.values() if isinstance(v, (jex_core.ClosedJaxpr, jex_core.Jaxpr))]
    for key in ("fun_jaxpr", "call_jaxpr", "jaxpr"):  # pjit, custom_jvp/vjp, checkpoint, ...
        if key in p and not subs:
            subs = [p[key]]
    if subs:
        return sum(_jaxpr_flops(_sub(s)) for s in subs)
    if name in _ELEMENTWISE:
        return float(_size(eqn.outvars[0]))
    if name in _REDUCTIONS:
        return float(_size(eqn.invars[0]))
    return 0.0


def _trip_limit(cond) -> int:
    """The largest integer literal ``k`` compared as ``x < k`` in a loop condition (1 if none)."""
    best = 1
    for eqn in cond.eqns:
        if eqn.primitive.name in ("lt", "le") and isinstance(eqn.invars[1], jex_core.Literal):
            val = eqn.invars[1].val
            try:
                best = max(best, int(val) + (1 if eqn.primitive.name == "le" else 0))
            except (TypeError, ValueError):
                continue
        for v in eqn.params.values():
            if isinstance(v, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
                best = max(best, _trip_limit(_sub(v)))
    return best
