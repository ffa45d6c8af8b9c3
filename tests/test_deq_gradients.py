"""Gradient modes: IFT vs finite differences and unrolled backprop; phantom steps; memory."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import tanh_map, tanh_params
from jflow.deq import BackwardSolve, DEQConfig, deq_fixed_point, implicit_step, phantom_steps

B, D = 3, 8


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        rng = np.random.RandomState(1)
        return tanh_params(D), jnp.asarray(rng.randn(B, D)), jnp.asarray(rng.randn(B, D))


def _loss(cfg, params, x, target):
    states, _ = deq_fixed_point(tanh_map, params, x, jnp.zeros_like(x), cfg, train=True)
    return jnp.sum((states[-1] - target) ** 2)


def _grad(cfg, params, x, target):
    return jax.jit(jax.grad(_loss, argnums=(1, 2)), static_argnums=0)(cfg, params, x, target)


def _exact_fixed_point(params, x):
    z = jnp.zeros_like(x)
    for _ in range(150):  # ||W|| = 0.6: 0.6^150 ~ 1e-33
        z = tanh_map(params, z, x)
    return z


TIGHT = dict(solver="anderson", solver_kwargs={"relative_ridge": True}, f_max_steps=60, f_tol=1e-12,
             b_solver="anderson", b_solver_kwargs={"relative_ridge": True}, b_max_steps=60, b_tol=1e-12)


@pytest.fixture(scope="module")
def ift_grad(problem):
    with jax.enable_x64(True):
        return _grad(DEQConfig(grad="ift", **TIGHT), *problem)


def test_ift_gradient_matches_finite_differences(problem, ift_grad):
    params, x, target = problem
    g_params, g_x = ift_grad
    loss = jax.jit(lambda p, xx: jnp.sum((_exact_fixed_point(p, xx) - target) ** 2))
    rng = np.random.RandomState(0)
    for _ in range(3):  # directional derivatives along random directions
        dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.randn(*a.shape)), params)
        dx = jnp.asarray(rng.randn(*x.shape))
        eps = 1e-6
        plus = loss(jax.tree_util.tree_map(lambda a, d: a + eps * d, params, dp), x + eps * dx)
        minus = loss(jax.tree_util.tree_map(lambda a, d: a - eps * d, params, dp), x - eps * dx)
        fd = (plus - minus) / (2 * eps)
        an = sum(jnp.vdot(g_params[k], dp[k]) for k in params) + jnp.vdot(g_x, dx)
        np.testing.assert_allclose(float(an), float(fd), rtol=1e-7)


def test_ift_gradient_matches_unrolled_backprop(problem, ift_grad):
    cfg = DEQConfig(grad="unrolled", solver="naive", return_rule="last", f_max_steps=70,
                    f_tol=1e-14)
    g_unrolled = _grad(cfg, *problem)
    for a, b in zip(jax.tree_util.tree_leaves(ift_grad), jax.tree_util.tree_leaves(g_unrolled)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_phantom_gradient_is_k_differentiable_steps(problem, ift_grad):
    params, x, target = problem
    z_star = _exact_fixed_point(params, x)
    for k, tau in [(1, 1.0), (3, 0.6)]:
        cfg = DEQConfig(grad="phantom", phantom_steps=k, tau=tau, **TIGHT)
        g = _grad(cfg, params, x, target)

        def manual(p, xx):  # k steps from the (stopped) exact fixed point
            z = z_star
            for _ in range(k):
                z = (1 - tau) * z + tau * tanh_map(p, z, xx)
            return jnp.sum((z - target) ** 2)

        g_ref = jax.grad(manual, argnums=(0, 1))(params, x)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    # and the 1-step gradient is not the exact one on this problem
    assert not np.allclose(g[1], ift_grad[1], rtol=1e-2)


def test_ift_reaches_arrays_closed_over_and_x():
    params = tanh_params(D)
    x = jnp.asarray(np.random.RandomState(2).randn(B, D))
    back = BackwardSolve("broyden", (), 60, 1e-12)

    def loss(scale, xx):
        f = lambda p, z, xin: tanh_map(p, z, scale * xin)  # closes over the traced `scale`  # noqa: E731
        z = _exact_fixed_point(params, scale * xx)
        return jnp.sum(implicit_step(f, params, xx, z, back) ** 2)

    g_scale, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(1.3), x)
    exact = lambda s, xx: jnp.sum(_exact_fixed_point(params, s * xx) ** 2)  # noqa: E731
    r_scale, r_x = jax.grad(exact, argnums=(0, 1))(jnp.asarray(1.3), x)
    np.testing.assert_allclose(g_scale, r_scale, rtol=1e-8)
    np.testing.assert_allclose(g_x, r_x, rtol=1e-8, atol=1e-12)


def test_phantom_zero_steps_stops_gradient():
    params = tanh_params(D)
    z = jnp.ones((B, D))
    g = jax.grad(lambda zz: jnp.sum(phantom_steps(tanh_map, params, z, zz, k=0)))(z)
    assert bool(jnp.all(g == 0))


def _temp_bytes(grad, steps):
    """XLA temp memory of one gradient of a small conv DEQ (float32, 16x16x8 state)."""
    rng = np.random.RandomState(0)
    w = jnp.asarray(rng.randn(3, 3, 8, 8) * 0.05, jnp.float32)
    x = jnp.asarray(rng.randn(2, 16, 16, 8), jnp.float32)

    def f(p, z, xx):
        y = jax.lax.conv_general_dilated(z, p, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y + xx)

    cfg = DEQConfig(solver="naive", grad=grad, f_max_steps=steps, f_tol=0.0, b_solver="naive",
                    b_max_steps=steps, b_tol=0.0, unroll_impl="scan")

    def loss(p):
        states, _ = deq_fixed_point(f, p, x, jnp.zeros_like(x), cfg, train=True)
        return jnp.sum(states[-1] ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(w).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_training_memory_flat_in_steps_for_ift_and_phantom_not_unrolled():
    with jax.enable_x64(False):
        mem = {(g, s): _temp_bytes(g, s) for g in ("ift", "phantom", "unrolled") for s in (5, 30)}
    for g in ("ift", "phantom"):
        assert mem[(g, 30)] <= 1.05 * mem[(g, 5)], mem
    # unrolled stores every step's activations: 16*16*8*2*4 bytes = 16 KiB per step at least
    assert mem[("unrolled", 30)] >= mem[("unrolled", 5)] + 25 * 16 * 1024, mem
    assert mem[("unrolled", 30)] > 3 * mem[("phantom", 30)], mem


def test_vmap_of_ift_gradient_gives_per_sample_gradients(problem, ift_grad):
    params, x, target = problem
    cfg = DEQConfig(grad="ift", **TIGHT)
    per_sample = jax.jit(jax.vmap(jax.grad(lambda xs, ts: _loss(cfg, params, xs[None], ts[None]))))
    np.testing.assert_allclose(per_sample(x, target), ift_grad[1], rtol=1e-8, atol=1e-12)

