"""A traced jaxpr re-traced into one that jax2onnx converts (``jflow.export_onnx``).

:func:`rewrite` re-binds a closed jaxpr equation by equation under ``jax.make_jaxpr`` (plain JAX,
none of jax2onnx's patched ``jax.numpy``), with these changes, all the same numbers as JAX:

- equations whose inputs are all known (weights, literals, seeded PRNG keys) with small static
  outputs are computed eagerly and become constants: e.g. DIP's seeded ``jax.random`` noise at a
  fixed size, whose bit casts (ONNX ``BitCast``) have no onnxruntime kernel;
- a gather that is a ``dynamic_slice`` (``x[b:]`` with a symbolic ``b``), whose symbolic slice
  size jax2onnx's gather lowering cannot take, is bound as ``lax.dynamic_slice``;
- zero-size operands of ``concatenate`` (``jnp.pad(mode="edge")`` makes them) are dropped;
- a batched ``dynamic_slice`` (``vmap`` of ``lax.dynamic_slice``: a gather with a batching
  dimension and a start per sliced axis, the static-size correlation window of
  ``jflow.models.corr``), which jax2onnx 0.17 cannot lower, becomes one ``take_along_axis`` per
  sliced axis over clamped start + offset indices (pure data movement).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Largest output (elements) of an equation on known inputs that is computed eagerly and stored as
# an initializer; broadcasts of small arrays stay ops above BROADCAST_FOLD_MAX.
FOLD_MAX_ELEMENTS = 1 << 20
BROADCAST_FOLD_MAX = 4096
# Folded results of one rewrite, by primitive, input identities and parameters (the inputs are
# kept with them so that their ids stay theirs).
_FOLDED: dict[Any, Any] = {}
# Primitives never computed eagerly: a symbolic dimension's value exists only in the graph.
NOT_FOLDED = ("dim_as_value",)
# Call primitives whose body (the named parameter, a ClosedJaxpr) is evaluated in place.
INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "custom_jvp_call": "call_jaxpr"}


def _static_size(eqn) -> int | None:
    sizes = []
    for v in eqn.outvars:
        shape = getattr(v.aval, "shape", None)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        sizes.append(int(np.prod(shape, dtype=np.int64)))
    return sum(sizes)


def foldable(eqn, values: Sequence[Any]) -> bool:
    """Whether ``eqn`` is computed at conversion time (see the module docstring)."""
    import jax

    if eqn.primitive.name in NOT_FOLDED or any(isinstance(v, jax.core.Tracer) for v in values):
        return False
    size = _static_size(eqn)
    if size is None:
        return False
    if eqn.primitive.name == "broadcast_in_dim" and size > BROADCAST_FOLD_MAX:
        return False
    return size <= FOLD_MAX_ELEMENTS


def is_batched_slice(eqn) -> bool:
    """A gather that is ``vmap(lax.dynamic_slice)`` over axis 0: operand (P, ...), starts (P, k)
    for axes 1..k, every other axis whole, clamped starts."""
    if eqn.primitive.name != "gather":
        return False
    dn = eqn.params["dimension_numbers"]
    operand, starts = eqn.invars[0].aval, eqn.invars[1].aval
    k = starts.shape[-1] if starts.ndim == 2 else -1
    sizes = eqn.params["slice_sizes"]
    mode = str(eqn.params["mode"])
    return (k >= 1 and tuple(dn.operand_batching_dims) == (0,)
            and tuple(dn.start_indices_batching_dims) == (0,) and not dn.collapsed_slice_dims
            and tuple(int(d) for d in dn.start_index_map) == tuple(range(1, k + 1))
            and tuple(int(d) for d in dn.offset_dims) == tuple(range(1, operand.ndim))
            and sizes[0] == 1 and all(sizes[i] == operand.shape[i]
                                      for i in range(k + 1, operand.ndim))
            and ("CLIP" in mode or "PROMISE_IN_BOUNDS" in mode)
            and all(isinstance(sizes[i], int) for i in range(1, k + 1)))


def is_dynamic_slice(eqn) -> bool:
    """A gather that is ``lax.dynamic_slice``: one start vector, no collapsed or batching axes,
    clamped starts (``x[b:]`` with a symbolic ``b`` lowers to this)."""
    if eqn.primitive.name != "gather":
        return False
    dn = eqn.params["dimension_numbers"]
    operand, starts = eqn.invars[0].aval, eqn.invars[1].aval
    mode = str(eqn.params["mode"])
    return (starts.ndim == 1 and not dn.operand_batching_dims and not dn.collapsed_slice_dims
            and tuple(int(d) for d in dn.offset_dims) == tuple(range(operand.ndim))
            and ("CLIP" in mode or "PROMISE_IN_BOUNDS" in mode))


def dynamic_slice(operand, starts, eqn):
    """The gather ``eqn`` (:func:`is_dynamic_slice`) as ``lax.dynamic_slice``."""
    import jax
    import jax.numpy as jnp

    index = [jnp.zeros((), starts.dtype)] * operand.ndim
    for j, axis in enumerate(eqn.params["dimension_numbers"].start_index_map):
        index[int(axis)] = jax.lax.index_in_dim(starts, j, keepdims=False)
    return jax.lax.dynamic_slice(operand, index, eqn.params["slice_sizes"])


def batched_slice(operand, starts, slice_sizes: Sequence[int]):
    """``vmap(lax.dynamic_slice)(operand, starts)`` (starts clamped into range, as
    ``dynamic_slice``) as one ``take_along_axis`` per sliced axis."""
    import jax
    import jax.numpy as jnp

    out = operand
    p = operand.shape[0]
    for j in range(starts.shape[1]):
        axis, n = j + 1, int(slice_sizes[j + 1])
        start = jax.lax.index_in_dim(starts, j, axis=1, keepdims=False).astype(jnp.int32)
        start = jnp.clip(start, 0, operand.shape[axis] - n)
        idx = start[:, None] + jax.lax.broadcasted_iota(jnp.int32, (p, n), 1)
        shape = [1] * out.ndim
        shape[0], shape[axis] = p, n
        target = out.shape[:axis] + (n,) + out.shape[axis + 1:]
        out = jnp.take_along_axis(out, jnp.broadcast_to(idx.reshape(shape), target), axis=axis)
    return out


def _empty_along(var, params) -> bool:
    """A concatenate operand with no entries along the axis (``jnp.pad(mode="edge")`` makes
    them for unpadded sides; jax2onnx's Expand to a 0-size dimension then fails onnxruntime's
    shape inference)."""
    d = var.aval.shape[params["dimension"]]
    return isinstance(d, int) and d == 0


def _rewrite_body(closed):
    """A ``while`` cond / body ClosedJaxpr rewritten (without folding, so that it keeps no
    constants of its own); unchanged if it has constants."""
    import jax

    if closed.consts:
        return closed
    specs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
             for v in closed.jaxpr.invars]
    new = jax.make_jaxpr(lambda *a: eval_rewriting(closed.jaxpr, (), *a, fold=False))(*specs)
    return closed if new.consts else new


def eval_rewriting(jaxpr, consts: Sequence[Any], *args: Any, fold: bool = True) -> list[Any]:
    """``jax.core.eval_jaxpr`` with the module docstring's changes (``fold``: the constant
    folding), ``jit`` and ``custom_jvp_call`` bodies inlined (inference only: no derivative rules
    are needed), ``while`` bodies rewritten in place (no folding); ``scan`` bodies unchanged."""
    import jax
    from jax.extend.core import Literal

    env: dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        params = eqn.primitive.get_bind_params(eqn.params)
        if fold and foldable(eqn, values):
            key = (eqn.primitive, tuple(map(id, values)), repr(sorted(params.items())))
            if key not in _FOLDED:  # one constant per weight-derived value, not one per use
                with jax.ensure_compile_time_eval():
                    _FOLDED[key] = (eqn.primitive.bind(*values, **params), values)
            out = _FOLDED[key][0]
        elif eqn.primitive.name in INLINED:  # jit / custom_jvp_call bodies, inlined
            inner = eqn.params[INLINED[eqn.primitive.name]]
            out = eval_rewriting(inner.jaxpr, inner.consts, *values, fold=fold)
        elif eqn.primitive.name == "while":
            params = dict(params, cond_jaxpr=_rewrite_body(params["cond_jaxpr"]),
                          body_jaxpr=_rewrite_body(params["body_jaxpr"]))
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*values, **params)
        elif eqn.primitive.name == "concatenate" and any(_empty_along(v, params) for v in
                                                           eqn.invars):
            kept = [x for v, x in zip(eqn.invars, values) if not _empty_along(v, params)]
            out = kept[0] if len(kept) == 1 else eqn.primitive.bind(*kept, **params)
        elif is_dynamic_slice(eqn):
            out = dynamic_slice(values[0], values[1], eqn)
        elif is_batched_slice(eqn):
            out = batched_slice(values[0], values[1], eqn.params["slice_sizes"])
        else:
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*values, **params)
        env.update(zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]))
    return [read(v) for v in jaxpr.outvars]


def rewrite(closed, *specs):
    """The closed jaxpr ``closed`` re-traced with :func:`eval_rewriting` on ``specs`` (the
    ``ShapeDtypeStruct`` inputs it was traced with, so symbolic dimensions stay the same)."""
    import jax

    _FOLDED.clear()
    try:
        return jax.make_jaxpr(lambda *a: eval_rewriting(closed.jaxpr, closed.consts, *a))(*specs)
    finally:
        _FOLDED.clear()
