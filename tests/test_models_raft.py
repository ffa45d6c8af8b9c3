"""RAFT, RAFT-small and GMA: output contract, recurrence, warm start, correlation kinds."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import geometry
from jflow.models import build_model, random_variables

H, W = 64, 64
ZERO = jnp.zeros((2, H // 8, W // 8, 2))


@functools.lru_cache(maxsize=None)
def model_and_vars(name, **cfg):
    model = build_model({"name": name, **cfg})
    return model, random_variables(model, seed=0)


@functools.lru_cache(maxsize=None)
def jitted(name, train=False, **cfg):
    """One compiled apply per configuration (iters=2, flow_init always passed)."""
    model, _ = model_and_vars(name, **cfg)

    def run(v, a, b, flow_init):
        if train:
            return model.apply(v, a, b, train=True, iters=2, flow_init=flow_init,
                               mutable=["batch_stats"])[0]
        return model.apply(v, a, b, iters=2, flow_init=flow_init)

    return jax.jit(run)


@pytest.mark.parametrize("name", ["raft", "raft_small", "gma"])
def test_eval_outputs_contract(name, images):
    _, v = model_and_vars(name)
    out = jitted(name)(v, *images, ZERO)
    assert out["flow"].shape == (2, H, W, 2)
    assert out["flow_low"].shape == (2, H // 8, W // 8, 2)
    assert out["state"].shape == (2, H // 8, W // 8, 2) and out["stats"] == {}
    assert "predictions" not in out
    assert bool(jnp.all(jnp.isfinite(out["flow"])))
    assert float(jnp.max(jnp.abs(out["flow_low"]))) > 0  # the update did something


def test_train_returns_every_iteration(images):
    _, v = model_and_vars("raft_small")
    out = jitted("raft_small", train=True)(v, *images, ZERO)
    preds = out["predictions"]
    assert preds.shape == (2, 2, H, W, 2)
    np.testing.assert_array_equal(np.asarray(preds[-1]), np.asarray(out["flow"]))
    assert float(jnp.max(jnp.abs(preds[0] - preds[1]))) > 0


def test_flow_init_shifts_coordinates(images):
    _, v = model_and_vars("raft_small")
    p = v["params"]["update_block"]
    head = {k: jnp.zeros_like(a) for k, a in p["flow_head"]["conv2"].items()}  # delta = 0
    params = {**v["params"], "update_block": {
        **p, "flow_head": {**p["flow_head"], "conv2": head}}}
    init = jnp.asarray(np.random.default_rng(1).normal(size=ZERO.shape), jnp.float32)
    out = jitted("raft_small")({**v, "params": params}, *images, init)
    np.testing.assert_allclose(np.asarray(out["flow_low"]), np.asarray(init), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["flow"]), np.asarray(geometry.upflow(init, 8)),
                               atol=1e-4)
    moved = jitted("raft_small")(v, *images, init)["flow_low"]
    still = jitted("raft_small")(v, *images, ZERO)["flow_low"]
    assert float(jnp.max(jnp.abs((moved - init) - still))) > 1e-4  # corr looked up elsewhere


def test_on_the_fly_model_equals_all_pairs(images):
    _, v = model_and_vars("raft_small")
    a = jitted("raft_small")(v, *images, ZERO)["flow"]
    b = jitted("raft_small", corr="on_the_fly")(v, *images, ZERO)["flow"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)


def test_coordinates_detached_between_iterations(images):
    model, v = model_and_vars("raft_small")

    def low(flow_init):
        return jnp.sum(model.apply(v, *images, iters=2, flow_init=flow_init)["flow_low"])

    g = jax.jit(jax.grad(low))(ZERO)
    assert float(jnp.max(jnp.abs(g))) == 0.0  # every iteration starts from stop_gradient(coords1)


def test_bad_inputs_raise(images):
    model, v = model_and_vars("raft_small")
    with pytest.raises(ValueError, match="multiples of 8"):
        jax.eval_shape(lambda a, b: model.apply(v, a, b), images[0][:, :60], images[1][:, :60])
    with pytest.raises(ValueError, match="image2 shape"):
        jax.eval_shape(lambda a, b: model.apply(v, a, b), images[0], images[1][:1])
    with pytest.raises(ValueError, match="flow_init must have shape"):
        jax.eval_shape(lambda a, b: model.apply(v, a, b, flow_init=jnp.zeros((2, 4, 4, 2))),
                       *images)


@pytest.mark.parametrize("name", ["gma", "deq_raft"])
def test_mixed_precision_convs_in_bfloat16_corr_and_outputs_float32(name, images):
    model = build_model({"name": name, "size": "T", "mixed_precision": True}, {"f_max_steps": 2})
    v = jax.eval_shape(lambda a: model.init(jax.random.PRNGKey(0), a, a, iters=1), images[0])
    jaxpr = str(jax.make_jaxpr(lambda v, a, b: model.apply(v, a, b, iters=1))(v, *images))
    convs = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert convs and all("bf16" in line for line in convs)
    dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert any("f32[2,8,8,8,8]" in line for line in dots)  # the all-pairs volume is float32
    out = jax.eval_shape(lambda v, a, b: model.apply(v, a, b, iters=1), v, *images)
    assert out["flow"].dtype == jnp.float32 and out["flow_low"].dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(v["params"]))


@pytest.mark.parametrize("corr,mixed", [("all_pairs", False), ("on_the_fly", False),
                                        ("on_the_fly", True)])
def test_inference_loop_forms_agree(corr, mixed, images):
    """"loop" (all but the last iteration in one loop body) and "unrolled" give the same flow
    and the same gradients (mixed precision too: bfloat16 hidden state after the first
    iteration); "auto" loops for on-the-fly correlation only."""
    model, v = model_and_vars("raft_small", corr=corr, mixed_precision=mixed)

    def flow(form):
        m = model.clone(inference_loop=form)
        return lambda p, a, b: m.apply({**v, "params": p}, a, b, iters=4)["flow"]

    convs = {form: str(jax.make_jaxpr(flow(form))(v["params"], *images)).count("conv_general")
             for form in ("loop", "unrolled", "auto")}
    assert convs["loop"] < convs["unrolled"]  # the loop body holds one iteration's convs
    assert convs["auto"] == convs["loop" if corr == "on_the_fly" else "unrolled"]
    got = {form: jax.jit(flow(form))(v["params"], *images) for form in ("loop", "unrolled")}
    np.testing.assert_allclose(np.asarray(got["loop"]), np.asarray(got["unrolled"]), atol=1e-5)
    grads = {form: jax.jit(jax.grad(lambda p, a, b, f=flow(form): jnp.sum(f(p, a, b) ** 2)))(
        v["params"], *images) for form in ("loop", "unrolled")}
    gw, gu = (jax.tree_util.tree_leaves(grads[k]) for k in ("loop", "unrolled"))
    scale = max(float(jnp.max(jnp.abs(b))) for b in gu)  # (biases before instance norm: noise)
    assert scale > 0
    tol = 1e-3 if mixed else 1e-5  # bfloat16 backward passes round where XLA fuses
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(gw, gu)) < tol * scale


def test_inference_loop_checked(images):
    model, v = model_and_vars("raft_small")
    with pytest.raises(ValueError, match="inference_loop must be one of"):
        jax.eval_shape(lambda a, b: model.clone(inference_loop="scan").apply(v, a, b), *images)
