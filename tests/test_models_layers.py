"""Conv2d matches PyTorch's Conv2d semantics (float64 numpy reference); norms; init ranges."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.deq.weight_norm import fold_weight_norm
from jflow.models.layers import Conv2d, instance_norm, make_norm


def conv_ref(x, w, b, stride, pad, dil):
    """Direct NHWC cross-correlation in float64, PyTorch semantics (zero pad each side)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    kh, kw, _, cout = w.shape
    n, hp, wp, _ = x.shape
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, ho, wo, cout))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            patch = x[:, rows, cols]
            out += patch @ np.asarray(w[i, j], np.float64)
    return out + np.asarray(b, np.float64)


@pytest.mark.parametrize("kernel,stride,pad,dil", [
    (7, 2, 3, 1),          # encoder stem
    ((1, 5), 1, (0, 2), 1),  # SepConvGRU horizontal
    ((5, 1), 1, (2, 0), 1),  # SepConvGRU vertical
    (3, 1, 4, 4),          # dilated 3x3
    (1, 2, 0, 1),          # strided shortcut
])
@pytest.mark.parametrize("stack_rows", [False, True])
def test_conv2d_matches_torch_semantics(kernel, stride, pad, dil, stack_rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 13, 5)).astype(np.float32)
    as_pair = lambda a: (a, a) if isinstance(a, int) else a  # noqa: E731
    p = {"kernel": rng.normal(size=(*as_pair(kernel), 5, 6)).astype(np.float32),
         "bias": rng.normal(size=6).astype(np.float32)}
    y = Conv2d(6, kernel, stride, pad, dil, stack_rows=stack_rows).apply({"params": p}, x)
    as_pair = lambda a: (a, a) if isinstance(a, int) else a  # noqa: E731
    ref = conv_ref(x, p["kernel"], p["bias"], as_pair(stride), as_pair(pad), as_pair(dil))
    assert y.shape == ref.shape
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


def test_weight_norm_conv_equals_folded_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 7, 4)).astype(np.float32)
    conv = Conv2d(3, 3, 1, 1, wnorm=True)
    shapes = jax.eval_shape(conv.init, jax.random.PRNGKey(1), x)["params"]
    assert {k: v.shape for k, v in shapes.items()} == {
        "kernel_v": (3, 3, 4, 3), "kernel_g": (3,), "bias": (3,)}
    p = {"kernel_v": rng.normal(size=(3, 3, 4, 3)).astype(np.float32),
         "kernel_g": np.array([0.5, 2.0, 3.0], np.float32), "bias": np.ones(3, np.float32)}
    y = conv.apply({"params": p}, x)
    folded = fold_weight_norm(np.asarray(p["kernel_v"]), np.asarray(p["kernel_g"]))
    ref = conv_ref(x, folded, p["bias"], (1, 1), (1, 1), (1, 1))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


def test_default_init_is_torch_uniform_and_kaiming():
    x = jnp.zeros((1, 8, 8, 16))
    p = Conv2d(32, 3).init(jax.random.PRNGKey(0), x)["params"]
    bound = 1 / np.sqrt(16 * 9)
    for leaf in (p["kernel"], p["bias"]):
        assert float(jnp.max(jnp.abs(leaf))) <= bound
        assert float(jnp.max(jnp.abs(leaf))) > 0.8 * bound
    k = Conv2d(64, 3, init_mode="kaiming").init(jax.random.PRNGKey(0), x)["params"]["kernel"]
    np.testing.assert_allclose(float(jnp.std(k)), np.sqrt(2 / (64 * 9)), rtol=0.1)


def test_instance_norm_matches_numpy():
    x = np.random.default_rng(0).normal(3, 2, (2, 5, 6, 4))
    mu = x.mean(axis=(1, 2), keepdims=True)
    ref = (x - mu) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(instance_norm(jnp.asarray(x, jnp.float32))), ref,
                               rtol=1e-4, atol=1e-5)


def test_make_norm_rejects_unknown_kind():
    with pytest.raises(ValueError, match="norm_fn"):
        make_norm("layer", "n", 8, train=False, freeze_bn=False)


def test_conv2d_on_parts_equals_conv_of_their_concatenation():
    """A tuple input is the channel concatenation (one kernel, same params), summed per part."""
    rng = np.random.default_rng(3)
    parts = tuple(jnp.asarray(rng.normal(size=(2, 7, 9, c)), jnp.float32) for c in (3, 5, 2))
    whole = jnp.concatenate(parts, axis=-1)
    conv = Conv2d(4, (1, 5), 1, (0, 2))
    variables = conv.init(jax.random.PRNGKey(0), whole)
    want = conv.apply(variables, whole)
    got = conv.apply(variables, parts)
    assert jax.tree.map(jnp.shape, conv.init(jax.random.PRNGKey(0), parts)) == jax.tree.map(
        jnp.shape, variables)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_conv2d_pad_features_is_the_same_conv():
    """Zero filters padding the outputs to a multiple are sliced off: same parameters, same map."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(1, 6, 7, 5)), jnp.float32)
    plain, padded = Conv2d(6, 3, 1, 1), Conv2d(6, 3, 1, 1, pad_features=4)
    variables = plain.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, padded.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
        jnp.shape, variables)
    eqns = jax.make_jaxpr(lambda v: padded.apply(v, x))(variables).jaxpr.eqns
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    assert [e.outvars[0].aval.shape[-1] for e in convs] == [8]  # 6 outputs padded to 8
    y = padded.apply(variables, x)
    assert y.shape == (1, 6, 7, 6)
    np.testing.assert_allclose(np.asarray(y), np.asarray(plain.apply(variables, x)), rtol=1e-6,
                               atol=1e-6)


def test_update_block_split_context_is_the_same_function():
    from jflow.models.update import UpdateBlock

    rng = np.random.default_rng(4)
    net, inp = (jnp.asarray(rng.normal(size=(1, 6, 8, 16)), jnp.float32) for _ in range(2))
    corr = jnp.asarray(rng.normal(size=(1, 6, 8, 9)), jnp.float32)
    flow = jnp.asarray(rng.normal(size=(1, 6, 8, 2)), jnp.float32)
    kw = dict(hidden_dim=16, motion_dims=(16, 12, 8, 8, 16), flow_head_dim=16)
    joint, split = UpdateBlock(**kw), UpdateBlock(split_context=True, **kw)
    variables = joint.init(jax.random.PRNGKey(0), net, inp, corr, flow)
    a = joint.apply(variables, net, inp, corr, flow)
    b = split.apply(variables, net, inp, corr, flow)
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-5)
