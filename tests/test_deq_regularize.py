"""Jacobian penalty (Hutchinson) and spectral radius (power iteration)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.deq.regularize import jacobian_penalty, spectral_radius


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_jacobian_penalty_estimates_frobenius_norm_and_is_differentiable():
    rng = np.random.RandomState(0)
    a = jnp.asarray(rng.randn(6, 6))
    z = {"h": jnp.zeros((3, 2, 3))}  # pytree state, D = 6

    def pen(a, n):
        f = lambda t: {"h": (t["h"].reshape(3, 6) @ a.T).reshape(3, 2, 3)}  # noqa: E731
        return jacobian_penalty(f, z, jax.random.PRNGKey(1), n_samples=n)

    exact = float(jnp.sum(a ** 2) / 6)
    est = jax.jit(pen, static_argnums=1)(a, 4000)
    np.testing.assert_allclose(float(est), exact, rtol=0.05)
    g = jax.jit(jax.grad(pen), static_argnums=1)(a, 4000)
    np.testing.assert_allclose(g, 2 * a / 6, atol=0.05 * float(jnp.abs(a).max()))
    assert float(pen(a, 2)) > 0


def test_spectral_radius_on_known_spectra():
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(10, 10))
    mats = [q @ np.diag(np.linspace(-0.3, 0.8, 10)) @ q.T,  # symmetric, radius 0.8
            q @ np.diag(np.linspace(-1.2, 0.5, 10)) @ np.linalg.inv(q)]  # negative dominant, 1.2
    a = jnp.asarray(np.stack(mats))  # per-sample Jacobians

    def f(z):
        return jnp.einsum("bij,bj->bi", a, z)

    rho = jax.jit(lambda z: spectral_radius(f, z, jax.random.PRNGKey(0), 200))(jnp.zeros((2, 10)))
    np.testing.assert_allclose(np.asarray(rho), [0.8, 1.2], rtol=1e-3)
    # nonlinear map: radius of the Jacobian at the state, tanh'(0) = 1 vs tanh'(2) < 0.08
    f2 = lambda z: jnp.tanh(z @ jnp.asarray(mats[0]).T)  # noqa: E731
    at0 = spectral_radius(f2, jnp.zeros((1, 10)), jax.random.PRNGKey(0), 200)
    np.testing.assert_allclose(np.asarray(at0), [0.8], rtol=1e-3)


def test_deq_fixed_point_reports_a_differentiable_jacobian_penalty_when_weighted():
    """``DEQConfig.jac_loss_weight > 0``: a training solve returns ``stats["jac_loss"]`` = the
    Hutchinson penalty at the returned fixed point, with a gradient w.r.t. the parameters; weight
    0 (default) and evaluation solves return none; a negative weight is refused."""
    from jflow.deq import DEQConfig, deq_fixed_point

    rng = np.random.RandomState(1)
    w = jnp.asarray(0.3 * rng.randn(5, 5))
    x = jnp.asarray(rng.randn(2, 5))
    f = lambda p, z, x: jnp.tanh(z @ p + x)  # noqa: E731
    cfg = DEQConfig(solver="naive", f_max_steps=60, f_tol=1e-10, jac_loss_weight=1.0,
                    jac_loss_samples=3)
    key = jax.random.PRNGKey(7)

    def penalty(p):
        _, st = deq_fixed_point(f, p, x, jnp.zeros((2, 5)), cfg, train=True, key=key)
        return st["jac_loss"]

    states, st = deq_fixed_point(f, w, x, jnp.zeros((2, 5)), cfg, train=True, key=key)
    z = jax.lax.stop_gradient(states[-1])
    direct = jacobian_penalty(lambda t: f(w, t, x), z, key, 3)
    np.testing.assert_allclose(float(st["jac_loss"]), float(direct), rtol=1e-6)
    g = jax.grad(penalty)(w)
    assert float(jnp.abs(g).max()) > 0
    assert "jac_loss" not in deq_fixed_point(f, w, x, jnp.zeros((2, 5)), cfg.replace(
        jac_loss_weight=0.0), train=True)[1]
    assert "jac_loss" not in deq_fixed_point(f, w, x, jnp.zeros((2, 5)), cfg, train=False)[1]
    detached = lambda p, z, x: f(p, jax.lax.stop_gradient(z), x)  # noqa: E731
    _, st_d = deq_fixed_point(f, w, x, jnp.zeros((2, 5)), cfg, train=True, key=key, jac_f=detached)
    assert float(st_d["jac_loss"]) == 0.0  # jac_f is the map whose Jacobian is penalised
    with pytest.raises(ValueError, match="jac_loss_weight"):
        DEQConfig(jac_loss_weight=-1.0)
