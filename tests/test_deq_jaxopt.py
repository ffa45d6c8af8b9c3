"""jaxopt backend: same interface and stats as the native solvers; the Broyden line-search trap."""
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import linear_problem
from jflow.deq import get_solver, solve


def _run(f, z0, name, steps, tol, **kw):
    solver = get_solver(name, **kw)
    return jax.jit(lambda z: solve(f, z, solver, steps, tol))(z0)


def test_jaxopt_solvers_side_by_side_with_native():
    with jax.enable_x64(True):
        f, z0, z_true = linear_problem()
        z_n, s_n = _run(f, z0, "naive", 400, 1e-5)
        z_j, s_j = _run(f, z0, "jaxopt_fixed_point", 400, 1e-5)
        # same iterates, so the same per-sample step counts and traces
        np.testing.assert_array_equal(s_j["nstep"], s_n["nstep"])
        np.testing.assert_allclose(s_j["abs_trace"], s_n["abs_trace"], rtol=1e-10)
        for name, kw in [("jaxopt_anderson", {"ridge": 1e-10}), ("jaxopt_broyden", {})]:
            z, st = _run(f, z0, name, 400, 1e-5, **kw)
            assert bool(jnp.all(st["converged"])), name
            np.testing.assert_allclose(np.asarray(z), z_true, atol=1e-3)
            assert st["nstep"].max() <= 0.5 * s_n["nstep"].min(), (name, st["nstep"], s_n["nstep"])


@pytest.mark.parametrize("name,cls,state", [
    ("jaxopt_fixed_point", "FixedPointIteration", "FixedPointState"),
    ("jaxopt_anderson", "AndersonAcceleration", "AndersonState"),
    ("jaxopt_broyden", "Broyden", "BroydenState"),
])
def test_jaxopt_names_run_jaxopt_code(name, cls, state, monkeypatch):
    """The side-by-side numbers above would also hold if the jaxopt names were aliases of the
    native solvers: check that jaxopt's own state and update run, per sample."""
    import jaxopt

    f, z0, _ = linear_problem(dtype=np.float32)
    solver = get_solver(name)
    st = solver.init(z0, f)
    assert type(st).__module__.startswith("jaxopt") and type(st).__name__ == state
    assert st.iter_num.shape == (z0.shape[0],)  # vmapped: one jaxopt state per sample
    calls = []
    original = getattr(jaxopt, cls).update

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(getattr(jaxopt, cls), "update", spy)
    z, stats = jax.jit(lambda z: solve(f, z, solver, 5, 0.0))(z0)
    assert calls == [cls]  # traced once, inside the while loop
    assert int(stats["nstep"].min()) == 5


@pytest.fixture(scope="module")
def hard_problem():
    """float32 tanh map, D = 256, ||W|| = 0.95, batch 2 (x differs per sample)."""
    rng = np.random.RandomState(0)
    w = rng.randn(256, 256)
    w = jnp.asarray(0.95 * w / np.linalg.norm(w, 2), jnp.float32)
    x = jnp.asarray(3 * rng.randn(2, 256), jnp.float32)
    return (lambda z: jnp.tanh(z @ w.T + x)), jnp.zeros((2, 256), jnp.float32)


def test_jaxopt_broyden_default_line_search_fails_silently(hard_problem):
    import jaxopt

    f, z0 = hard_problem
    g = lambda z: f(z[None])[0] - z  # sample 0 only; x[0] is baked into f  # noqa: E731
    _, state = jaxopt.Broyden(fun=g, tol=1e-4, maxiter=60).run(z0[0])  # jaxopt defaults
    assert int(state.iter_num) == 60 and float(state.error) > 1e-2  # measured 0.60; no error raised
    _, st = _run(f, z0, "jaxopt_broyden", 60, 1e-4, stepsize=0.0, gamma=1.0)
    assert not bool(jnp.any(st["converged"]))  # jflow's stats do say it


def test_jaxopt_broyden_adapter_defaults_converge(hard_problem):
    f, z0 = hard_problem
    z, st = _run(f, z0, "jaxopt_broyden", 60, 1e-4)  # stepsize=1, gamma=-1
    assert bool(jnp.all(st["converged"])) and int(st["nstep"].max()) <= 20  # measured 8-9
    z_native, st_native = _run(f, z0, "broyden", 60, 1e-4)
    np.testing.assert_allclose(np.asarray(z), np.asarray(z_native), atol=1e-3)


def test_importing_the_backend_filters_only_jaxopt_deprecation():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning);"
            "import jflow.deq.jaxopt_backend")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning):  # the filter is local to our import
            warnings.warn("JAXopt is no longer maintained", DeprecationWarning)


@pytest.mark.parametrize("name", ["jaxopt_fixed_point", "jaxopt_anderson", "jaxopt_broyden"])
def test_jaxopt_solvers_accept_maps_closing_over_jit_traced_arrays(name):
    # Inside a model, f always closes over arrays traced by the outer jit (params, features).
    b = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3) / 6

    @jax.jit
    def run(b):
        f = lambda z: jnp.tanh(0.5 * z + b)  # noqa: E731
        return solve(f, jnp.zeros_like(b), get_solver(name), 40, 1e-4, "abs")

    z, st = run(b)
    np.testing.assert_allclose(np.asarray(z), np.asarray(jnp.tanh(0.5 * z + b)), atol=1e-4)
    assert bool(jnp.all(st["converged"]))
