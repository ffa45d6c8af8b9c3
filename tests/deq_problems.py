"""Shared small fixed-point problems for the jflow.deq tests (float64 where precision matters)."""
import jax.numpy as jnp
import numpy as np


def linear_problem(batch=4, dim=32, rho=0.95, seed=0, dtype=np.float64):
    """f(z) = A z + b_i with symmetric A, eigenvalues evenly in [0, rho]; exact fixed points."""
    rng = np.random.RandomState(seed)
    q, _ = np.linalg.qr(rng.randn(dim, dim))
    a = q @ np.diag(np.linspace(0.0, rho, dim)) @ q.T
    b = rng.randn(batch, dim)
    z_true = np.linalg.solve(np.eye(dim) - a, b.T).T
    A, B = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    return (lambda z: z @ A.T + B), jnp.zeros((batch, dim), dtype), np.asarray(z_true)


def tanh_params(dim=8, scale=0.6, seed=0, dtype=np.float64):
    """Parameters of the contractive map f(p, z, x) = tanh(z W^T + x + b), ||W||_2 = scale."""
    rng = np.random.RandomState(seed)
    w = rng.randn(dim, dim)
    w = scale * w / np.linalg.norm(w, 2)
    return {"W": jnp.asarray(w, dtype), "b": jnp.asarray(0.1 * rng.randn(dim), dtype)}


def tanh_map(p, z, x):
    return jnp.tanh(z @ p["W"].T + x + p["b"])
