"""Weight-normed convolution (jflow.deq.weight_norm): init, apply, folding into a plain kernel."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow.deq import WeightNormConv, fold_weight_norm, weight_norm_kernel


def test_weight_norm_conv_init_apply_and_fold():
    x = jnp.asarray(np.random.RandomState(0).randn(2, 6, 6, 3), jnp.float32)
    params = WeightNormConv(4, (3, 3)).init(jax.random.PRNGKey(0), x)["params"]
    assert set(params) == {"kernel_v", "kernel_g", "bias"}
    v = np.asarray(params["kernel_v"])
    v_norm = np.linalg.norm(v.reshape(-1, 4), axis=0)
    # at init g = ||v|| per output channel, so the effective kernel equals v
    np.testing.assert_allclose(params["kernel_g"], v_norm, rtol=1e-6)
    np.testing.assert_allclose(weight_norm_kernel(params["kernel_v"], params["kernel_g"]), v, rtol=1e-5)

    g = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    params = {"kernel_v": params["kernel_v"], "kernel_g": jnp.asarray(g), "bias": jnp.ones(4)}
    y = WeightNormConv(4, (3, 3)).apply({"params": params}, x)
    folded = fold_weight_norm(v, g)
    assert folded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(folded.reshape(-1, 4), axis=0), g, rtol=1e-6)
    plain = nn.Conv(4, (3, 3)).apply({"params": {"kernel": folded, "bias": params["bias"]}}, x)
    np.testing.assert_allclose(y, plain, rtol=1e-5, atol=1e-5)
