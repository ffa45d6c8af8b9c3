"""jflow.deq.ordered.Chain: plain values and gradients, one segment's activations live at a time."""
import jax
import jax.numpy as jnp
import pytest

from jflow.deq.ordered import Chain


def _segment(v, w):
    h = jnp.sin(v[:, None] * w[None, :])  # (256, 256) floats: 256 KiB per segment
    return jnp.sum((jnp.cos(h) + 2.0) * h * h * w)  # positive terms: no cancellation in float32


def _loss(w, vs, how):
    chain = Chain()
    seg = {"plain": _segment, "checkpoint": jax.checkpoint(_segment),
           "chain": lambda v, w: chain(lambda a: _segment(a, w), v)}[how]
    return sum(seg(v, w) for v in vs)


W = jnp.linspace(0.5, 1.5, 256)
VS = [jnp.linspace(-1.0, 1.0, 256) * (i + 1) for i in range(6)]


def test_chain_gives_the_plain_values_and_gradients():
    (v0, g0), (v1, g1) = (jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)),
                                  static_argnums=2)(W, VS, how) for how in ("plain", "chain"))
    assert float(v1) == pytest.approx(float(v0), rel=1e-6)
    assert float(jnp.abs(g0[0]).max()) > 0
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(a).max())


def test_chain_keeps_one_segment_live():
    """jax.checkpoint's six recomputations are live together on XLA:CPU; the chain's one by one."""
    temp = {}
    for how in ("checkpoint", "chain"):
        compiled = jax.jit(jax.grad(_loss), static_argnums=2).lower(W, VS, how).compile()
        temp[how] = compiled.memory_analysis().temp_size_in_bytes
    assert temp["chain"] * 3 < temp["checkpoint"], temp
