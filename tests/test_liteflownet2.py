"""LiteFlowNet2: layers, conversion of ptlflow checkpoints, and a golden regression against
ptlflow's forward (float64, regularisation bug corrected, warp mask from coordinates).

``tests/data/liteflownet2_golden.npz`` holds a 60x90 uint8 pair (batch 2), the key names and
shapes of ptlflow's state_dicts and the reference flows; the weights are regenerated here from
``np.random.default_rng(seed)`` exactly as the harness generated them (He-uniform kernels,
U(+-0.1) biases, inner upsampling deconvolutions bilinear + U(+-0.05), final one bilinear).
"""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import convert, losses
from jflow.models import build_model, model_from_config, random_variables, variable_shapes
from jflow.models import liteflownet2 as lfn
from jflow.torch_pickle import load_torch_state_dict, save_torch_state_dict

GOLDEN = pathlib.Path(__file__).resolve().parent / "data" / "liteflownet2_golden.npz"
CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "liteflownet2.py"


def _bilinear_1d(size):
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    return 1 - np.abs(np.arange(size) / f - c)


def seeded_state(keys_shapes, seed):
    """The harness's deterministic weights in ptlflow's layout (float32)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in keys_shapes:
        shape = tuple(shape)
        if key == "up_flow.weight":
            k = shape[-1]
            out[key] = np.broadcast_to(np.outer(_bilinear_1d(k), _bilinear_1d(k)), shape).copy()
        elif key.endswith("up_flow.weight") or key.endswith("up_corr.weight"):
            k = shape[-1]
            base = np.broadcast_to(np.outer(_bilinear_1d(k), _bilinear_1d(k)), shape)
            out[key] = base + rng.uniform(-0.05, 0.05, shape)
        elif key.endswith(".bias"):
            out[key] = rng.uniform(-0.1, 0.1, shape)
        else:
            out[key] = rng.uniform(-1, 1, shape) * math.sqrt(6.0 / int(np.prod(shape[1:])))
    return {k: v.astype(np.float32) for k, v in out.items()}


def config_module():
    from jflow.config_files import config_module as load

    return load(str(CONFIG))


def config(variant="sintel"):
    return config_module().get_config("kitti" if variant == "kitti" else None)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def ckpts(golden, tmp_path_factory):
    """ptlflow-layout checkpoints of the golden weights, written without torch."""
    d = tmp_path_factory.mktemp("lfn2")
    out = {}
    for variant in ("sintel", "kitti"):
        ks = json.loads(str(golden[f"keys_{variant}"]))
        state = seeded_state(ks, int(golden[f"seed_{variant}"]))
        path = d / f"{variant}.ckpt"
        save_torch_state_dict(state, path)
        out[variant] = (path, state)
    return out


@pytest.fixture(scope="module")
def apply_fn():
    models = {v: build_model({"name": "liteflownet2", "variant": v}) for v in lfn.VARIANTS}
    fns = {v: jax.jit(lambda var, a, b, m=m: m.apply(var, a, b)) for v, m in models.items()}
    return models, fns


def test_correlation_and_unfold_match_direct_definitions():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(2, 2, 9, 11, 5)).astype(np.float32)
    f2p = np.pad(f2, ((0, 0), (3, 3), (3, 3), (0, 0)))
    for tile in (32, 4):  # one tile per row; tiles of 4 (11 = 4 + 4 + 3 padded)
        got = np.asarray(lfn.correlation(jnp.asarray(f1), jnp.asarray(f2), 3, tile=tile))
        for dy in (-3, 0, 2):
            for dx in (-1, 3):
                ch = (dy + 3) * 7 + (dx + 3)  # y-major
                want = np.mean(f1 * f2p[:, 3 + dy:12 + dy, 3 + dx:14 + dx], axis=-1)
                np.testing.assert_allclose(got[..., ch], want, atol=1e-5)
        assert got.shape == (2, 9, 11, 49)
    x = rng.normal(size=(1, 6, 7, 2)).astype(np.float32)
    u = np.asarray(lfn.unfold(jnp.asarray(x), 5))
    assert u.shape == (1, 6, 7, 2, 25)
    np.testing.assert_allclose(u[0, 0, 0, :, 2 * 5 + 2], x[0, 0, 0])  # centre
    assert u[0, 0, 0, 1, 0] == 0                                      # zero padding
    np.testing.assert_allclose(u[0, 3, 4, :, 1 * 5 + 4], x[0, 2, 6])  # (y-1, x+2)


def test_transposed_conv_layout_matches_a_direct_scatter():
    """Converted (Cin, Cout, k, k) torch weights give torch's ConvTranspose2d output."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
    w = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)  # torch layout, groups 1
    # torch semantics: out[y*s - p + i, x*s - p + j, o] += x[y, x, c] w[c, o, i, j]
    full = np.zeros((3 * 2 + 2, 4 * 2 + 2, 3))
    for y in range(3):
        for xx in range(4):
            full[2 * y:2 * y + 4, 2 * xx:2 * xx + 4] += np.einsum("c,coij->ijo", x[0, y, xx], w)
    want = full[1:-1, 1:-1]
    kernel = np.transpose(lfn._transposed_to_forward(w, 1), (2, 3, 1, 0))
    layer = lfn.ConvTranspose2d(3, 4, 2, 1, use_bias=False)
    got = layer.apply({"params": {"kernel": jnp.asarray(kernel)}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got)[0], want, atol=1e-5)


def test_resize_matches_torch_bilinear_half_pixel():
    x = jnp.arange(8.0).reshape(1, 1, 8, 1)
    down = np.asarray(lfn.resize_bilinear(x, (1, 2)))[0, 0, :, 0]
    np.testing.assert_allclose(down, [1.5, 5.5])  # src = 4 * dst + 1.5
    up = np.asarray(lfn.resize_bilinear(x[:, :, :2], (1, 4)))[0, 0, :, 0]
    np.testing.assert_allclose(up, [0.0, 0.25, 0.75, 1.0])  # clamped at the borders


@pytest.mark.parametrize("variant", ["sintel", "kitti"])
def test_golden_flow_equals_ptlflow_with_the_bug_fixed(variant, golden, ckpts, apply_fn):
    models, fns = apply_fn
    path, _ = ckpts[variant]
    state = lfn.ptlflow_to_jflow_state(load_torch_state_dict(path), variant, str(path))
    v = convert.torch_to_flax(state, variable_shapes(models[variant]))
    want = golden[f"flow_{variant}"]
    b = want.shape[0]
    im1 = jnp.asarray(golden["image1"][:b], jnp.float32)
    im2 = jnp.asarray(golden["image2"][:b], jnp.float32)
    out = fns[variant]({"params": v["params"]}, im1, im2)
    assert out["flow"].shape == want.shape and out["state"] is None
    err = np.abs(np.asarray(out["flow"]) - want).max()
    assert err <= 1e-3, f"{variant}: max |dflow| {err:.3g} px"
    assert np.abs(want).mean() > 1.0  # the reference is not trivially small


def test_convert_cli_function_writes_a_loadable_checkpoint(ckpts, tmp_path):
    from jflow.checkpoint import load_params
    path, state = ckpts["sintel"]
    out = convert.convert_checkpoint(config("sintel"), path, tmp_path / "out")
    params = load_params(out)["params"]
    reg = params["regularization_nets_3"]
    np.testing.assert_array_equal(reg["flcon_div"]["kernel"], np.ones((1, 1, 25, 1)))
    np.testing.assert_array_equal(
        params["feature_net"]["convs_1_2"]["kernel"],
        np.transpose(state["feature_net.convs.1.2.weight"], (2, 3, 1, 0)))
    # a depthwise transposed conv is flipped spatially
    np.testing.assert_array_equal(params["matching_nets_3"]["up_corr"]["kernel"][:, :, 0, 0],
                                  state["matching_nets.3.up_corr.weight"][0, 0, ::-1, ::-1])


def test_lightning_style_checkpoint_is_read():
    """A ``torch.save`` of a Lightning-style dict (as ptlflow's ``.ckpt``: epoch, version string,
    hyper_parameters, ``state_dict``), loadable with ``weights_only=True``; made with torch 2.13."""
    state = load_torch_state_dict(GOLDEN.parent / "lightning_style.ckpt")
    assert sorted(state) == ["feature_net.convs.0.0.bias", "up_flow.weight"]
    np.testing.assert_array_equal(state["feature_net.convs.0.0.bias"], [0, 1, 2, 3])


def test_wrong_checkpoints_are_clear_errors(ckpts, tmp_path):
    path, state = ckpts["sintel"]
    with pytest.raises(convert.ConversionError, match="holds the Sintel .*liteflownet2.py"):
        convert.convert_checkpoint(config("kitti"), path, tmp_path / "a")
    raft = tmp_path / "raft.pth"
    save_torch_state_dict({"fnet.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, raft)
    with pytest.raises(convert.ConversionError, match="not a ptlflow LiteFlowNet2 checkpoint"):
        convert.convert_checkpoint(config("sintel"), raft, tmp_path / "b")
    bad = dict(state, **{"up_flow.weight": state["up_flow.weight"] + 0.01})
    with pytest.raises(convert.ConversionError, match="not the bilinear x4 kernel"):
        lfn.ptlflow_to_jflow_state(bad, "sintel")


def test_any_size_training_outputs_and_random_variables(apply_fn):
    """Shapes only (no compilation): the golden tests run the numbers, per sample at batch 2."""
    models, _ = apply_fn
    model = models["kitti"]
    v = random_variables(model, seed=3)
    assert float(v["params"]["pseudo_regularization"]["flcon_u"]["kernel"].min()) == 1.0
    assert float(jnp.abs(v["params"]["regularization_nets_0"]["flcon_div"]["bias"]).max()) == 0
    im = jax.ShapeDtypeStruct((3, 50, 70, 3), jnp.float32)
    out = jax.eval_shape(lambda v, a, b: model.apply(v, a, b, train=True), v, im, im)
    assert out["flow"].shape == (3, 50, 70, 2) and out["state"] is None
    # resized to 64x96: L6..L3 at 1/32..1/4, pseudo L2 at 1/2 (= flow_low, in pixels)
    assert [p.shape[1:3] for p in out["pyramid"]] == [(2, 3), (4, 6), (8, 12), (16, 24), (32, 48)]
    assert out["flow_low"].shape == (3, 32, 48, 2)
    assert type(model).pad_multiple == 1


def test_multilevel_loss_values():
    gt = jnp.ones((1, 8, 8, 2)) * 20.0  # scaled: 1
    pyr = [jnp.zeros((1, 2, 2, 2)), jnp.ones((1, 4, 4, 2))]
    flow = jnp.full((1, 8, 8, 2), 20.0)
    valid = jnp.ones((1, 8, 8))
    loss, m = losses.multilevel_loss(pyr, flow, gt, valid, (0.5, 0.25), 0.1)
    # level 0: 4 pixels * |(1, 1)| = 4 sqrt 2, weight 0.5; level 1 and full-res: exact
    np.testing.assert_allclose(loss, 0.5 * 4 * np.sqrt(2), rtol=1e-6)
    assert float(m["epe"]) == 0.0
    ch, _ = losses.multilevel_loss(pyr[:1], flow, gt, valid, (1.0,), 0.0, kind="charbonnier")
    np.testing.assert_allclose(ch, 4 * (2 + 0.01) ** 0.2, rtol=1e-6)
    up, _ = losses.multilevel_loss(pyr[:1], flow, gt, valid, (1.0,), 0.0, resize="upsample")
    np.testing.assert_allclose(up, 64 * np.sqrt(2), rtol=1e-6)
    g = jax.grad(lambda p: losses.multilevel_loss([p], flow, gt, valid, (1.0,), 0.0)[0])(pyr[1])
    assert np.isfinite(np.asarray(g)).all()  # zero error: no NaN gradient


@pytest.mark.slow  # compiling the training step: ~20-30 s of CPU
def test_smoke_training_steps_and_validation():
    """``configs/liteflownet2.py:smoke``: two updates of jflow's trainer with the multi-level loss,
    then the synthetic validation protocol. (Starts from ``random_variables``: compiling the
    random initialisers alone takes longer than this test; ``python -m jflow.main
    --config=configs/liteflownet2.py:smoke`` runs the whole loop.)"""
    from jflow import evaluate, sharding, train
    from jflow.data import build_source
    from jflow.data.loader import Loader

    c = config_module().get_config("smoke")
    assert c.train.loss == "multilevel_l2" and len(c.train.level_weights) == 4
    model = model_from_config(c)
    mesh = sharding.make_mesh(1)
    state = train.state_from_weights(random_variables(model, seed=0)["params"], {}, c, mesh)
    update = train.make_update_fn(model, c, mesh)
    source = build_source("synthetic", None, "train", 0, num_samples=4, height=64, width=64)
    batches = iter(Loader(source, 2, seed=0, augment=False, crop=(64, 64), shuffle=False,
                          num_workers=0, drop_meta=True))
    losses_seen = []
    for _ in range(2):
        batch = sharding.global_batch(next(batches), mesh)
        state, m = update(state, batch)
        losses_seen.append(float(m["loss"]))
    assert all(np.isfinite(losses_seen)) and losses_seen[0] > 0
    params = state.params
    flcon = np.asarray(params["regularization_nets_3"]["flcon_u"]["kernel"])
    # frozen: no gradient; weight decay scales the three alike, which leaves f-lcon unchanged
    assert flcon.min() == flcon.max() and abs(flcon.min() - 1) < 1e-3
    res = evaluate.validate_spec(model, {"params": params}, c, "synthetic")
    assert np.isfinite(res.metrics["epe/pooled"]) and res.metrics["images"] == 2


@pytest.mark.parametrize("hwc,k,s,p", [((5, 7, 2), 4, 2, 1), ((6, 4, 3), 8, 4, 2),
                                        ((5, 6, 49), 4, 2, 1)])
def test_depthwise_conv_transpose_equals_grouped_dilated_convolution(hwc, k, s, p):
    rng = np.random.default_rng(k + s)
    x = jnp.asarray(rng.normal(size=(2,) + hwc), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 1, hwc[-1])), jnp.float32)
    want = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((k - 1 - p, k - 1 - p),) * 2, lhs_dilation=(s, s),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=hwc[-1],
        precision=jax.lax.Precision.HIGHEST)
    got = lfn.depthwise_conv_transpose(x, kernel, s, p)
    assert got.shape == want.shape == (2, hwc[0] * s, hwc[1] * s, hwc[2])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
