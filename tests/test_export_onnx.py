"""jflow.export_onnx: ONNX graphs (jax2onnx) run in onnxruntime give FlowPredictor's flow, as the
StableHLO artifacts do. Needs the optional extra jflow[onnx]; skipped without it (CI installs .[dev])."""
import json

import numpy as np
import pytest

from jflow.config_files import load_config
from jflow.export import ExportError, export_model, load_exported
from jflow.export_onnx import OnnxExport, check_fits, onnx_available, probe_shape
from jflow.models import is_deq
from jflow.predict import FlowPredictor
from test_export import _pair, _setup

pytestmark = pytest.mark.skipif(
    not onnx_available(), reason="the optional extra jflow[onnx] (jax2onnx, onnxruntime) is not "
    "installed; pip install -e '.[dev,onnx]' runs these tests")
ATOL = 1e-4  # px, ONNX and StableHLO vs FlowPredictor


@pytest.fixture(scope="module")
def raft_small_onnx(tmp_path_factory):
    """RAFT-small (smoke) converted once with symbolic b, h, w (and the onnxruntime check)."""
    from jflow.export_onnx import export_onnx, load_onnx

    config, model, variables = _setup("raft.py:small,smoke")
    artifact = export_onnx(config, variables, iters=1, shape="b, h, w")
    path = tmp_path_factory.mktemp("onnx") / "raft_small.onnx"
    size = artifact.save(path)
    return path, size, artifact, load_onnx(path), FlowPredictor(model, variables, iters=1)


@pytest.mark.parametrize("batch,h,w,dtype", [(2, 64, 64, np.float32), (1, 70, 75, np.uint8)])
def test_symbolic_onnx_matches_flow_predictor_at_two_sizes(raft_small_onnx, batch, h, w, dtype):
    """One graph, two batches and sizes, one needing padding inside the graph (70x75)."""
    *_, flow_fn, predictor = raft_small_onnx
    im1, im2 = _pair(batch, h, w, dtype)
    flow = flow_fn(im1, im2)
    expected = predictor.predict_batch(im1, im2)
    assert flow.shape == (batch, h, w, 2) and flow.dtype == np.float32
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(flow, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(flow_fn(im1[0], im2[0]), expected[0], rtol=0, atol=ATOL)


def test_onnx_file_metadata_and_dynamic_inputs(raft_small_onnx):
    import onnx

    import jflow

    path, size, artifact, flow_fn, _ = raft_small_onnx
    assert size == path.stat().st_size
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["jflow"])
    assert meta == artifact.meta == flow_fn.meta
    assert meta["format"] == "onnx" and meta["model"] == "raft_small"
    assert meta["jflow_version"] == jflow.__version__ and meta["iters_effective"] == 1
    assert meta["verified"]["max_abs_diff_px"] < ATOL and meta["verified"]["shape"] == [1, 70, 75]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in proto.graph.input] == [
        ("image1", ["b", "h", "w", 3]), ("image2", ["b", "h", "w", 3])]
    assert [(o.name, dims(o)) for o in proto.graph.output] == [("flow", ["b", "h", "w", 2])]


def test_onnx_artifact_refuses_what_it_cannot_take(raft_small_onnx):
    flow_fn = raft_small_onnx[3]
    small = np.zeros((1, 32, 64, 3), np.float32)
    with pytest.raises(ExportError, match=r"do not fit this artifact: it takes \(b, h, w, 3\) "
                                          r"with h >= 64"):
        flow_fn(small, small)
    with pytest.raises(ExportError, match="one shape"):
        flow_fn(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 72, 3), np.float32))


def test_shape_checks_without_a_session():
    meta = {"shape": "b, 64, 96", "constraints": ["b <= 16"]}
    check_fits((3, 64, 96), meta)
    for bad in [(3, 64, 64), (17, 64, 96)]:
        with pytest.raises(ExportError, match=r"do not fit this artifact: it takes \(b, 64, 96, 3\)"):
            check_fits(bad, meta)
    assert probe_shape(meta) == (1, 64, 96)
    assert probe_shape({"shape": "b, h, w", "constraints": ["h >= 64", "w >= 64", "b >= 4"]}) == (
        4, 70, 75)


# Every model: the ONNX graph and the StableHLO artifact, both exported with the same shape spec,
# against FlowPredictor at two (B, H, W) that spec takes (one needing padding).
MODELS = {
    "raft": ("raft.py:smoke", {}, "b, h, w", (), [(1, 64, 96), (2, 70, 75)]),
    "gma": ("gma.py:smoke", {}, "b, h, w", (), [(1, 64, 96), (2, 70, 75)]),
    "deq_raft": ("deq_raft.py:smoke", {}, "b, h, w", (), [(1, 64, 96), (2, 70, 75)]),
    "deq_raft_fixed": ("deq_raft.py:smoke", {}, "1, 70, 75", (), [(1, 70, 75)]),  # window in Loop
    "deq_gma": ("deq_gma.py:smoke", {}, "b, h, w", (), [(1, 64, 96), (2, 70, 75)]),
    "dip": ("dip.py:smoke", {}, "1, 70, 75", (), [(1, 70, 75)]),
    "dip_jax_noise": ("dip.py:smoke", {"noise": "jax"}, "2, 64, 96", (), [(2, 64, 96)]),
    "sea_raft": ("sea_raft.py:S,smoke", {}, "b, h, w", (), [(1, 64, 96), (2, 70, 75)]),
    # LiteFlowNet2: batch only (host-side resize tables), one artifact per size, no constraints
    "liteflownet2": ("liteflownet2.py:smoke", {}, "b, 70, 75", (), [(1, 70, 75), (2, 70, 75)]),
    "liteflownet2_64x96": ("liteflownet2.py:smoke", {}, "b, 64, 96", (), [(2, 64, 96)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_onnx_and_stablehlo_match_flow_predictor(name, tmp_path):
    from jflow.export_onnx import export_onnx, load_onnx

    spec, overrides, shape, constraints, sizes = MODELS[name]
    config, model, variables = _setup(spec, **overrides)
    options = dict(iters=1, shape=shape, constraints=constraints)
    artifact = export_onnx(config, variables, verify=False, **options)
    onnx_fn = load_onnx(artifact.model_bytes)
    export_model(config, variables, **options).save(tmp_path / "m.zip")
    hlo_fn = load_exported(tmp_path / "m.zip")
    predictor = FlowPredictor(model, variables, iters=1, deq=is_deq(config))
    if is_deq(config):  # the solver's while_loop is an ONNX Loop
        import onnx

        assert "Loop" in {n.op_type for n in onnx.load_from_string(artifact.model_bytes).graph.node}
    for b, h, w in sizes:
        im1, im2 = _pair(b, h, w, np.float32, seed=b)
        expected = predictor.predict_batch(im1, im2)
        assert np.abs(expected).max() > 0.05, name
        got_onnx, got_hlo = onnx_fn(im1, im2), np.asarray(hlo_fn(im1, im2))
        print(f"{name} {(b, h, w)}: max |flow| {np.abs(expected).max():.3g} px, max diff ONNX "
              f"{np.abs(got_onnx - expected).max():.2g} px, StableHLO "
              f"{np.abs(got_hlo - expected).max():.2g} px")  # shown by pytest -rP
        np.testing.assert_allclose(got_onnx, expected, rtol=0, atol=ATOL, err_msg=name)
        np.testing.assert_allclose(got_hlo, expected, rtol=0, atol=ATOL, err_msg=name)
    with pytest.raises(ExportError, match="do not fit this artifact"):  # too small or fixed
        onnx_fn(*_pair(sizes[0][0], 32, 64, np.float32))


@pytest.mark.slow
def test_unrolled_iterations_share_their_constants():
    """Three unrolled iterations at a fixed size (where jax2onnx stores constant broadcasts as
    initializers, once per use) hold no two identical initializers and barely grow the file."""
    import onnx
    from onnx import numpy_helper

    from jflow.export_onnx import export_onnx

    config, _, variables = _setup("raft.py:small,smoke")
    size = {}
    for iters in (1, 3):
        artifact = export_onnx(config, variables, iters=iters, shape="1, 64, 96", verify=False)
        inits = onnx.load_from_string(artifact.model_bytes).graph.initializer
        keys = [(t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes()) for t in inits]
        assert len(set(keys)) == len(keys), iters
        size[iters] = len(artifact.model_bytes)
    print(f"RAFT-small smoke 64x96: {size[1]} bytes (1 iteration), {size[3]} (3)")
    assert size[3] <= 1.1 * size[1]


def test_what_cannot_be_converted_is_one_export_error(tmp_path):
    """Refused before converting (expressions in --shape, DIP with symbolic sizes) or while
    tracing (SEA-RAFT with scale != 0, LiteFlowNet2 with symbolic sizes), with the reason; an
    unwritable output leaves nothing behind."""
    from jflow.export_onnx import export_onnx

    config, _, variables = _setup("raft.py:small,smoke")
    with pytest.raises(ExportError, match="ONNX inputs have named or fixed dimensions"):
        export_onnx(config, variables, shape="b, 8*k, 8*l")
    for noise in ("jax", "torch"):
        dip_config, _, dip_variables = _setup("dip.py:smoke", noise=noise)
        with pytest.raises(ExportError, match="dip exports to ONNX at one size only"):
            export_onnx(dip_config, dip_variables, shape="b, h, w")
    for spec, overrides, why in [("sea_raft.py:S,smoke", {"scale": -1}, "scale != 0 resizes"),
                                 ("liteflownet2.py:smoke", {}, "resizes to a multiple of 32")]:
        fixed_config, _, fixed_variables = _setup(spec, **overrides)
        with pytest.raises(ExportError, match=f"cannot be converted with --shape='b, h, w': .*"
                                              f"{why}.*give H and W"):
            export_onnx(fixed_config, fixed_variables, shape="b, h, w")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write"):
        OnnxExport(b"onnx", {}).save(blocker / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_benchmark_times_onnxruntime_beside_the_jit():
    """``jflow.benchmark --format=onnx``'s measurement: the same weights and images, a fixed-size
    graph and the jit of the same function, compared and timed alternately."""
    from jflow.export_onnx import benchmark_onnx

    config = load_config("raft.py:small,smoke")
    record = benchmark_onnx(config, 64, 64, batch=1, iters=1, repeats=2)
    assert len(record["onnx_times_ms"]) == len(record["onnx_jit_times_ms"]) == 2
    assert record["onnx_time_ms"] > 0 and record["onnx_jit_time_ms"] > 0
    assert record["onnx_max_abs_diff_px"] < ATOL and record["onnx_convert_s"] > 0
    assert record["onnx_size_mib"] > 1 and record["jax2onnx_version"]
