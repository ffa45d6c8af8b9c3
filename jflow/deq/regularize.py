"""Regulariser and diagnostic of the Jacobian ``J = df/dz`` at a state, per sample.

- :func:`jacobian_penalty`: Hutchinson estimate of ``||J||_F^2 / D`` (deq-flow's
  ``jac_loss_estimate``: ``mean_v ||v^T J||^2`` over Gaussian ``v``, divided by the number of
  entries), averaged over the batch; differentiable, so it can be added to a training loss.
- :func:`spectral_radius`: power iteration on ``v <- v^T J`` (75 iterations as deq-flow), giving
  ``|lambda_max|`` per sample as ``||v^T J|| / ||v||`` at the end; a value near or above 1 means
  the fixed-point iteration does not contract. For a complex dominant eigenvalue pair the power
  method oscillates and the estimate is only a bound-like indication.

Both take ``f_z``, a batched map of a pytree ``z`` (leading batch axis), e.g.
``lambda z: f(params, z, x)``. Jacobians are per sample: samples must not interact in ``f``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jflow.deq.flat import flat_map, flatten_batched

PyTree = Any


def _flat_vjp(f_z: Callable, z: PyTree):
    x, unflatten = flatten_batched(z)
    f = flat_map(f_z, unflatten)
    _, vjp = jax.vjp(f, x)
    return x, lambda v: vjp(v)[0]


def jacobian_penalty(f_z: Callable[[PyTree], PyTree], z: PyTree, key: jax.Array, n_samples: int = 2
                     ) -> jax.Array:
    """Scalar ``mean_b ||J_b||_F^2 / D`` estimated with ``n_samples`` Gaussian probes."""
    x, vjp = _flat_vjp(f_z, z)
    v = jax.random.normal(key, (n_samples,) + x.shape, x.dtype)
    vjs = jax.lax.map(vjp, v) if n_samples <= 8 else jax.vmap(vjp)(v)
    return jnp.sum(jnp.square(vjs)) / (n_samples * x.size)


def spectral_radius(f_z: Callable[[PyTree], PyTree], z: PyTree, key: jax.Array, n_iters: int = 75
                    ) -> jax.Array:
    """(B,) estimate of the largest |eigenvalue| of each sample's Jacobian (no gradient)."""
    z = jax.lax.stop_gradient(z)
    x, vjp = _flat_vjp(f_z, z)
    v0 = jax.random.normal(key, x.shape, x.dtype)

    def unit(v):
        return v / (jnp.linalg.norm(v, axis=1, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, n_iters, lambda _, v: unit(vjp(v)), unit(v0))
    return jax.lax.stop_gradient(jnp.linalg.norm(vjp(v), axis=1))
