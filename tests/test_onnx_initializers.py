"""jflow.onnx_initializers: identical initializers merged, uses renamed in the main graph and in
Loop subgraphs, the graph's output unchanged in onnxruntime. Needs onnx and onnxruntime (the
optional extra jflow[onnx]); skipped without them."""
import numpy as np
import pytest

from jflow.export_onnx import onnx_available
from jflow.onnx_initializers import merge_identical_initializers

pytestmark = pytest.mark.skipif(
    not onnx_available(), reason="the optional extra jflow[onnx] (onnx, onnxruntime) is not "
    "installed; pip install -e '.[dev,onnx]' runs these tests")


def _model():
    """y = ((x + a1) * a2 + Loop(3 times: s + a3)) with a1 == a3 (in the Loop body), a2 of the
    same bytes but another dtype, a4 == a1 but a graph output (kept)."""
    from onnx import TensorProto, helper, numpy_helper

    ones = np.full((2, 3), 1.5, np.float32)
    inits = [numpy_helper.from_array(ones, "a1"),
             numpy_helper.from_array(ones.view(np.int32), "a2_int"),  # same bytes, other dtype
             numpy_helper.from_array(np.full((2, 3), 2.0, np.float32), "a2"),
             numpy_helper.from_array(ones.copy(), "a3"),
             numpy_helper.from_array(ones.copy(), "a4"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond")]
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Add", ["s_in", "a3"], ["s_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2, 3])])
    nodes = [helper.make_node("Add", ["x", "a1"], ["t"]),
             helper.make_node("Mul", ["t", "a2"], ["u"]),
             helper.make_node("Loop", ["trips", "cond", "x"], ["s"], body=body),
             helper.make_node("Add", ["u", "s"], ["v"]),
             helper.make_node("Cast", ["a2_int"], ["w"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["v", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("a4", TensorProto.FLOAT, [2, 3])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_identical_initializers_are_merged_in_the_graph_and_its_loop_body():
    import onnx

    model = _model()
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    before = _run(model, x)
    dropped = merge_identical_initializers(model)
    onnx.checker.check_model(model)
    names = [t.name for t in model.graph.initializer]
    assert names == ["a1", "a2_int", "a2", "a4", "trips", "cond"]  # a3 == a1 dropped
    assert dropped == 6 * 4
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    assert list(loop.attribute[0].g.node[1].input) == ["s_in", "a1"]
    after = _run(model, x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert merge_identical_initializers(model) == 0  # nothing left to merge
