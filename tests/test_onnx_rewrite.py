"""jflow.onnx_rewrite: the re-traced jaxpr computes the same numbers without the patterns that
jax2onnx cannot convert (plain JAX: runs without the onnx extra)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from jflow.models.corr import _window_level
from jflow.onnx_rewrite import rewrite


def _eqns(closed):
    out = []

    def walk(jaxpr):
        for e in jaxpr.eqns:
            out.append(e)
            for p in e.params.values():
                if hasattr(p, "jaxpr"):
                    walk(p.jaxpr)
    walk(closed.jaxpr)
    return out


def _prims(closed):
    return {e.primitive.name for e in _eqns(closed)}


def _run(closed, specs, *args):
    """The jaxpr run on ``args`` (through jax.export: its shapes may be symbolic)."""
    fn = jax.jit(lambda *a: jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *a))
    return export.export(fn)(*specs).call(*args)


def _window_gathers(closed):
    """Gathers with a batching dimension and starts on two axes (the batched dynamic_slice)."""
    return [e for e in _eqns(closed) if e.primitive.name == "gather"
            and e.params["dimension_numbers"].operand_batching_dims
            and len(e.params["dimension_numbers"].start_index_map) == 2]


def test_correlation_window_becomes_take_along_axis_with_the_same_numbers():
    """The static-size all-pairs lookup (vmap of dynamic_slice, starts clamped at both borders)
    under a symbolic number of points."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(6, 12, 13)).astype(np.float32)
    pts = rng.uniform(-6, 18, size=(6, 2)).astype(np.float32)
    fn = jax.jit(lambda v, p: _window_level(v, p, 3))
    p, = export.symbolic_shape("p")
    specs = (jax.ShapeDtypeStruct((p, 12, 13), jnp.float32), jax.ShapeDtypeStruct((p, 2), jnp.float32))
    closed = jax.make_jaxpr(fn)(*specs)
    assert len(_window_gathers(closed)) == 1  # inside the jit
    new = rewrite(closed, *specs)
    assert not _window_gathers(new)
    np.testing.assert_array_equal(_run(new, specs, vol, pts)[0], fn(vol, pts))


def test_seeded_noise_at_a_fixed_size_becomes_a_constant():
    def f(x):
        noise = jax.random.uniform(jax.random.PRNGKey(3), x.shape, jnp.float32)
        return x + noise, jnp.zeros((3, 64, 64))  # a large fill: stays a broadcast op

    spec = jax.ShapeDtypeStruct((2, 5, 7), jnp.float32)
    closed = jax.make_jaxpr(f)(spec)
    assert {"random_bits", "random_wrap"} & _prims(closed) or "threefry2x32" in _prims(closed)
    new = rewrite(closed, spec)
    assert not {"random_bits", "random_wrap", "threefry2x32", "bitcast_convert_type"} & _prims(new)
    x = np.arange(70, dtype=np.float32).reshape(2, 5, 7)
    got = _run(new, [spec], x)
    np.testing.assert_array_equal(got[0], f(x)[0])
    np.testing.assert_array_equal(got[1], 0.0)
    assert "broadcast_in_dim" in _prims(new)
    assert all(np.size(c) < 3 * 64 * 64 for c in new.consts)


def test_edge_padding_loses_its_empty_concatenate_operands():
    def f(x):
        return jnp.pad(x, ((0, 0), (1, 2), (0, 0)), mode="edge")

    b, = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, 4, 3), jnp.float32)
    empty = lambda c: [e for e in _eqns(c) if e.primitive.name == "concatenate"  # noqa: E731
                       and any(0 in v.aval.shape for v in e.invars)]
    closed = jax.make_jaxpr(f)(spec)
    assert empty(closed)
    new = rewrite(closed, spec)
    assert not empty(new)
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(_run(new, [spec], x)[0], f(x))


def test_symbolic_batch_halves_become_dynamic_slices():
    def f(x):
        b = x.shape[0]
        y = jnp.concatenate([x, 2 * x])
        return y[b:] - y[:b]

    b, = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, 3), jnp.float32)
    closed = jax.make_jaxpr(f)(spec)
    assert "gather" in _prims(closed)
    new = rewrite(closed, spec)
    assert "gather" not in _prims(new) and "dynamic_slice" in _prims(new)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run(new, [spec], x)[0], x)


def test_while_bodies_are_rewritten():
    """The correlation window inside a while_loop (a DEQ solver at a fixed size)."""
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(4, 12, 13)).astype(np.float32)
    pts = rng.uniform(-6, 18, size=(4, 2)).astype(np.float32)

    def f(v, p):
        def body(c):
            i, acc = c
            return i + 1, acc + _window_level(v, p + i, 3)
        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, jnp.zeros((4, 49))))[1]

    specs = (jax.ShapeDtypeStruct(vol.shape, jnp.float32), jax.ShapeDtypeStruct(pts.shape, jnp.float32))
    closed = jax.make_jaxpr(f)(*specs)
    assert len(_window_gathers(closed)) == 1
    new = rewrite(closed, *specs)
    assert not _window_gathers(new) and "while" in _prims(new)
    np.testing.assert_array_equal(_run(new, specs, vol, pts)[0], jax.jit(f)(vol, pts))


def test_a_weight_used_twice_is_folded_once():
    """Unrolled iterations apply the same layer: its weight-derived constants are shared."""
    w = np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32)

    def f(x):
        for _ in range(3):
            x = x @ jnp.asarray(w).T  # the transpose of a constant: folded
        return x

    spec = jax.ShapeDtypeStruct((2, 64), jnp.float32)
    new = rewrite(jax.make_jaxpr(f)(spec), spec)
    assert "transpose" not in _prims(new)
    assert sum(np.size(c) == w.size for c in new.consts) == 1
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(_run(new, [spec], x)[0], f(x), rtol=1e-6)
