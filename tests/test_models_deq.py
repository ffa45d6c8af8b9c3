"""DEQ-RAFT / DEQ-GMA: output contract, solver options wired from config, reuse, batching."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.models import build_model, random_variables
from jflow.models.corr import build_corr

H, W = 64, 64
DEQ = {"solver": "naive", "f_max_steps": 4, "f_tol": 0.0, "n_states": 2}


@functools.lru_cache(maxsize=None)
def model_and_vars(name="deq_raft", deq=tuple(DEQ.items()), **cfg):
    model = build_model({"name": name, "size": "T", **cfg}, dict(deq))
    return model, random_variables(model, seed=0)


@pytest.fixture(scope="module")
def evaluate():
    model, _ = model_and_vars()
    return jax.jit(lambda v, a, b, s: model.apply(v, a, b, iters=3, state_init=s))


@pytest.fixture(scope="module")
def eval_out(images, evaluate):
    _, v = model_and_vars()
    return evaluate(v, *images, None)


def test_eval_outputs_contract(eval_out):
    out = eval_out
    assert out["flow"].shape == (2, H, W, 2) and out["flow_low"].shape == (2, 8, 8, 2)
    assert out["state"]["h"].shape == (2, 8, 8, 32)
    np.testing.assert_array_equal(np.asarray(out["state"]["flow"]), np.asarray(out["flow_low"]))
    assert "predictions" not in out
    np.testing.assert_array_equal(np.asarray(out["stats"]["nstep"]), [3, 3])  # iters=3, tol 0
    assert out["stats"]["abs_trace"].shape == (2, 3)
    assert bool(jnp.all(jnp.isfinite(out["flow"])))


@pytest.fixture(scope="module")
def train_out_and_grad(images):
    """One compile: train-mode outputs and the gradient w.r.t. the update block's params."""
    model, v = model_and_vars()

    def loss(p_ub):
        params = {**v["params"], "update_block": p_ub}
        out, _ = model.apply({**v, "params": params}, *images, train=True,
                             mutable=["batch_stats"])
        return jnp.mean(out["predictions"] ** 2), out

    (_, out), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"]["update_block"])
    return out, g


def test_train_returns_n_states_predictions_and_stats(train_out_and_grad):
    out, _ = train_out_and_grad
    assert out["predictions"].shape == (2, 2, H, W, 2)  # n_states = 2
    np.testing.assert_array_equal(np.asarray(out["predictions"][-1]), np.asarray(out["flow"]))
    assert float(jnp.max(jnp.abs(out["predictions"][0] - out["predictions"][1]))) > 0
    assert out["stats"]["nstep"].shape == (2,)


def test_gradient_reaches_update_block(train_out_and_grad):
    _, g = train_out_and_grad
    assert float(jnp.max(jnp.abs(g["gru"]["convz1"]["kernel_v"]))) > 0
    assert float(jnp.max(jnp.abs(g["flow_head"]["conv2"]["bias"]))) > 0


def stats_shapes(deq, images, **cfg):
    model, v = model_and_vars(deq=tuple(deq.items()), **cfg)
    return jax.eval_shape(lambda a, b: model.apply(v, a, b, train=True,
                                                   mutable=["batch_stats"])[0], *images)


def test_config_options_reach_the_solver(images):
    model, v = model_and_vars()
    assert model.eval_iters == 6  # int(1.5 * f_max_steps)
    out = jax.eval_shape(lambda a, b: model.apply(v, a, b), *images)
    assert out["stats"]["abs_trace"].shape == (2, 6)
    three = stats_shapes({**DEQ, "n_states": 3, "f_max_steps": 6, "core": "indexing"}, images)
    assert three["predictions"].shape == (3, 2, H, W, 2)
    with pytest.raises(Exception, match="no_such_solver"):
        stats_shapes({**DEQ, "solver": "no_such_solver"}, images)
    with pytest.raises(ValueError, match="grad"):
        stats_shapes({**DEQ, "grad": "magic"}, images)


def test_tolerance_reaches_the_solver(images):
    _, v = model_and_vars()
    loose = model_and_vars(deq=tuple({**DEQ, "f_tol": 1e9}.items()))[0]
    out = jax.jit(lambda v, a, b: loose.apply(v, a, b, iters=3))(v, *images)
    np.testing.assert_array_equal(np.asarray(out["stats"]["nstep"]), [1, 1])


def test_fixed_point_reuse_starts_closer(images, evaluate, eval_out):
    _, v = model_and_vars()
    again = evaluate(v, *images, eval_out["state"])
    first = np.asarray(eval_out["stats"]["abs_trace"][:, 0])
    reused = np.asarray(again["stats"]["abs_trace"][:, 0])
    assert np.all(reused < first)


def test_batch_of_two_equals_two_singles(images, evaluate, eval_out):
    _, v = model_and_vars()
    for i in range(2):
        one = evaluate(v, images[0][i:i + 1], images[1][i:i + 1], None)
        np.testing.assert_allclose(np.asarray(one["flow"][0]), np.asarray(eval_out["flow"][i]),
                                   rtol=1e-4, atol=1e-4)


def test_deq_gma_runs(images):
    model, v = model_and_vars("deq_gma")
    out = jax.jit(lambda v, a, b: model.apply(v, a, b, iters=2))(v, *images)
    assert out["flow"].shape == (2, H, W, 2) and bool(jnp.all(jnp.isfinite(out["flow"])))


@pytest.mark.parametrize("all_grad", [False, True])
def test_coords_detached_inside_f_unless_all_grad(all_grad):
    model, v = model_and_vars(all_grad=all_grad)
    p = v["params"]["update_block"]
    rng = np.random.default_rng(0)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(8.0), jnp.arange(8.0), indexing="xy"), -1)[None]
    f1, f2 = (jnp.asarray(rng.normal(size=(1, 8, 8, 64)), jnp.float32) for _ in range(2))
    x = {"inp": jnp.ones((1, 8, 8, 32)), "corr": build_corr(f1, f2), "coords0": grid}

    def out_coords(c):
        z = {"h": jnp.zeros((1, 8, 8, 32)), "coords1": c}
        return jnp.sum(model._step(p, z, x)["coords1"])

    g = jax.jit(jax.grad(out_coords))(grid + 0.5)
    assert (float(jnp.max(jnp.abs(g))) > 0) == all_grad



def test_size_d_eval_contract(images):
    model, v = model_and_vars(size="D")
    a, b = images[0][:1], images[1][:1]
    out = jax.jit(lambda v, a, b: model.apply(v, a, b, iters=2))(v, a, b)
    assert out["flow"].shape == (1, H, W, 2) and out["flow_low"].shape == (1, 8, 8, 2)
    assert out["state"]["h"].shape == (1, 8, 8, 128)  # B widths
    np.testing.assert_array_equal(np.asarray(out["stats"]["nstep"]), [2])
    assert bool(jnp.all(jnp.isfinite(out["flow"])))
    assert float(jnp.max(jnp.abs(out["flow"]))) > 0


def test_dilated_gru_is_one_step_with_summed_projections():
    """ConvGRU('dilated') == a GRU step whose gates add 1x5, 5x1 and 3x3-dilation-4 convs."""
    from jflow.models.update import ConvGRU
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(1, 11, 13, 4)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(1, 11, 13, 3)), jnp.float32)
    gru = ConvGRU(4, "dilated")
    p = gru.init(jax.random.PRNGKey(0), h, x)["params"]
    shapes = {"1": ((0, 2), 1), "2": ((2, 0), 1), "3": ((4, 4), 4)}

    def proj(gate, t):
        total = 0.0
        for s, ((ph, pw), d) in shapes.items():
            w = p[f"{gate}{s}"]
            total = total + jax.lax.conv_general_dilated(
                t, w["kernel"], (1, 1), ((ph, ph), (pw, pw)), rhs_dilation=(d, d),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=jax.lax.Precision.HIGHEST) + w["bias"]
        return total

    hx = jnp.concatenate([h, x], -1)
    z, r = jax.nn.sigmoid(proj("convz", hx)), jax.nn.sigmoid(proj("convr", hx))
    q = jnp.tanh(proj("convq", jnp.concatenate([r * h, x], -1)))
    want = (1 - z) * h + z * q
    np.testing.assert_allclose(np.asarray(gru.apply({"params": p}, h, x)), np.asarray(want),
                               rtol=1e-4, atol=1e-5)
    assert set(p) == {f"{g}{s}" for g in ("convz", "convr", "convq") for s in "123"}
