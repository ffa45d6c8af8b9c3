"""jflow.export: StableHLO artifacts reload with plain JAX and give FlowPredictor's flow."""
import json
import warnings
import zipfile

import numpy as np
import pytest

from jflow.config_files import load_config
from jflow.export import ExportError, export_model, load_exported, read_artifact
from jflow.models import model_from_config, random_variables
from jflow.predict import FlowPredictor

ITERS = 1


def _setup(spec, **model_overrides):
    config = load_config(spec)
    for k, v in model_overrides.items():
        config.model[k] = v
    model = model_from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        variables = random_variables(model, 0)
    return config, model, variables


def _pair(batch, h, w, dtype, seed=0):
    rng = np.random.default_rng(seed)
    im1 = rng.integers(0, 256, (batch, h, w, 3)).astype(dtype)
    return im1, np.roll(im1, (1, 2), axis=(1, 2))


@pytest.fixture(scope="module")
def raft_small(tmp_path_factory):
    """RAFT-small (smoke config) exported once with symbolic batch, height and width."""
    config, model, variables = _setup("raft.py:small,smoke")
    path = tmp_path_factory.mktemp("export") / "raft_small.zip"
    size = export_model(config, variables, iters=ITERS, shape="b, h, w").save(path)
    predictor = FlowPredictor(model, variables, iters=ITERS)
    return path, size, predictor


@pytest.mark.parametrize("batch,h,w,dtype", [(2, 64, 64, np.float32), (1, 70, 75, np.uint8)])
def test_one_symbolic_artifact_matches_flow_predictor_at_two_sizes(raft_small, batch, h, w, dtype):
    """Sizes and batches the export never saw, one needing padding (70x75 -> 72x80) inside the
    graph; uint8 and float32 images."""
    path, _, predictor = raft_small
    flow_fn = load_exported(path)
    im1, im2 = _pair(batch, h, w, dtype)
    flow = np.asarray(flow_fn(im1, im2))
    expected = predictor.predict_batch(im1, im2)
    assert flow.shape == (batch, h, w, 2) and flow.dtype == np.float32
    assert np.abs(expected).max() > 0.1  # a real flow, not zeros
    np.testing.assert_allclose(flow, expected, rtol=0, atol=1e-5)


def test_metadata_and_plain_jax_module(raft_small):
    """meta.json records the config, versions and iterations; module.bin is a jax.export artifact
    with symbolic (b, h, w) that jax alone deserialises."""
    import jax

    import jflow

    path, size, _ = raft_small
    assert size == path.stat().st_size and size < 10 << 20
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["meta.json", "module.bin", "weights.npz"]
        meta = json.loads(z.read("meta.json"))
        exported = jax.export.deserialize(bytearray(z.read("module.bin")))
    assert meta["model"] == "raft_small" and meta["iters"] == ITERS
    assert meta["iters_effective"] == ITERS and meta["jflow_version"] == jflow.__version__
    assert meta["config"]["model"]["name"] == "raft_small" and meta["format"] == "stablehlo"
    assert meta["shape"] == "b, h, w" and meta["padding"]["multiple"] == 8
    assert str(exported.in_avals[-1].shape) == "(b, h, w, 3)"
    assert str(exported.out_avals[0].shape) == "(b, h, w, 2)"
    _, weights, _ = read_artifact(path)
    assert len(weights) == meta["num_weights"] == len(exported.in_avals) - 2


def test_artifact_refuses_what_it_cannot_take(raft_small):
    flow_fn = load_exported(raft_small[0])
    small = np.zeros((1, 32, 64, 3), np.float32)
    with pytest.raises(ExportError, match="do not fit this artifact.*h >= 64"):
        flow_fn(small, small)
    with pytest.raises(ExportError, match="one shape"):
        flow_fn(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 72, 3), np.float32))
    with pytest.raises(ExportError, match="uint8"):
        uint8_only = load_exported(raft_small[0])
        uint8_only.meta["input_dtype"] = "uint8"
        uint8_only(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 64, 3), np.float32))


def test_deq_raft_t_exports_with_its_solver_loop(tmp_path):
    """DEQ-RAFT-T (smoke): symbolic shapes, the solver's while_loop kept, FlowPredictor's flow."""
    config, model, variables = _setup("deq_raft.py:smoke")
    artifact = export_model(config, variables, iters=2, shape="b, h, w")
    assert "while" in artifact.exported.mlir_module()
    assert artifact.meta["deq"] and artifact.meta["iters_effective"] == 2
    artifact.save(tmp_path / "deq.zip")
    im1, im2 = _pair(1, 64, 72, np.uint8, seed=1)
    flow = np.asarray(load_exported(tmp_path / "deq.zip")(im1, im2))
    expected = FlowPredictor(model, variables, deq=True, iters=2).predict_batch(im1, im2)
    np.testing.assert_allclose(flow, expected, rtol=0, atol=1e-5)


def test_bad_options_are_export_errors(tmp_path):
    config, _, variables = _setup("raft.py:small,smoke")
    with pytest.raises(ExportError, match="three comma-separated"):
        export_model(config, variables, shape="b, h")
    with pytest.raises(ExportError, match="input_dtype"):
        export_model(config, variables, input_dtype="float16")
    dip_config, _, dip_variables = _setup("dip.py:smoke")
    with pytest.raises(ExportError, match="noise='torch' exports at one size only"):
        export_model(dip_config, dip_variables, shape="b, h, w")
    sea_config, _, sea_variables = _setup("sea_raft.py:S,smoke", scale=-1)  # Spring's resize
    with pytest.raises(ExportError, match="scale != 0 resizes the pair .* concrete sizes"):
        export_model(sea_config, sea_variables, shape="b, h, w")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    artifact = export_model(config, variables, iters=1, shape="1, 64, 64")
    with pytest.raises(ExportError, match="cannot write"):
        artifact.save(blocker / "out.zip")
    artifact.save(tmp_path / "fixed.zip")
    other = np.zeros((1, 64, 72, 3), np.float32)
    with pytest.raises(ExportError, match=r"do not fit this artifact: it takes \(1, 64, 64, 3\)"):
        load_exported(tmp_path / "fixed.zip")(other, other)


def _cli_error_lines(tmp_path, *args):
    """The stderr lines of ``python -m jflow.export ARGS``, which must exit with status 1."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jflow.export", *args], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 1, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize("case", ["unknown_format", "unwritable_output", "not_exportable"])
def test_cli_bad_input_is_one_error_line_and_no_file(tmp_path, case):
    """An unknown format, an output under a file, a model/option that cannot be exported
    (DIP's host-side torch noise with symbolic sizes): one ``error:`` line, nothing written."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "model.zip"
    args = {"unknown_format": ["--config=configs/raft.py:small", "--format=tflite"],
            "unwritable_output": ["--config=configs/raft.py:small,smoke"],
            "not_exportable": ["--config=configs/dip.py:smoke", "--shape=b, h, w"]}[case]
    if case == "unwritable_output":
        out = blocker / "model.zip"
    lines = _cli_error_lines(tmp_path, *args, f"--output={out}")
    expected = {"unknown_format": "error: --format 'tflite': unknown format (use one of "
                                  "stablehlo, onnx)",
                "unwritable_output": f"error: --output {out}: cannot write there ({blocker} "
                                     "is a file)",
                "not_exportable": "error: dip with noise='torch' exports at one size only "
                                  "(--shape='b, h, w' is symbolic)"}[case]
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and blocker.read_text() == "x"


def test_onnx_without_the_extra_is_one_export_error(monkeypatch):
    """CI installs .[dev] only: --format=onnx then names the extra to install."""
    import sys

    from jflow.export_onnx import export_onnx, onnx_available

    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    assert not onnx_available()
    config, _, variables = _setup("raft.py:small,smoke")
    with pytest.raises(ExportError, match=r"needs the optional extra jflow\[onnx\]"):
        export_onnx(config, variables, shape="1, 64, 64")


def test_cli_onnx_refuses_platforms_in_one_line(tmp_path):
    out = tmp_path / "model.onnx"
    lines = _cli_error_lines(tmp_path, "--config=configs/raft.py:small", "--format=onnx",
                             "--platforms=cpu", f"--output={out}")
    assert len(lines) == 1 and lines[0].startswith("error: --platforms applies to "
                                                    "--format=stablehlo only"), lines
    assert not out.exists() and not list(tmp_path.iterdir())
