"""SEA-RAFT: model contract, resizing, conversion of official state_dicts, the mixture-of-Laplace
loss and the trainer. Agreement with the official code in float64 is checked by the golden files
``tests/data/golden/sea_raft_{s,m}.npz`` (``tests/test_fidelity.py``)."""
import importlib.util
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golden_weights import GOLDEN_DIR, load_golden
from jflow import convert, geometry, losses
from jflow.convert import ConversionError
from jflow.models import build_model, count_params, random_variables
from jflow.models import variable_shapes
from jflow.models import sea_raft as sr
from jflow.torch_pickle import save_torch_state_dict

REPO = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg=None):
    spec = importlib.util.spec_from_file_location("cfg_sea_raft", REPO / "configs" / "sea_raft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


@pytest.fixture(scope="module")
def small():
    model = build_model({"name": "sea_raft", "size": "S"})
    return model, random_variables(model, seed=0)


@pytest.fixture(scope="module")
def golden_states():
    """Official-layout state_dicts (S, M) of the golden files, and RAFT's."""
    out = {}
    for name in ("sea_raft_s", "sea_raft_m", "raft"):
        out[name] = load_golden(pathlib.Path(GOLDEN_DIR) / f"{name}.npz").state_dict()
    return out


def test_sizes_configs_and_official_state_dict_layout(golden_states):
    shapes = {s: variable_shapes(build_model({"name": "sea_raft", "size": s})) for s in "SML"}
    assert count_params(shapes["S"]) == 8_883_460
    assert count_params(shapes["M"]) == count_params(shapes["L"]) == 19_663_876
    # 276 (S) / 472 (M) official keys, including the bn3 / downsample.1 aliases
    assert len(golden_states["sea_raft_s"]) == 276 and len(golden_states["sea_raft_m"]) == 472
    p = shapes["S"]["params"]
    assert p["update_block"]["refine_0"]["pwconv1"]["kernel"].shape == (384, 512)
    assert p["update_block"]["refine_1"]["dwconv"]["kernel"].shape == (7, 7, 1, 384)
    assert p["flow_head_2"]["kernel"].shape == (3, 3, 256, 6)
    assert "bn3" in shapes["S"]["batch_stats"]["cnet"]["layer2_0"]
    for arg, size, ev in (("S", "S", 4), ("M", "M", 4), ("L", "L", 12)):
        c = get_config(arg)
        assert (c.model.size, c.model.eval_iters, c.model.iters) == (size, ev, 4)
        assert c.train.loss == "mixture_laplace" and set(c.eval.iters.values()) == {ev}
        assert build_model(c.model).eval_iters == ev
    c = get_config("M,stage=tskh")
    assert (c.train.num_steps, c.train.batch_size, c.train.lr, c.train.wd, c.train.gamma) == (
        300_000, 32, 4e-4, 1e-5, 0.85)
    assert tuple(c.data.crop) == (432, 960) and "30*hd1k" in c.data.train
    c = get_config("S,stage=chairs")
    assert (c.train.lr, c.train.wd, c.train.gamma, c.train.batch_size) == (2.5e-4, 1e-4, 0.8, 16)
    assert get_config("M,stage=spring").model.scale == -1
    assert get_config("S,stage=kitti").train.num_steps == 10_000
    with pytest.raises(ValueError, match="stage"):
        get_config("S,stage=sintel")
    with pytest.raises(ValueError, match="size"):
        get_config("H")
    with pytest.raises(ValueError, match="mixed_precision"):
        build_model({"name": "sea_raft", "size": "S", "mixed_precision": True})


def test_resize_matrices_follow_torch():
    # F.interpolate(scale_factor=0.5, bilinear, align_corners=False) = 2x2 box average
    np.testing.assert_allclose(geometry.resize_matrix(4, 2, align_corners=False, scale=0.5),
                               [[.5, .5, 0, 0], [0, 0, .5, .5]])
    # x2 upsampling: source (i + 0.5) / 2 - 0.5, clamped at the borders
    np.testing.assert_allclose(geometry.resize_matrix(2, 4, align_corners=False, scale=2.0),
                               [[1, 0], [.75, .25], [.25, .75], [0, 1]])
    np.testing.assert_allclose(sr._area_matrix(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(sr._area_matrix(4, 2), [[.5, .5, 0, 0], [0, 0, .5, .5]])


def test_outputs_padding_uncertainty_warm_start_and_scale(small):
    model, variables = small
    rng = np.random.default_rng(0)
    im1 = jnp.asarray(rng.uniform(0, 255, (1, 60, 76, 3)), jnp.float32)
    im2 = jnp.asarray(rng.uniform(0, 255, (1, 60, 76, 3)), jnp.float32)
    out = jax.jit(lambda v, a, b: model.apply(v, a, b, iters=1))(variables, im1, im2)
    assert out["flow"].shape == (1, 60, 76, 2) and out["info"].shape == (1, 60, 76, 4)
    assert out["flow_low"].shape == (1, 8, 10, 2)  # padded to 64x80 inside the model
    np.testing.assert_array_equal(out["state"], out["flow_low"])
    assert out["stats"] == {}
    unc = np.asarray(out["uncertainty"])
    np.testing.assert_allclose(unc, np.asarray(sr.uncertainty_map(out["info"])), atol=1e-6)
    assert unc.shape == (1, 60, 76) and unc.min() >= 0 and unc.max() <= 10
    assert np.all(np.isfinite(np.asarray(out["flow"])))
    # iters=0: the regressed initial flow; a warm start replaces it; scale -1 keeps the size
    init = jnp.asarray(rng.normal(size=(1, 8, 10, 2)), jnp.float32)
    f0 = jax.jit(lambda v, a, b, fi, si: model.apply(v, a, b, iters=0, flow_init=fi,
                                                     state_init=si))
    warm = f0(variables, im1, im2, init, init)
    np.testing.assert_array_equal(np.asarray(warm["flow_low"]), 2 * np.asarray(init))
    assert not sr.SEARAFT.zero_init_is_cold_start
    with pytest.raises(ValueError, match="flow_init must have shape"):
        model.apply(variables, im1, im2, iters=0, flow_init=init[:, :4])
    # train mode: the initial flow + one prediction per update (shapes only, nothing compiled)
    shapes, _ = jax.eval_shape(lambda v, a, b: model.apply(v, a, b, train=True, iters=2,
                                                           mutable=["batch_stats"]),
                               variables, im1, im2)
    assert shapes["predictions"].shape == (3, 1, 60, 76, 2)
    assert shapes["info_predictions"].shape == (3, 1, 60, 76, 4)
    scaled = build_model({"name": "sea_raft", "size": "S", "scale": -1})
    out_s = jax.jit(lambda v, a, b: scaled.apply(v, a, b, iters=0))(variables, im1, im2)
    assert out_s["flow"].shape == (1, 60, 76, 2) and out_s["flow_low"].shape == (1, 4, 5, 2)


# ------------------------------------------------------------------------------------ convert

def test_conversion_strict_and_clear_errors(golden_states, tmp_path):
    s_state, m_state = golden_states["sea_raft_s"], golden_states["sea_raft_m"]
    shapes = {s: variable_shapes(build_model({"name": "sea_raft", "size": s})) for s in "SML"}
    # L is the M checkpoint evaluated with 12 iterations
    out = convert.torch_to_flax(m_state, shapes["L"])
    np.testing.assert_array_equal(out["batch_stats"]["fnet"]["layer2_0"]["bn3"]["var"],
                                  m_state["fnet.layer2.0.downsample.1.running_var"])
    np.testing.assert_array_equal(out["params"]["update_block"]["refine_0"]["pwconv1"]["kernel"],
                                  m_state["update_block.refine.0.pwconv1.weight"].T)
    # another size: one error naming the sizes (convert_checkpoint writes nothing)
    pth = tmp_path / "s.pth"
    save_torch_state_dict(s_state, pth)
    with pytest.raises(ConversionError, match=r"is SEA-RAFT S .*builds SEA-RAFT M.*sea_raft.py:S"):
        convert.convert_checkpoint(get_config("M"), pth, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConversionError, match="is SEA-RAFT M/L"):
        convert.PREPROCESS["sea_raft"](m_state, get_config("S"), "m.pth")
    with pytest.raises(ConversionError, match="not a SEA-RAFT checkpoint"):
        convert.PREPROCESS["sea_raft"](golden_states["raft"], get_config("S"), "raft.pth")
    # aliases must be equal; missing and misshapen keys are named
    bad = dict(s_state)
    bad["cnet.layer2.0.downsample.1.weight"] = bad["cnet.layer2.0.bn3.weight"] + 1
    with pytest.raises(ConversionError, match="conflicting duplicates"):
        convert.torch_to_flax(bad, shapes["S"])
    bad = dict(s_state)
    del bad["update_block.refine.1.gamma"]
    bad["init_conv.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"(?s)refine_1/gamma.*init_conv.*\(3,\)"):
        convert.torch_to_flax(bad, shapes["S"])


# --------------------------------------------------------------------------------------- loss

def _official_nll(pred, info, gt):
    """core/raft.py's ``nf`` in float64 numpy, NCHW-free: (B, H, W, 2)."""
    raw = info[..., 2:].astype(np.float64)
    log_b = np.stack([np.clip(raw[..., 0], 0, 10), np.clip(raw[..., 1], 0, 0)], -1)
    w = info[..., :2].astype(np.float64)
    term2 = np.abs(gt - pred)[..., :, None] * np.exp(-log_b)[..., None, :]
    term1 = w - np.log(2) - log_b

    def lse(x, axis):
        m = x.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)
    return lse(w, -1)[..., None] - lse(term1[..., None, :] - term2, -1)


def test_mixture_laplace_loss_equals_official_formula():
    rng = np.random.default_rng(3)
    n, b, h, w = 3, 2, 4, 5
    preds = rng.normal(0, 3, (n, b, h, w, 2)).astype(np.float32)
    info = rng.normal(0, 4, (n, b, h, w, 4)).astype(np.float32)
    gt = rng.normal(0, 3, (b, h, w, 2)).astype(np.float32)
    gt[0, 0, 0] = 500.0  # |gt| >= 400: excluded
    valid = np.ones((b, h, w), np.float32)
    valid[1, 2, :] = 0
    weights = np.array([0.85 ** 2, 0.85, 1.0], np.float32)
    loss, metrics = losses.mixture_laplace_loss(preds, info, gt, valid, weights)
    mask = (valid >= 0.5) & (np.linalg.norm(gt, axis=-1) < 400)
    want = sum(weights[i] * _official_nll(preds[i], info[i], gt)[mask].mean() for i in range(n))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    epe = np.linalg.norm(preds[-1] - gt, axis=-1)[mask].mean()
    np.testing.assert_allclose(float(metrics["epe"]), epe, rtol=1e-5)
    # b_2 = 1 when all scales are clamped to 0: a pure Laplace(1) NLL = |d| + log 2
    zero = np.zeros((1, b, h, w, 4), np.float32)
    l1, _ = losses.mixture_laplace_loss(preds[:1], zero, gt, valid, [1.0])
    np.testing.assert_allclose(float(l1), (np.abs(preds[0] - gt)[mask] + np.log(2)).mean(),
                               rtol=1e-5)
    grads = jax.jit(jax.grad(
        lambda i: losses.mixture_laplace_loss(preds, i, gt, valid, weights)[0]))(jnp.asarray(info))
    assert np.all(np.isfinite(np.asarray(grads)))


def test_smoke_training_steps_and_validation():
    """``configs/sea_raft.py:S,smoke``: two updates with the mixture loss (the model's
    ``predictions`` and ``info_predictions`` in train mode), then validation.
    (Random host-filled weights: compiling the initialisers is slow on CPU; ``python -m
    jflow.main --config=configs/sea_raft.py:S,smoke --workdir=...`` runs the whole loop.)"""
    from configs_for_tests import host_trainer
    from jflow import evaluate

    c = get_config("S,smoke")
    c.model.iters = 1
    model, state, update, batches = host_trainer(c)
    seen = []
    before = np.array(state.batch_stats["fnet"]["bn1"]["mean"])  # a copy: the state is donated
    for _ in range(2):
        state, m = update(state, next(batches))
        seen.append(float(m["loss"]))
    assert all(np.isfinite(seen)) and seen[0] > 0
    # BatchNorm is trained: the running statistics moved
    assert not np.allclose(np.asarray(state.batch_stats["fnet"]["bn1"]["mean"]), before)
    res = evaluate.validate_spec(model, {"params": state.params,
                                         "batch_stats": state.batch_stats}, c, "synthetic")
    assert np.isfinite(res.metrics["epe/pooled"])


def test_golden_files_record_the_official_run():
    for name, size in (("sea_raft_s", "S"), ("sea_raft_m", "M")):
        g = load_golden(pathlib.Path(GOLDEN_DIR) / f"{name}.npz")
        assert g.config == f"configs/sea_raft.py:{size}" and g.iters == 4
        assert g.provenance["repository"] == "princeton-vl/SEA-RAFT"
        assert g.image1.shape[1] % 8 and g.image1.shape[2] % 8  # padding exercised
        assert set(g.extras) == {"info", "uncertainty"}
        assert all(k.endswith(v.rsplit(".", 1)[1]) and ".downsample.1." in k and ".bn3." in v
                   for k, v in g.aliases.items()) and len(g.aliases) == 20


def test_depthwise_conv_equals_grouped_convolution():
    """The shifted-sum depthwise 7x7 is torch's ``Conv2d(C, C, 7, padding=3, groups=C)``."""
    from jflow.models.sea_raft import DepthwiseConv

    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 9, 11, 6)), jnp.float32)
    layer = DepthwiseConv(7)
    variables = layer.init(jax.random.PRNGKey(1), x)
    p = variables["params"]
    want = jax.lax.conv_general_dilated(
        x, p["kernel"], (1, 1), ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=6, precision=jax.lax.Precision.HIGHEST) + p["bias"]
    np.testing.assert_allclose(np.asarray(layer.apply(variables, x)), np.asarray(want),
                               rtol=1e-5, atol=1e-5)


def test_convnext_block_takes_channel_parts():
    """A tuple of channel parts is the block on their concatenation (the update passes net,
    context and motion features apart so that the context's depthwise filter is shared)."""
    from jflow.models.sea_raft import ConvNextBlock, DepthwiseConv

    rng = np.random.default_rng(6)
    parts = tuple(jnp.asarray(rng.normal(size=(1, 7, 9, c)), jnp.float32) for c in (4, 3, 5))
    whole = jnp.concatenate(parts, axis=-1)
    for layer in (DepthwiseConv(7), ConvNextBlock(4)):
        variables = layer.init(jax.random.PRNGKey(2), whole)
        variables = jax.tree.map(lambda a: a + 0.3, variables)  # gamma far from its 1e-6 init
        np.testing.assert_allclose(np.asarray(layer.apply(variables, parts)),
                                   np.asarray(layer.apply(variables, whole)), rtol=1e-5,
                                   atol=1e-5)
        with pytest.raises(flax.errors.ScopeParamShapeError):  # parts must fill the kernel
            layer.apply(variables, parts[:2])


def test_convnext_block_folds_the_layernorm_affine_exactly():
    """The LayerNorm's scale and shift folded into pwconv1 give the official order of operations
    (``nn.LayerNorm`` then ``nn.Dense`` on the same parameters), in float64."""
    from jflow.models.sea_raft import ConvNextBlock, DepthwiseConv

    def official(p, x):
        y = DepthwiseConv(7).apply({"params": p["dwconv"]}, x)
        y = flax.linen.LayerNorm(epsilon=1e-6, use_fast_variance=False).apply(
            {"params": p["norm"]}, y)
        y = jax.nn.gelu(flax.linen.Dense(12).apply({"params": p["pwconv1"]}, y), approximate=False)
        y = x + p["gamma"] * flax.linen.Dense(12).apply({"params": p["pwconv2"]}, y)
        return jnp.einsum("bhwc,cd->bhwd", y, p["final"]["kernel"][0, 0]) + p["final"]["bias"]

    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        x = jnp.asarray(rng.normal(size=(1, 6, 8, 12)))
        block = ConvNextBlock(3)
        variables = block.init(jax.random.PRNGKey(3), x)
        variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), variables)
        got = jax.jit(block.apply)(variables, x)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(official)(
            variables["params"], x)), rtol=1e-10, atol=1e-10)
