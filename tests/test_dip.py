"""DIP: the official float64 output on a small golden case, the warm-start path, training outputs,
conversion of official-layout checkpoints, bad input.

``tests/data/dip_golden.npz`` was recorded by running the official zihuazheng/DIP ``nets/`` in
float64 (torch 2.13, CPU) on ``dip_official.official_dip_state_dict(0)`` and
``dip_official.make_pair(64, 160)`` (see the file's ``note``); jflow runs the same weights in
float32 here.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from dip_official import official_dip_state_dict, make_init_flow, make_pair
from jflow import convert
from jflow.models import build_model, input_padding, variable_shapes
from jflow.models.dip import DIP, inverse_propagation, pyramid_levels
from jflow.torch_pickle import save_torch_state_dict

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "dip_golden.npz")
TOL = 1e-3  # px, max over the image (the bound vs the official float64 run)


@pytest.fixture(scope="module")
def dip():
    model = build_model(mlc.ConfigDict({"name": "dip"}))
    variables = convert.torch_to_flax(official_dip_state_dict(0), variable_shapes(model))
    run = jax.jit(lambda v, a, b, f: model.apply(v, a, b, iters=1, flow_init=f))
    return model, {"params": variables["params"]}, run


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
    model, variables, run = dip
    im1, im2 = pair[0][:, :64, :96], pair[1][:, :64, :96]
    out = model.apply(variables, im1, im2, train=True, iters=1,
                      rngs={"noise": jax.random.PRNGKey(1)})
    assert out["predictions"].shape == (4, 1, 64, 96, 2)  # 4 x iters
    np.testing.assert_array_equal(out["predictions"][-1], out["flow"])
    evaluated = model.apply(variables, im1, im2, iters=1)["flow"]
    jax_noise = model.clone(noise="jax").apply(variables, im1, im2, iters=1,
                                               rngs={"noise": jax.random.PRNGKey(1)})["flow"]
    assert np.abs(np.asarray(jax_noise) - np.asarray(out["flow"])).max() < 1e-4  # same key
    assert np.abs(np.asarray(jax_noise) - np.asarray(evaluated)).max() > 1e-3
    rgb = model.clone(channel_order="rgb").apply(variables, im1, im2, iters=1)["flow"]
    assert np.abs(np.asarray(rgb) - np.asarray(evaluated)).max() > 1e-3


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
