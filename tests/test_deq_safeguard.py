"""Solver guards: Anderson/Broyden residual safeguard, Anderson restarts, the "bad" Broyden update."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import linear_problem, tanh_map, tanh_params
from jflow.deq import get_solver, solve


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _problem():
    """A 2-norm contraction (Lipschitz 0.9) on which Anderson with mixing 2 overshoots."""
    p = tanh_params(dim=16, scale=0.9)
    x = jnp.asarray(np.random.RandomState(3).randn(1, 16))
    return (lambda z: tanh_map(p, z, x)), jnp.zeros((1, 16))


def _run(f, z0, solver, steps, rule="lowest"):
    return jax.jit(lambda z: solve(f, z, solver, steps, 0.0, return_rule=rule))(z0)


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_safeguard_replaces_a_rising_step_by_the_plain_step_from_the_best(name):
    f, z0 = _problem()
    kw = {"memory": 3, "beta": 2.0} if name == "anderson" else {"step_size": 2.5}
    steps = 40
    outcomes, final = {}, {}
    for sg in (0.0, 1.0):
        solver = get_solver(name, safeguard=sg, **kw)
        _, st = jax.jit(lambda z, s=solver: solve(f, z, s, steps, 0.0, return_rule="last",
                                                  capture_steps=range(1, steps + 1)))(z0)
        trace = np.asarray(st["abs_trace"][0])
        iterates = np.stack([np.asarray(x[0]) for x in st["states"]])  # evaluated at steps 1..40
        final[sg] = trace[-1]
        low = np.minimum.accumulate(trace)
        rises = np.nonzero(trace[1:] > low[:-1])[0] + 1  # 0-based steps above the lowest before
        assert rises.size, "no residual increase on this problem"
        i = int(rises[0])
        best = iterates[int(np.argmin(trace[:i]))]
        after = iterates[i + 1]
        outcomes[sg] = (np.allclose(after, np.asarray(f(jnp.asarray(best[None])))[0], rtol=0,
                                    atol=1e-12), trace[i + 1] / trace[:i].min())
    assert outcomes[1.0][0], "safeguarded: the step after a rise must be f(best)"
    assert outcomes[1.0][1] <= 0.9 + 1e-9  # a plain step of a 0.9-contraction from the best
    assert not outcomes[0.0][0]  # the unguarded solver keeps extrapolating from the bad iterate
    if name == "broyden":  # measured: step 2.5 diverges (1.7e7 after 40 steps), guarded 3.6e-8
        assert final[0.0] > 1.0 and final[1.0] < 1e-6


@pytest.mark.parametrize("name,kw", [("anderson", {"safeguard": 1e9}), ("anderson", {"restart_cond": 1e30}),
                                     ("broyden", {"safeguard": 1e9})])
def test_guards_that_never_trigger_change_nothing(name, kw):
    f, z0, _ = linear_problem(batch=2, dim=12)
    plain = _run(f, z0, get_solver(name), 25, "last")
    guarded = _run(f, z0, get_solver(name, **kw), 25, "last")
    np.testing.assert_allclose(np.asarray(guarded[1]["abs_trace"]), np.asarray(plain[1]["abs_trace"]),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(guarded[0]), np.asarray(plain[0]), rtol=1e-10, atol=1e-14)


def test_restart_on_every_step_is_plain_iteration_and_restarts_help_when_rare():
    f, z0, _ = linear_problem(batch=2, dim=12)
    naive = _run(f, z0, get_solver("naive"), 25, "last")[1]["abs_trace"]
    always = _run(f, z0, get_solver("anderson", restart_cond=1.0), 25, "last")[1]["abs_trace"]
    np.testing.assert_allclose(np.asarray(always), np.asarray(naive), rtol=1e-10)
    some = _run(f, z0, get_solver("anderson", restart_cond=1e8), 25, "last")[1]["abs_trace"]
    assert np.all(np.asarray(some)[:, -1] < 1e-3 * np.asarray(naive)[:, -1])


def test_bad_broyden_matches_dense_bad_broyden():
    """Dense re-derivation: J^-1 starts at -I, H += (dx - H dg) dg^T / (dg^T dg)."""
    f, z0, _ = linear_problem(batch=1, dim=6, rho=0.9)
    fn = lambda a: np.asarray(f(jnp.asarray(a[None])))[0]  # noqa: E731
    x, h, steps = np.asarray(z0[0]), -np.eye(6), 8
    g = fn(x) - x
    for _ in range(1, steps):
        x_new = x - h @ g
        g_new = fn(x_new) - x_new
        dx, dg = x_new - x, g_new - g
        h = h + np.outer(dx - h @ dg, dg) / (dg @ dg)
        x, g = x_new, g_new
    solver = get_solver("broyden", update_rule="bad")
    z, _ = _run(f, z0, solver, steps, "last")
    np.testing.assert_allclose(np.asarray(z)[0], x, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="update_rule"):
        get_solver("broyden", update_rule="ugly")
    with pytest.raises(ValueError, match="safeguard"):
        get_solver("anderson", safeguard=-1.0)
