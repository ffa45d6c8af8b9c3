"""DIP: the official float64 output on a small golden case, the warm-start path, training outputs,
conversion of official-layout checkpoints, bad input.

``tests/data/dip_golden.npz`` was recorded by running the official zihuazheng/DIP ``nets/`` in
float64 (torch 2.13, CPU) on ``dip_official.official_dip_state_dict(0)`` and
``dip_official.make_pair(64, 160)`` (see the file's ``note``); jflow runs the same weights in
float32 here.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from dip_official import official_dip_state_dict, make_init_flow, make_pair
from jflow import convert
from jflow.models import build_model, input_padding, model_from_config, variable_shapes
from jflow.models.dip import DIP, inverse_propagation, local_search, pyramid_levels
from jflow.models.torch_noise import torch_rand
from jflow.torch_pickle import save_torch_state_dict

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "dip_golden.npz")
TOL = 1e-3  # px, max over the image (the bound vs the official float64 run)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def dip():
    model = build_model(mlc.ConfigDict({"name": "dip"}))
    variables = convert.torch_to_flax(official_dip_state_dict(0), variable_shapes(model))
    variables = {"params": variables["params"]}
    compiled = {}

    def run(v, a, b, f):
        """Compiled once per warm/cold signature; XLA:CPU's fast-compile options (as
        test_fidelity) halve the compile time, same flow within float32 rounding."""
        key = f is None
        if key not in compiled:
            fn = jax.jit(lambda v, a, b, f: model.apply(v, a, b, iters=1, flow_init=f))
            compiled[key] = fn.lower(v, a, b, f).compile(compiler_options=FAST_COMPILE)
        return compiled[key](v, a, b, f)
    return model, variables, run


@pytest.fixture(scope="module")
def pair():
    im1, im2 = make_pair(64, 160)
    # the official run was fed these arrays as BGR; jflow takes RGB and flips it back
    return jnp.asarray(im1[None, ..., ::-1].copy()), jnp.asarray(im2[None, ..., ::-1].copy())


def test_matches_official_float64_cold_and_warm(dip, pair):
    _, variables, run = dip
    golden = np.load(GOLDEN)
    flow = np.asarray(run(variables, *pair, None)["flow"][0])
    assert np.abs(flow - golden["flow"]).max() < TOL
    # inference(): max |init| 50 -> ceil(50 / 32) = 2 pyramid levels (1/8 then 1/4)
    init = jnp.asarray(make_init_flow(64, 160, 50.0)[None])
    out = run(variables, *pair, init)
    assert np.abs(np.asarray(out["flow"][0]) - golden["warm_50"]).max() < TOL
    assert out["flow_low"].shape == (1, 16, 40, 2) and out["state"].shape == (1, 64, 160, 2)
    # the warm start really is used: a different init gives a different flow
    assert np.abs(np.asarray(run(variables, *pair, 0 * init)["flow"]) - golden["warm_50"]).max() > 1


def test_training_outputs_and_noise_options(dip, pair):
    model, variables, _ = dip
    im1, im2 = pair[0][:, :64, :96], pair[1][:, :64, :96]
    out = jax.eval_shape(lambda v, a, b: model.apply(
        v, a, b, train=True, iters=2, rngs={"noise": jax.random.PRNGKey(1)}), variables, im1, im2)
    assert out["predictions"].shape == (8, 1, 64, 96, 2)  # 4 x iters: 1/16 then 1/4 stage
    assert out["flow_low"].shape == (1, 16, 24, 2)

    def uniform(noise, train, key):
        return DIP(noise=noise).apply({}, (2, 3, 5, 2), train, method=DIP._uniform,
                                      rngs={"noise": jax.random.PRNGKey(key)})
    torch_order = np.transpose(torch_rand(20, (2, 2, 3, 5)), (0, 2, 3, 1))  # NCHW draw order
    np.testing.assert_array_equal(uniform("torch", False, 0), torch_order)
    np.testing.assert_array_equal(uniform("jax", False, 0), uniform("torch", True, 0))
    assert not np.array_equal(uniform("jax", False, 0), uniform("jax", False, 1))
    assert not np.array_equal(uniform("torch", True, 0), torch_order)  # training: JAX key


@pytest.mark.slow  # compiling the training step: ~40-60 s of CPU
def test_smoke_config_trains_and_evaluates(tmp_path):
    from configs import dip as dip_config
    from jflow import train

    c = dip_config.get_config("smoke")
    c.train.num_steps, c.train.ckpt_every = 2, 2
    s = train.train_and_evaluate(c, str(tmp_path))
    assert s["step"] == 2 and c.model.name == "dip"
    with open(os.path.join(s["workdir"], "validation.json")) as f:
        history = json.load(f)
    assert [h["step"] for h in history] == [0, 2]
    assert np.isfinite(history[-1]["synthetic"]["epe"])
    assert all(np.isfinite(r["loss"]) for r in train.read_train_log(s["workdir"]))


def test_padding_contract_and_bad_input(dip, pair):
    model, variables, _ = dip
    assert input_padding(model) == (16, "zeros") and not DIP.zero_init_is_cold_start
    with pytest.raises(ValueError, match="multiples of 16"):
        model.apply(variables, pair[0][:, :56], pair[1][:, :56], iters=1)
    with pytest.raises(ValueError, match="full-resolution"):
        model.apply(variables, *pair, iters=1, flow_init=jnp.zeros((1, 16, 40, 2)))
    assert pyramid_levels(16, 40) == 2 and pyramid_levels(16, 24) == 1
    assert pyramid_levels(64, 80) == 3 and pyramid_levels(272, 480) == 3


def test_inverse_propagation_channel_layout():
    """Against a direct numpy transcription of the official views (N, 128, 2, 5, H, W) at zero
    flow away from the border (the warp is then the identity)."""
    rng = np.random.default_rng(3)
    f1 = rng.standard_normal((1, 6, 7, 256)).astype(np.float32)
    f2 = rng.standard_normal((1, 6, 7, 256)).astype(np.float32)
    got = np.asarray(inverse_propagation(f1, f2, jnp.zeros((1, 6, 7, 2))))
    p = np.pad(f2, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    shifted = [p[:, 1 + dy:7 + dy, 1 + dx:8 + dx] for dx, dy in
               ((0, 0), (-1, -1), (1, -1), (-1, 1), (1, 1))]
    s2 = np.concatenate(shifted, -1).transpose(0, 3, 1, 2)  # NCHW, 1280 channels
    view = s2.reshape(1, 128, 2, 5, 6, 7) * f1.transpose(0, 3, 1, 2).reshape(1, 128, 2, 1, 6, 7)
    want = view.mean(1).reshape(1, 10, 6, 7).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_local_search_channel_layout_and_edge_padding():
    """Against ``mean_c(F1 * window)`` over the replicate-padded map at zero flow, channel
    ``(ox + 2) * 5 + (oy + 2)``; width 37 spans several row tiles."""
    rng = np.random.default_rng(4)
    f1, f2 = rng.standard_normal((2, 1, 5, 37, 8)).astype(np.float32)
    got = np.asarray(local_search(jnp.asarray(f1), jnp.asarray(f2), jnp.zeros((1, 5, 37, 2))))
    p = np.pad(f2, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    want = np.stack([np.mean(f1 * p[:, 2 + oy:7 + oy, 2 + ox:39 + ox], -1)
                     for ox in range(-2, 3) for oy in range(-2, 3)], -1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_convert_official_checkpoint_and_wrong_model(tmp_path):
    from configs import dip as dip_config
    from test_convert import official_raft_state_dict

    sd = official_dip_state_dict(0)
    assert all(k.startswith("module.") for k in sd)
    pth = tmp_path / "DIP_things.pth"
    save_torch_state_dict(sd, pth)
    cfg = dip_config.get_config()
    step_dir = convert.convert_checkpoint(cfg, pth, tmp_path / "out")
    from jflow.checkpoint import load_params
    params = load_params(step_dir)["params"]
    np.testing.assert_array_equal(
        params["fnet"]["layer2_0"]["downsample_0"]["kernel"],
        sd["module.fnet.layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))

    save_torch_state_dict(official_raft_state_dict(0), tmp_path / "raft.pth")
    with pytest.raises(convert.ConversionError) as e:
        convert.convert_checkpoint(cfg, tmp_path / "raft.pth", tmp_path / "bad")
    msg = str(e.value)
    assert "model variables with no tensor" in msg and "update_block_s/gru/convz/kernel" in msg
    assert "checkpoint tensors the model has no variable for" in msg and "cnet." in msg
    assert not (tmp_path / "bad").exists()


def test_config_is_raft_recipe_with_demo_evaluation():
    from configs import dip as dip_config
    from jflow import recipes, train

    c = dip_config.get_config("stage=things")
    s = recipes.RAFT_STAGES["things"]
    assert (c.train.num_steps, c.train.batch_size, c.train.lr, tuple(c.data.crop)) == (
        s.steps, s.batch, s.lr, s.crop)
    assert c.model.eval_iters == 20 and set(c.eval.iters.values()) == {20}
    assert c.model.channel_order == "bgr"
    assert dip_config.get_config("rgb,smoke").model.channel_order == "rgb"
    model = model_from_config(c)
    assert isinstance(model, DIP) and (model.max_offset, model.noise) == (256, "torch")
    # demo.py: 20 iterations from a cold start, 12 when warm-started; training 6; explicit wins
    assert [model.iterations(False, False), model.iterations(False, True),
            model.iterations(True, True), model.iterations(False, True, 3)] == [20, 12, 6, 3]
    c.seed = 7  # the training noise stream follows the run's seed
    assert train.OptimSpec.from_config(c).seed == 7
    w = np.asarray(train.loss_weights(train.OptimSpec.from_config(c), 4 * c.model.iters))
    assert len(w) == 24 and w[-1] == 1 and np.isclose(w[0], 0.8 ** 23)  # all 4 x iters
