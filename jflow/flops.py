"""Floating-point operations of a JAX function (its jaxpr) or of a compiled program (its HLO).

XLA's ``compiled.cost_analysis()["flops"]`` counts the body of every ``while`` loop once, so for a
scan (DIP's and LiteFlowNet2's correlations) or the DEQ solver's ``while_loop`` it reports one
trip. :func:`count_flops` walks the jaxpr instead: convolutions and matrix products count
``2 * multiply-adds``; elementwise arithmetic one per output element; reductions one per input
element. ``scan`` bodies count ``length`` times; a ``while_loop`` counts its body at its step
limit, the largest integer ``k`` in a ``counter < k`` test of its condition (the DEQ solver's
``f_max_steps``): an upper bound when a solve stops early, exact when it runs to the limit.

The jaxpr holds every operation as written, including work XLA then removes (outputs nobody
uses) or computes once (the same computation in several unrolled iterations).
:func:`count_compiled_flops` counts what a compiled program executes instead: its convolutions
and matrix products, read from XLA's optimised HLO with loops at their trip counts.
"""
from __future__ import annotations

import math
import re
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


_HLO_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
# name = shape opcode(operands), attributes; a tuple shape may nest and holds no "word("
_HLO_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
_HLO_ARRAY = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def count_compiled_flops(compiled: Any, unknown_trips: float = 1) -> dict[str, float]:
    """Convolution and matrix-product FLOPs (2 per multiply-add) that a compiled XLA program
    executes, read from its optimised HLO (``compiled.as_text()``, or the text itself): work XLA
    removed (unused outputs, computations shared between unrolled iterations) does not count, a
    ``while`` body counts ``known_trip_count`` times (``unknown_trips`` times where XLA does not
    know it, e.g. a solver loop that stops on a tolerance), a conditional its costliest branch.
    Products XLA rewrote as elementwise multiplies and reductions are not counted. Returns
    ``conv``, ``dot`` and ``unknown_loops`` (the loops without a known trip count)."""
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    own, calls, entry, unknown = _parse_hlo(text, unknown_trips)
    memo: dict[Any, tuple[float, float]] = {}

    def total(comp) -> tuple[float, float]:
        if isinstance(comp, tuple):  # a conditional's branches
            return max((total(b) for b in comp), key=sum, default=(0.0, 0.0))
        if comp not in memo:
            conv, dot = own.get(comp, (0.0, 0.0))
            for callee, times in calls.get(comp, ()):
                sub = total(callee)
                conv, dot = conv + times * sub[0], dot + times * sub[1]
            memo[comp] = (conv, dot)
        return memo[comp]

    conv, dot = total(entry) if entry else (0.0, 0.0)
    return {"conv": conv, "dot": dot, "unknown_loops": unknown}


def _parse_hlo(text: str, unknown_trips: float) -> tuple[dict, dict, str | None, int]:
    """Per computation its own (conv, dot) FLOPs and the computations it calls with their
    multiplicity; the entry computation; the number of loops without a known trip count."""
    shapes: dict[str, tuple[int, ...]] = {}
    own: dict[str, list[float]] = {}
    calls: dict[str, list] = {}
    entry, comp, unknown = None, None, 0
    for line in text.splitlines():
        header = _HLO_COMPUTATION.match(line)
        if header:
            comp = header.group(1)
            own[comp], calls[comp] = [0.0, 0.0], []
            entry = comp if line.startswith("ENTRY") else entry
            continue
        inst = _HLO_INSTRUCTION.match(line) if comp else None
        if not inst:
            continue
        name, shape, op, rest = inst.groups()
        array = _HLO_ARRAY.match(shape)
        if array:
            shapes[name] = tuple(int(d) for d in array.group(1).split(",") if d)
        operands = [shapes.get(o, ()) for o in re.findall(r"%([\w.\-]+)", rest.split(")")[0])]
        labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
        dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
        if op == "convolution" and array and labels and len(operands) == 2 and (
                len(operands[1]) == len(labels.group(1))):  # kernel shape known
            kernel = operands[1]
            per_out = math.prod(kernel) // max(kernel[labels.group(1).index("o")], 1)
            own[comp][0] += 2.0 * math.prod(shapes[name]) * per_out
        elif op == "dot" and array and dims and operands and operands[0]:
            k = math.prod(operands[0][int(d)] for d in dims.group(1).split(",") if d)
            own[comp][1] += 2.0 * math.prod(shapes[name]) * k
        if op == "while":
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
            unknown += trips is None
            body = re.search(r"body=%([\w.\-]+)", rest).group(1)
            calls[comp].append((body, int(trips.group(1)) if trips else unknown_trips))
        for callee in re.findall(r"\b(?:calls|to_apply)=%([\w.\-]+)", rest):
            calls[comp].append((callee, 1))
        branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
        pair = re.findall(r"(?:true|false)_computation=%([\w.\-]+)", rest)
        if branches or pair:
            names = re.findall(r"%([\w.\-]+)", branches.group(1)) if branches else pair
            calls[comp].append((tuple(names), 1))
    return own, calls, entry, unknown
