"""DEQConfig, deq_fixed_point in train/eval mode, correction cores and weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deq_problems import tanh_map, tanh_params
from jflow.deq import (DEQConfig, correction_weights, deq_fixed_point, from_config, get_solver,
                       indexing_positions, phantom_steps, segment_lengths, solve, summarize)

B, D = 2, 6


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_config_is_hashable_frozen_and_accepts_dict_kwargs():
    a = DEQConfig(solver_kwargs={"memory": 5, "ridge": 1e-3})
    b = DEQConfig(solver_kwargs=(("ridge", 1e-3), ("memory", 5)))
    assert a == b and hash(a) == hash(b) and a.solver_kwargs == (("memory", 5), ("ridge", 1e-3))
    with pytest.raises(AttributeError):
        a.solver = "naive"
    assert a.replace(f_max_steps=60).f_max_steps == 60
    d = DEQConfig()
    assert (d.f_max_steps, d.f_tol, d.f_stop_mode, d.grad, d.phantom_steps, d.core) == (
        40, 1e-3, "rel", "phantom", 1, "sliced")
    # jflow's defaults: Anderson with the scale-free (relative) ridge, forward and backward
    assert get_solver(d.solver, **dict(d.solver_kwargs)) == get_solver(
        "anderson", memory=6, ridge=1e-4, relative_ridge=True)
    assert get_solver(d.b_solver, **dict(d.b_solver_kwargs)).relative_ridge


def test_config_validation_and_from_config():
    import ml_collections

    cd = ml_collections.ConfigDict({"solver": "naive", "solver_kwargs": {"tau": 0.5},
                                    "return_rule": "official_naive", "n_states": 2})
    cfg = from_config(cd)
    assert cfg.solver == "naive" and cfg.solver_kwargs == (("tau", 0.5),) and cfg.n_states == 2
    with pytest.raises(ValueError, match="unknown keys \\['f_thres'\\]"):
        from_config({"f_thres": 40})
    with pytest.raises(ValueError, match="DEQConfig.grad"):
        DEQConfig(grad="backprop")
    with pytest.raises(ValueError, match="DEQConfig.n_states"):
        DEQConfig(n_states=5, f_max_steps=4)


def test_solver_spec_strings_set_options(problem):
    """``--config.deq.solver=anderson:beta=3.0,memory=8`` carries options from a command line."""
    import ml_collections

    from jflow.deq import parse_solver_spec

    assert parse_solver_spec("anderson: beta=3.0, memory=8,relative_ridge=false,safe") == (
        "anderson", {"beta": 3.0, "memory": 8, "relative_ridge": False, "safe": True})
    assert parse_solver_spec("broyden") == ("broyden", {})
    cfg = from_config(ml_collections.ConfigDict({
        "solver": "anderson:beta=3.0,memory=8", "solver_kwargs": {"memory": 4, "ridge": 1e-3},
        "b_solver": "naive:tau=0.5"}))
    assert cfg.solver == "anderson" and dict(cfg.solver_kwargs) == {
        "beta": 3.0, "memory": 8, "ridge": 1e-3}  # the spec overrides solver_kwargs' keys
    assert cfg.b_solver == "naive" and cfg.b_solver_kwargs == (("tau", 0.5),)
    assert cfg == cfg.replace() and cfg.replace(f_max_steps=9).solver_kwargs == cfg.solver_kwargs
    # the options reach the solver: the same solve as with explicit kwargs, not the default one
    params, x = problem
    run = lambda c: deq_fixed_point(tanh_map, params, x, jnp.zeros_like(x),  # noqa: E731
                                    c.replace(f_max_steps=6, f_tol=0.0), train=False)[0][0]
    explicit = DEQConfig(solver="anderson", solver_kwargs={"beta": 3.0, "memory": 8,
                                                           "ridge": 1e-3})
    np.testing.assert_array_equal(run(cfg), run(explicit))
    assert not np.allclose(run(cfg), run(DEQConfig(solver="anderson")))
    for bad in ("anderson:=3", "anderson:beta="):
        with pytest.raises(ValueError, match="solver spec"):
            DEQConfig(solver=bad)
    with pytest.raises(ValueError, match="bad arguments .*gamma"):  # at configuration time
        DEQConfig(solver="anderson:gamma=2")
    with pytest.raises(ValueError, match="bad arguments .*beta"):
        DEQConfig(b_solver="naive", b_solver_kwargs={"beta": 2.0})


def test_correction_helpers():
    assert segment_lengths(24, 2) == [12, 12] and segment_lengths(40, 6) == [6, 6, 7, 7, 7, 7]
    assert indexing_positions(24, 2) == [12, 24] and indexing_positions(36, 6)[0] == 6
    np.testing.assert_allclose(correction_weights(3, 0.8), [0.64, 0.8, 1.0], rtol=1e-6)
    np.testing.assert_allclose(correction_weights(4, kind="linear"), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(correction_weights(2, kind="const"), [1.0, 1.0])
    with pytest.raises(ValueError, match="kind"):
        correction_weights(2, kind="cosine")


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        rng = np.random.RandomState(3)
        # a slowly contracting map so that the states differ visibly between steps
        return tanh_params(D, scale=0.95), jnp.asarray(rng.randn(B, D))


def test_eval_returns_one_state_and_stats(problem):
    params, x = problem
    cfg = DEQConfig(solver="naive", f_max_steps=7, f_tol=0.0)
    states, st = jax.jit(lambda p, xx: deq_fixed_point(tanh_map, p, xx, jnp.zeros_like(xx), cfg,
                                                       train=False))(params, x)
    assert len(states) == 1 and states[0].shape == (B, D)
    assert st["nstep"].tolist() == [7, 7] and st["abs_trace"].shape == (B, 7)
    z = jnp.zeros_like(x)
    for _ in range(6):
        z = tanh_map(params, z, x)
    np.testing.assert_allclose(states[0], z)  # lowest residual = last on this monotone problem
    states, st = deq_fixed_point(tanh_map, params, x, jnp.zeros_like(x), cfg, train=False, max_steps=3)
    assert st["abs_trace"].shape == (B, 3)


def test_sliced_core_semantics(problem):
    params, x = problem
    cfg = DEQConfig(solver="anderson", f_max_steps=8, f_tol=0.0, n_states=2, core="sliced",
                    phantom_steps=2, tau=0.5)
    solver = get_solver("anderson")

    @jax.jit
    def run(params, x):
        states, st = deq_fixed_point(tanh_map, params, x, jnp.zeros_like(x), cfg, train=True)
        f = lambda z: tanh_map(params, z, x)  # noqa: E731
        z1 = phantom_steps(tanh_map, params, x, solve(f, jnp.zeros_like(x), solver, 4, 0.0)[0], 2, 0.5)
        z2 = phantom_steps(tanh_map, params, x, solve(f, z1, solver, 4, 0.0)[0], 2, 0.5)
        return states, st, z1, z2

    states, st, z1, z2 = run(params, x)
    assert len(states) == 2
    np.testing.assert_allclose(states[0], z1, rtol=1e-12)
    np.testing.assert_allclose(states[1], z2, rtol=1e-12)
    assert st["abs_trace"].shape == (B, 8) and st["nstep"].tolist() == [8, 8]
    assert st["lowest_step"].min() > 4  # counted from the first segment
    summary = summarize(st)
    assert summary["nstep"] == 8.0 and summary["abs_final"] == float(jnp.mean(st["abs_trace"][:, -1]))


def test_indexing_core_semantics(problem):
    params, x = problem
    cfg = DEQConfig(solver="naive", f_max_steps=9, f_tol=0.0, n_states=3, core="indexing",
                    grad="ift")
    states, st = deq_fixed_point(tanh_map, params, x, jnp.zeros_like(x), cfg, train=True)
    f = lambda z: tanh_map(params, z, x)  # noqa: E731
    picard = [jnp.zeros_like(x)]
    for _ in range(9):
        picard.append(f(picard[-1]))
    # captured at steps 3, 6, 9 (iterates 2, 5, 8), then one phantom/IFT step each
    for s, i in zip(states, (2, 5, 8)):
        np.testing.assert_allclose(s, picard[i + 1], rtol=1e-12)
    assert st["abs_trace"].shape == (B, 9) and "states" not in st


def test_unrolled_train_and_grad_flow_to_z0(problem):
    params, x = problem
    cfg = DEQConfig(solver="naive", f_max_steps=5, f_tol=0.0, grad="unrolled", n_states=1)
    g = jax.grad(lambda z0: jnp.sum(deq_fixed_point(tanh_map, params, x, z0, cfg, train=True)[0][-1]))(
        jnp.zeros_like(x))
    assert float(jnp.abs(g).max()) > 0  # the unrolled baseline differentiates through z0 too
    cfg = cfg.replace(grad="phantom")
    g = jax.grad(lambda z0: jnp.sum(deq_fixed_point(tanh_map, params, x, z0, cfg, train=True)[0][-1]))(
        jnp.zeros_like(x))
    assert float(jnp.abs(g).max()) == 0
