"""Per-sample flattening: a pytree whose leaves share a leading batch axis <-> a (B, D) matrix.

Solvers work on (B, D) so that per-sample norms, masks and histories are plain array ops.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def batch_size(tree: PyTree) -> int:
    """The common leading axis of every leaf; raises ValueError if the leaves disagree."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("jflow.deq: the state pytree has no leaves")
    # ints, or symbolic dimensions under jax.export (kept symbolic: no int())
    # np.shape/np.ndim: static shapes (jax2onnx patches jnp.shape to return a traced array)
    sizes = {_dim(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(
            f"jflow.deq: every state leaf needs the same leading batch axis, got shapes {shapes}"
        )
    return sizes.pop()


def _dim(d):
    """``int(d)`` for a concrete size; a symbolic (``jax.export``) dimension as it is."""
    try:
        return int(d)
    except Exception:  # noqa: BLE001  (InconclusiveDimensionOperation: symbolic)
        return d


def flatten_batched(tree: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
    """Returns ``(z, unflatten)`` with ``z`` of shape (B, D) in the leaves' promoted dtype.

    ``unflatten`` maps any (B, D) array back to the pytree, casting each leaf to its dtype.
    """
    b = batch_size(tree)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    shapes = [tuple(np.shape(leaf))[1:] for leaf in leaves]
    dtypes = [jnp.result_type(leaf) for leaf in leaves]
    symbolic = not all(isinstance(d, (int, np.integer)) for s in shapes for d in s)
    if symbolic:  # symbolic sizes (jax.export): products and slices of dimension expressions
        sizes = [math.prod(s) for s in shapes]
    else:
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    dtype = jnp.result_type(*dtypes)
    flat = jnp.concatenate([jnp.reshape(leaf, (b, -1)).astype(dtype) for leaf in leaves], axis=1)
    splits = list(itertools.accumulate(sizes))[:-1]

    def unflatten(z: jax.Array) -> PyTree:
        if symbolic:
            bounds = [0, *splits, z.shape[1]]
            parts = [jax.lax.slice_in_dim(z, lo, hi, axis=1)
                     for lo, hi in zip(bounds[:-1], bounds[1:])]
        else:
            parts = jnp.split(z, splits, axis=1) if splits else [z]
        out = [
            jnp.reshape(p, (z.shape[0], *s)).astype(d) for p, s, d in zip(parts, shapes, dtypes)
        ]
        return jax.tree_util.tree_unflatten(treedef, out)

    return flat, unflatten


def flat_map(f: Callable[[PyTree], PyTree], unflatten: Callable) -> Callable[[jax.Array], jax.Array]:
    """Lifts a pytree -> pytree map to (B, D) -> (B, D) (same structure in and out)."""

    def f_flat(z: jax.Array) -> jax.Array:
        out = f(unflatten(z))
        flat, _ = flatten_batched(out)
        return flat.astype(z.dtype)

    return f_flat


def where_batch(mask: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """Per-sample select: leaf ``new`` where ``mask`` (B,) is true, else ``old``."""

    def sel(n, o):
        m = jnp.reshape(mask, mask.shape + (1,) * (np.ndim(n) - 1))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(sel, new, old)
