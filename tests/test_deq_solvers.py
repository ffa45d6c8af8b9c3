"""Solvers and the solve loop: convergence, per-sample stopping, return rules, jit/vmap."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import linear_problem
from jflow.deq import get_solver, register_solver, solve
from jflow.deq.solvers import available_solvers


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _solve(f, z0, name, steps, tol, mode="abs", **kw):
    solver = get_solver(name, **kw)
    return jax.jit(lambda z: solve(f, z, solver, steps, tol, mode))(z0)


@pytest.fixture(scope="module")
def runs():
    """Solves the standard linear problem (spectrum [0, 0.95]) to abs tol 1e-5 with each solver."""
    with jax.enable_x64(True):
        f, z0, z_true = linear_problem()
        out = {}
        for label, name, kw in [("naive", "naive", {}), ("anderson", "anderson", {"relative_ridge": True}),
                                ("anderson_official", "anderson", {"relative_ridge": False}),
                                ("broyden", "broyden", {})]:
            z, st = _solve(f, z0, name, 400, 1e-5, **kw)
            out[label] = (np.asarray(z), np.asarray(st["converged"]), np.asarray(st["nstep"]))
        return out, z_true


@pytest.fixture(scope="module")
def nsteps(runs):
    return {label: n for label, (_, _, n) in runs[0].items()}


@pytest.mark.parametrize("label", ["naive", "anderson", "broyden"])
def test_every_solver_converges_to_the_true_fixed_point(runs, label):
    (z, converged, _), z_true = runs[0][label], runs[1]
    assert converged.all(), label
    np.testing.assert_allclose(z, z_true, atol=1e-4)


@pytest.mark.parametrize("label", ["anderson", "broyden"])
def test_quasi_newton_solvers_need_far_fewer_steps_than_naive(nsteps, label):
    # measured: naive 178-242, anderson (relative ridge) 36-40, broyden 33-35 steps
    assert nsteps[label].max() <= 0.5 * nsteps["naive"].min(), (label, nsteps)


def test_absolute_ridge_slows_anderson_at_small_residuals(nsteps):
    # deq-flow's lambda = 1e-4 is absolute: once |f(z) - z|^2 << lambda the mixing weights tend
    # to uniform and it stalls (measured: no sample reaches 1e-5 in 400 steps; 36-40 steps with
    # the relative ridge).
    assert nsteps["anderson_official"].min() > 2 * nsteps["anderson"].max()


def test_damped_naive_and_rel_stop():
    f, z0, z_true = linear_problem()
    z, st = _solve(f, z0, "naive", 600, 1e-6, "rel", tau=0.7)
    assert bool(jnp.all(st["converged"]))
    assert bool(jnp.all(st["rel_lowest"] < 1e-6))
    # error <= rel_tol * |f(z)| / (1 - 0.95)
    np.testing.assert_allclose(np.asarray(z), z_true, atol=20 * 1e-6 * 20)


def test_stats_shapes_traces_and_lowest():
    f, z0, _ = linear_problem(batch=3)
    z, st = _solve(f, z0, "anderson", 25, 1e-30)
    assert st["abs_trace"].shape == st["rel_trace"].shape == (3, 25)
    assert st["nstep"].tolist() == [25, 25, 25] and not bool(jnp.any(st["converged"]))
    np.testing.assert_allclose(st["abs_lowest"], jnp.min(st["abs_trace"], axis=1))
    np.testing.assert_allclose(st["rel_lowest"], jnp.min(st["rel_trace"], axis=1))
    # "lowest" returns the iterate whose residual is the lowest: check it directly
    res = jnp.linalg.norm(f(z) - z, axis=1)
    np.testing.assert_allclose(res, st["abs_lowest"], rtol=1e-8)
    assert bool(jnp.all(st["abs_trace"][:, 0] > 10 * st["abs_lowest"]))


def test_per_sample_stopping_freezes_converged_samples():
    # Sample 0 is an easier problem (b scaled down 1e4, so its abs residual is 1e4x smaller at
    # every step): it converges mid-run while the others keep iterating. With the "last" rule the
    # batched solve must return exactly the iterate of a solve truncated at sample 0's step --
    # a loop that kept updating it (or its Anderson history) after convergence would not.
    f, z0, _ = linear_problem(batch=3)
    b = f(z0)  # z0 = 0: the offsets b_i
    b = b.at[0].multiply(1e-4)
    A = jax.jacfwd(lambda z: f(z[None])[0])(jnp.zeros(z0.shape[1]))
    fb = lambda z: z @ A.T + b  # noqa: E731
    solver = get_solver("anderson")
    run = jax.jit(lambda steps, tol, z: solve(fb, z, solver, steps, tol, return_rule="last"),
                  static_argnums=(0, 1))
    z, st = run(200, 1e-6, z0)
    k = int(st["nstep"][0])
    assert 3 <= k and bool(jnp.all(st["nstep"][1:] > k + 3)), st["nstep"]  # mid-run
    z_trunc, st_trunc = run(k, 0.0, z0)  # every sample exactly k steps, no stopping
    assert bool(jnp.all(z[0] == z_trunc[0]))  # bit-identical
    assert not bool(jnp.all(z[1:] == z_trunc[1:]))  # the others went on
    np.testing.assert_array_equal(st["abs_trace"][0, :k], st_trunc["abs_trace"][0])
    assert bool(jnp.all(st["abs_trace"][0, k:] == st["abs_trace"][0, k - 1]))
    # a single-sample solve of sample 0 alone, truncated at its step, gives the same iterate
    z_one, _ = jax.jit(lambda z: solve(lambda y: y @ A.T + b[:1], z, solver, k, 0.0,
                                       return_rule="last"))(z0[:1])
    np.testing.assert_allclose(np.asarray(z[0]), np.asarray(z_one[0]), rtol=1e-12, atol=1e-16)
    # and it did stop there: one more step would have changed the iterate
    z_more, _ = run(k + 1, 0.0, z0)
    assert not bool(jnp.all(z_more[0] == z[0]))
    # a sample that starts at its fixed point takes one evaluation and is never touched
    _, _, z_true = linear_problem(batch=3)
    z0b = z0.at[0].set(jnp.asarray(z_true[0]))
    zz, st0 = jax.jit(lambda z: solve(f, z, solver, 200, 1e-6))(z0b)
    assert int(st0["nstep"][0]) == 1 and bool(jnp.all(zz[0] == z0b[0]))


def test_loop_exits_when_all_converged_and_returns_pytrees():
    f, z0, z_true = linear_problem(batch=2, dim=6, rho=0.5)
    tree = {"h": z0[:, :4].reshape(2, 2, 2), "c": z0[:, 4:]}

    def f_tree(t):
        flat = jnp.concatenate([t["h"].reshape(2, 4), t["c"]], axis=1)
        out = f(flat)
        return {"h": out[:, :4].reshape(2, 2, 2), "c": out[:, 4:]}

    z, st = _solve(f_tree, tree, "broyden", 100, 1e-9)
    assert z["h"].shape == (2, 2, 2) and z["c"].shape == (2, 2)
    np.testing.assert_allclose(np.asarray(z["c"]), z_true[:, 4:], atol=1e-8)
    assert int(st["nstep"].max()) < 100


def test_vmap_of_jit_solve_matches_batched():
    f, z0, _ = linear_problem(batch=4, dim=8)
    A = jax.jacfwd(lambda z: f(z[None])[0])(jnp.zeros(8))
    solver = get_solver("anderson", relative_ridge=True)

    def one(b):  # a single problem with batch 1, vmapped over b
        return solve(lambda z: z @ A.T + b, jnp.zeros((1, 8)), solver, 60, 1e-8)[0][0]

    bs = f(z0)  # = b_i since z0 = 0
    zv = jax.jit(jax.vmap(one))(bs)
    zb, _ = _solve(f, z0, "anderson", 60, 1e-8, relative_ridge=True)
    np.testing.assert_allclose(np.asarray(zv), np.asarray(zb), atol=1e-7)


def test_divergent_map_does_not_crash_and_reports_not_converged():
    # No fixed point: f(z) - z = 1 + z^2 >= 1, also in floating point for huge |z| (a map like
    # z + 1 + 0.5 sin z is not safe: for |z| > 2^24 float32 rounds f(z) to z, a numerical root).
    f = lambda z: z + 1.0 + z * z  # noqa: E731
    for name in ("naive", "anderson", "broyden"):
        z, st = _solve(f, jnp.zeros((2, 5)), name, 30, 1e-6)
        assert not bool(jnp.any(st["converged"])), name
        assert st["abs_trace"].shape == (2, 30)
    f = lambda z: jnp.exp(z) * 1e3  # overflows to inf/nan in a few steps  # noqa: E731
    z, st = _solve(f, jnp.ones((2, 3)), "naive", 40, 1e-6)
    assert not bool(jnp.any(st["converged"])) and int(st["nstep"].max()) < 40
    assert bool(jnp.all(jnp.isfinite(st["abs_lowest"])))


def test_return_rules_last_official_naive_and_lowest_f():
    f, z0, _ = linear_problem(batch=2, dim=8)
    solver = get_solver("naive")
    rules = ("last", "official_naive", "lowest", "lowest_f")
    out = jax.jit(lambda z: {r: solve(f, z, solver, 6, 0.0, return_rule=r)[0] for r in rules})(z0)
    run = lambda rule, steps: out[rule]  # noqa: E731
    picard = [z0]
    for _ in range(6):
        picard.append(f(picard[-1]))
    np.testing.assert_allclose(run("last", 6), picard[5])
    np.testing.assert_allclose(run("official_naive", 6), picard[6])  # f(x) of the last step
    # on a monotone problem lowest = last, and lowest_f = f(lowest)
    np.testing.assert_allclose(run("lowest", 6), picard[5])
    np.testing.assert_allclose(run("lowest_f", 6), picard[6])


def test_official_naive_rejects_a_jump_of_one_or_more():
    # residuals 1, 1.5, 10, 0.5 for iterates 0..3: the jump to 10 (>= 1 above 1.5) is rejected
    seq = jnp.asarray([0.0, 1.0, 2.5, 12.5, 13.0, 13.0])
    def f(z):  # maps seq[i] -> seq[i+1]
        i = jnp.argmin(jnp.abs(seq[None, :] - z[:, :1]), axis=1)
        return seq[jnp.minimum(i + 1, 5)][:, None]
    z, _ = solve(f, jnp.zeros((1, 1)), get_solver("naive"), 4, 0.0, return_rule="official_naive")
    assert float(z[0, 0]) == 13.0  # step 3 (res 0.5) accepted again after rejecting step 2
    z, _ = solve(f, jnp.zeros((1, 1)), get_solver("naive"), 3, 0.0, return_rule="official_naive")
    assert float(z[0, 0]) == 2.5  # f(x) of step 1; step 2's residual 10 was rejected


def test_capture_steps_equal_shorter_solves():
    f, z0, _ = linear_problem(batch=2, dim=8)
    solver = get_solver("anderson")

    @jax.jit
    def run(z0):
        full = solve(f, z0, solver, 12, 1e-30, capture_steps=(4, 8))[1]["states"]
        short = [solve(f, z0, solver, s, 1e-30)[0] for s in (4, 8)]
        z, st = solve(f, z0, solver, 100, 1e-3, capture_steps=(90,))
        return full, short, z, st["states"][0]

    full, short, z, late = run(z0)
    for a, b in zip(full, short):
        np.testing.assert_allclose(a, b)
    # early exit: captures after the exit step hold the final state
    np.testing.assert_allclose(late, z)


@pytest.mark.parametrize("name,unroll", [("broyden", "scan"), ("naive", "python")])
def test_unrolled_matches_while_loop(name, unroll):
    f, z0, _ = linear_problem(batch=2, dim=8)
    solver = get_solver(name)
    z1, s1 = jax.jit(lambda z: solve(f, z, solver, 15, 1e-4))(z0)
    z2, s2 = jax.jit(lambda z: solve(f, z, solver, 15, 1e-4, unroll=unroll))(z0)
    np.testing.assert_allclose(z1, z2)
    np.testing.assert_array_equal(s1["nstep"], s2["nstep"])
    np.testing.assert_allclose(s1["abs_trace"], s2["abs_trace"])


def test_registry_custom_solver_and_errors():
    @register_solver("test_half_step")
    @dataclasses.dataclass(frozen=True)
    class HalfStep:
        def init(self, x0, f):
            return ()

        def update(self, state, x, fx, f):
            return 0.5 * (x + fx), state

    assert "test_half_step" in available_solvers()
    f, z0, z_true = linear_problem(batch=2, dim=8, rho=0.5)
    z, st = _solve(f, z0, "test_half_step", 300, 1e-9)
    np.testing.assert_allclose(np.asarray(z), z_true, atol=1e-7)
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        get_solver("nope")
    with pytest.raises(ValueError, match="bad arguments"):
        get_solver("anderson", history=3)
    with pytest.raises(ValueError, match="stop_mode"):
        solve(f, z0, get_solver("naive"), 5, 1e-3, "max")
    with pytest.raises(ValueError, match="leading batch axis"):
        solve(lambda t: t, {"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}, get_solver("naive"), 5, 1e-3)


def test_anderson_matches_the_official_recursion():
    """numpy re-derivation of deq-flow's Anderson (deq.md): same iterates, step by step."""
    f, z0, _ = linear_problem(batch=2, dim=8)
    m, lam, beta, steps = 3, 1e-4, 0.7, 9
    fn = lambda a: np.asarray(f(jnp.asarray(a)))  # noqa: E731
    X, F = np.zeros((2, m, 8)), np.zeros((2, m, 8))
    X[:, 0], F[:, 0] = np.asarray(z0), fn(z0)
    X[:, 1], F[:, 1] = F[:, 0], fn(F[:, 0])
    iterates = [X[:, 0].copy(), X[:, 1].copy()]
    for k in range(2, steps):
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        H = np.zeros((2, n + 1, n + 1))
        H[:, 0, 1:] = H[:, 1:, 0] = 1
        H[:, 1:, 1:] = G @ G.transpose(0, 2, 1) + lam * np.eye(n)
        alpha = np.linalg.solve(H, np.tile(np.eye(n + 1)[:, :1], (2, 1, 1)))[:, 1:, 0]
        xk = beta * np.einsum("bi,bid->bd", alpha, F[:, :n]) + (1 - beta) * np.einsum(
            "bi,bid->bd", alpha, X[:, :n])
        X[:, k % m], F[:, k % m] = xk, fn(xk)
        iterates.append(xk)
    solver = get_solver("anderson", memory=m, ridge=lam, beta=beta, relative_ridge=False)
    z, st = jax.jit(lambda z: solve(f, z, solver, steps, 0.0, return_rule="last"))(z0)
    np.testing.assert_allclose(np.asarray(z), iterates[-1], rtol=1e-9, atol=1e-12)
    res = np.linalg.norm(np.stack([fn(x) - x for x in iterates], 1), axis=2)
    np.testing.assert_allclose(np.asarray(st["abs_trace"]), res, rtol=1e-9)


@pytest.mark.parametrize("memory", [30, 3])
def test_broyden_matches_dense_good_broyden(memory):
    """Dense re-derivation: J^-1 starts at -I, good-Broyden rank-1 updates, reset when full."""
    f, z0, _ = linear_problem(batch=1, dim=6, rho=0.9)
    fn = lambda a: np.asarray(f(jnp.asarray(a[None])))[0]  # noqa: E731
    x, jinv, steps = np.asarray(z0[0]), -np.eye(6), 8
    g = fn(x) - x
    iterates = [x]
    for k in range(1, steps):
        x_new = x - jinv @ g
        g_new = fn(x_new) - x_new
        if (k - 1) % memory == 0:  # buffers full (or first update): back to -I
            jinv = -np.eye(6)
        dx, dg = x_new - x, g_new - g
        vt = dx @ jinv
        jinv = jinv + np.outer(dx - jinv @ dg, vt) / (vt @ dg)
        x, g = x_new, g_new
        iterates.append(x)
    # the loop's k-th update consumes (x_k, g_k) and proposes x_{k+1}; the last one is evaluated
    solver = get_solver("broyden", memory=memory)
    z, st = jax.jit(lambda z: solve(f, z, solver, steps, 0.0, return_rule="last"))(z0)
    np.testing.assert_allclose(np.asarray(z)[0], iterates[-1], rtol=1e-9, atol=1e-12)
