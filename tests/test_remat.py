"""DEQ-RAFT's training-memory options recompute instead of store: same loss and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import benchmark, losses
from jflow.models import build_model, random_variables
from jflow.models.corr import build_corr, lookup, window_state

DEQ = dict(solver="naive", f_max_steps=3, n_states=2, phantom_steps=1, grad="phantom")


def _loss_and_grads(remat_encoder, remat_states, corr_feature_grad=False, variables=None):
    """(variables, loss, parameter gradients, updated batch statistics) of one training step."""
    model = build_model({"name": "deq_raft", "size": "T", "remat_encoder": remat_encoder,
                         "remat_states": remat_states, "corr_feature_grad": corr_feature_grad},
                        DEQ)
    if variables is None:
        variables = random_variables(model, seed=1)
    im1, im2 = benchmark.random_images(32, 48, 2, seed=1)

    def loss_fn(params, stats):
        out, new = model.apply({"params": params, "batch_stats": stats}, im1, im2, train=True,
                               mutable=["batch_stats"])
        preds = out["predictions"]
        loss, _ = losses.sequence_loss(preds, jnp.zeros(preds.shape[1:]),
                                       jnp.ones(preds.shape[1:-1]))
        return loss, new["batch_stats"]

    (loss, stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        variables["params"], variables["batch_stats"])
    return variables, float(loss), grads, stats


@pytest.fixture(scope="module")
def reference():
    return _loss_and_grads(False, False)


@pytest.mark.parametrize("options", [(True, True, True)])
def test_remat_gives_the_same_loss_gradients_and_batch_statistics(reference, options):
    variables, loss0, g0, s0 = reference
    _, loss1, g1, s1 = _loss_and_grads(*options, variables=variables)
    assert loss1 == pytest.approx(loss0, rel=1e-5)
    assert jax.tree_util.tree_structure(s0) == jax.tree_util.tree_structure(s1)
    for before, a, b in zip(jax.tree_util.tree_leaves(variables["batch_stats"]),
                            jax.tree_util.tree_leaves(s0), jax.tree_util.tree_leaves(s1)):
        # the context encoder's BatchNorm statistics, updated from pure applications when
        # recomputed (jflow.models.encoders.chained): the baseline's update, not the old ones
        assert float(np.abs(np.asarray(a) - np.asarray(before)).max()) > 1e-3
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    flat0, tree0 = jax.tree_util.tree_flatten_with_path(g0)
    flat1, tree1 = jax.tree_util.tree_flatten_with_path(g1)
    assert tree0 == tree1  # same parameters (paths unchanged by the remat wrappers)
    gmax = max(float(np.abs(np.asarray(a)).max()) for _, a in flat0)
    assert gmax > 0
    for (path, a), (_, b) in zip(flat0, flat1):
        a, b = np.asarray(a), np.asarray(b)
        # float32 noise: relative to the leaf, or to the largest gradient for leaves that are
        # zero in exact arithmetic (a conv bias in front of a BatchNorm)
        tol = 1e-4 * np.abs(a).max() + 1e-6 * gmax
        assert np.abs(a - b).max() <= tol, jax.tree_util.keystr(path)


def test_corr_feature_grad_gives_the_pyramid_gradients():
    """The lookups' feature-map gradients from the windows equal those through the (HW)^2
    pyramid, coordinates too (near and beyond the borders, every level); so do the values and
    gradients of lookups whose windows come from the feature maps (``window_state``)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    f1, f2 = (jax.random.normal(k, (2, 12, 18, 16)) for k in (k1, k2))
    coords = jax.random.uniform(k3, (2, 12, 18, 2), minval=-3.0, maxval=20.0)
    weights = jax.random.normal(k4, (2, 12, 18, 4 * 81))

    def loss(f1, f2, coords, mode):
        corr = build_corr(f1, f2, feature_grad=mode != "pyramid")
        return jnp.sum(lookup(window_state(corr) if mode == "windows" else corr, coords) * weights)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    v0, g0 = grad(f1, f2, coords, "pyramid")
    for mode in ("feature_grad", "windows"):
        v1, g1 = grad(f1, f2, coords, mode)
        assert float(v1) == pytest.approx(float(v0), rel=1e-5), mode
        for a, b in zip(g0, g1):
            assert float(jnp.abs(a).max()) > 0
            assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(a).max()), mode
