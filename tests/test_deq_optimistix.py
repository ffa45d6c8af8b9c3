"""optimistix backend: the same interface and stats as the native solvers, optimistix's code
actually running, and ``grad="optimistix_ift"`` (optx.ImplicitAdjoint) equal to native IFT."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import linear_problem
from jflow.deq import DEQConfig, deq_fixed_point, get_solver, solve
from jflow.deq.solvers import available_solvers

import optimistix as optx  # noqa: E402  (in the dev extra: never skipped)


def _run(f, z0, name, steps, tol, **kw):
    solver = get_solver(name, **kw)
    return jax.jit(lambda z: solve(f, z, solver, steps, tol))(z0)


def test_optimistix_solvers_side_by_side_with_native():
    assert {"optimistix_fixed_point", "optimistix_newton"} <= set(available_solvers())
    f, z0, z_true = linear_problem(dtype=np.float32)
    z_n, s_n = _run(f, z0, "naive", 400, 1e-4)
    z_o, s_o = _run(f, z0, "optimistix_fixed_point", 400, 1e-4)
    # FixedPointIteration is Picard: the same iterates, step counts and traces
    np.testing.assert_array_equal(s_o["nstep"], s_n["nstep"])
    np.testing.assert_allclose(s_o["abs_trace"], s_n["abs_trace"], rtol=1e-5)


def test_optimistix_newton_on_a_nonlinear_map_closing_over_jit_traced_arrays():
    rng = np.random.RandomState(0)
    w = rng.randn(64, 64)
    w = jnp.asarray(1.6 * w / np.linalg.norm(w, 2), jnp.float32)
    x = jnp.asarray(0.3 * rng.randn(3, 64), jnp.float32)

    @jax.jit
    def run(w, x):
        f = lambda z: jnp.tanh(z @ w + x)  # noqa: E731
        z0 = jnp.zeros_like(x)
        return (solve(f, z0, get_solver("optimistix_newton"), 30, 1e-5, "rel"),
                solve(f, z0, get_solver("broyden"), 60, 1e-5, "rel"))

    (z, st), (z_b, st_b) = run(w, x)
    assert bool(jnp.all(st["converged"])) and bool(jnp.all(st_b["converged"]))
    assert int(st["nstep"].max()) < int(st_b["nstep"].min())  # Newton: fewer outer steps
    np.testing.assert_allclose(np.asarray(z), np.asarray(z_b), atol=1e-4)


@pytest.mark.parametrize("name,cls", [("optimistix_fixed_point", "FixedPointIteration"),
                                      ("optimistix_newton", "Newton")])
def test_optimistix_names_run_optimistix_code(name, cls, monkeypatch):
    f, z0, _ = linear_problem(dtype=np.float32)
    solver = get_solver(name)
    st = solver.init(z0, f)
    assert type(st).__module__.startswith("optimistix"), type(st)
    calls = []
    original = getattr(optx, cls).step

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(getattr(optx, cls), "step", spy)
    _, stats = jax.jit(lambda z: solve(f, z, solver, 3, 0.0))(z0)
    assert calls == [cls] and int(stats["nstep"].min()) == 3


def test_optimistix_implicit_adjoint_matches_native_ift_and_reaches_closures():
    rng = np.random.RandomState(1)
    w = rng.randn(32, 32)
    w = jnp.asarray(1.2 * w / np.linalg.norm(w, 2), jnp.float32)
    x = jnp.asarray(0.5 * rng.randn(2, 32), jnp.float32)
    bias = jnp.asarray(0.1 * rng.randn(32), jnp.float32)

    def grads(grad_mode, scale):
        cfg = DEQConfig(solver="naive", f_max_steps=200, f_tol=1e-6, grad=grad_mode)

        def loss(w, xx, b):
            f = lambda p, z, xi: jnp.tanh(z @ p + xi + b)  # closes over the traced bias  # noqa: E731
            states, _ = deq_fixed_point(f, w, xx, jnp.zeros_like(xx), cfg, train=True)
            return scale * jnp.mean(states[-1] ** 2)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(w, x, bias)

    native, scale = grads("ift", 1.0), 1e-6  # other loss scales: tests/test_deq_scale.py
    ours = grads("optimistix_ift", scale)
    for a, b in zip(ours, native):
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b), rtol=2e-2,
                                   atol=2e-2 * float(jnp.max(jnp.abs(b))))
    assert float(jnp.max(jnp.abs(ours[2]))) > 0  # the closed-over bias gets a gradient
