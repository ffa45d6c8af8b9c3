"""jflow.onnx_converter: jax2onnx adapted for long graphs gives the graph jax2onnx gives, and the
identity-cast sweep removes exactly the casts to the type they already have. Needs the optional
extra jflow[onnx]; skipped without it."""
import numpy as np
import pytest

from jflow.export_onnx import onnx_available

pytestmark = pytest.mark.skipif(
    not onnx_available(), reason="the optional extra jflow[onnx] (jax2onnx, onnxruntime) is not "
    "installed; pip install -e '.[dev,onnx]' runs these tests")


def _unrolled(x, w):
    """A few unrolled steps with casts to the same type and round trips through int32."""
    import jax.numpy as jnp

    for _ in range(4):
        x = jnp.tanh(x @ w).astype(jnp.float32) + x.shape[0]
        x = x + jnp.round(x).astype(jnp.int32).astype(jnp.float32) * 0.5
    return x


def _convert(patched: bool):
    import jax
    import jax2onnx

    from jflow.onnx_converter import converting

    specs = [jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 8"), np.float32),
             jax.ShapeDtypeStruct((8, 8), np.float32)]
    if patched:
        with converting():
            return jax2onnx.to_onnx(_unrolled, specs)
    return jax2onnx.to_onnx(_unrolled, specs)


def test_adapted_conversion_is_jax2onnx_graph():
    """Same nodes (op types in order) as jax2onnx alone, same numbers in onnxruntime; the
    patched internals are restored on exit."""
    import onnxruntime as ort
    from jax2onnx.converter import ir_optimizations, output_binding

    before = (output_binding._value_is_graph_connected, ir_optimizations._consumer_nodes,
              ir_optimizations._OPTIMIZER_PASSES)
    adapted, plain = _convert(True), _convert(False)
    assert before == (output_binding._value_is_graph_connected,
                      ir_optimizations._consumer_nodes, ir_optimizations._OPTIMIZER_PASSES)
    assert [n.op_type for n in adapted.graph.node] == [n.op_type for n in plain.graph.node]
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(8, 8)).astype(np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {m.graph.input[0].name: x, m.graph.input[1].name: w})[0] for m in (adapted, plain)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], np.asarray(_unrolled(x, w)), rtol=1e-5, atol=1e-5)


def test_identity_casts_removed_in_one_sweep():
    import onnx_ir as ir

    from jflow.onnx_converter import remove_identity_casts

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
    same = ir.node("Cast", [x], attributes={"to": ir.DataType.FLOAT.value})
    same.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    other = ir.node("Cast", [same.outputs[0]], attributes={"to": ir.DataType.INT32.value})
    other.outputs[0].type = ir.TensorType(ir.DataType.INT32)
    again = ir.node("Cast", [other.outputs[0]], attributes={"to": ir.DataType.INT32.value})
    again.outputs[0].type = ir.TensorType(ir.DataType.INT32)
    graph = ir.Graph([x], [again.outputs[0]], nodes=[same, other, again])
    assert remove_identity_casts(graph) == 2
    assert [n.op_type for n in graph] == ["Cast"] and list(graph)[0] is other
    assert other.inputs[0] is x and graph.outputs[0] is other.outputs[0]
