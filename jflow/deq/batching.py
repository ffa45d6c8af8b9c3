"""Per-sample views of a batched map, for solver libraries that work on one sample (jaxopt,
optimistix) and are ``vmap``ped over the batch by the jflow adapters.

``f`` maps (B, D) -> (B, D) and treats the samples independently (every DEQ map does). A library
solver wants a (D,) -> (D,) function; calling ``f`` once per sample would multiply the cost by
B, so ``jax.custom_batching.custom_vmap`` hands the whole batch back to ``f`` when the adapter
``vmap``s over it. The unbatched forms (only traced for shapes, never evaluated) apply ``f`` to B
copies of the sample.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def batch_to_batched(per_sample: Callable, batched: Callable, n_batched: int) -> Callable:
    """A per-sample function whose ``vmap`` over the batch calls ``batched`` on whole arrays.

    The first ``n_batched`` arguments carry the batch; the rest (closed-over inputs hoisted by
    ``jax.closure_convert``) are passed through whole and must not be batched by ``vmap``.
    """
    fn = jax.custom_batching.custom_vmap(per_sample)

    @fn.def_vmap
    def _rule(axis_size, in_batched, *args):
        if any(in_batched[n_batched:]):
            raise NotImplementedError(
                "jflow.deq: vmap over the inputs f closes over is not supported by the library "
                "backends; batch them along the state's batch axis instead")
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)
                for a, b in zip(args[:n_batched], in_batched)] + list(args[n_batched:])
        return batched(*args), True

    return fn


def per_sample_jvp(f: Callable, z_example: jax.Array) -> tuple[Callable, tuple]:
    """``(f1, consts)``: the (B, D) map as a (D,) map ``f1(z, *consts)`` for use under ``vmap``
    over B, forward-differentiable (``jax.jvp`` / ``jax.linearize``, as optimistix's Newton and
    Chord need) through a ``custom_jvp`` whose tangent is the batched JVP of ``f``."""
    f_conv, consts = jax.closure_convert(f, z_example)
    batch = z_example.shape[0]
    tile = lambda a: jnp.broadcast_to(a, (batch,) + a.shape)  # noqa: E731
    value = batch_to_batched(lambda z, *c: f_conv(tile(z), *c)[0], f_conv, 1)
    tangent = batch_to_batched(
        lambda z, t, *c: jax.jvp(lambda y: f_conv(y, *c), (tile(z),), (tile(t),))[1][0],
        lambda z, t, *c: jax.jvp(lambda y: f_conv(y, *c), (z,), (t,))[1],
        2,
    )

    @jax.custom_jvp
    def f1(z, *c):
        return value(z, *c)

    @f1.defjvp
    def _jvp(primals, tangents):
        z, *c = primals
        return value(z, *c), tangent(z, tangents[0], *c)

    return f1, tuple(consts)
