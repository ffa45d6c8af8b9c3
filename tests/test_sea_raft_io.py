"""SEA-RAFT around the model: ``jflow.predict`` writes its uncertainty map as a picture, and
``jflow.convert`` reads the HuggingFace ``model.safetensors`` and ptlflow Lightning ``.ckpt``
forms (fixtures written in those formats)."""
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from jflow import io as jio
from jflow import viz
from jflow.predict import FlowPredictor, run_sequence, uncertainty_picture

REPO = pathlib.Path(__file__).resolve().parents[1]
HW = (20, 28)  # tiny, not a multiple of 8
CONFIG = f"{REPO}/configs/sea_raft.py:S,smoke"


def _config(spec=CONFIG):
    from jflow.config_files import load_config
    return load_config(spec)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (HW[0] + 4, HW[1] + 4, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[i:i + HW[0], i:i + HW[1]]) for i in range(3)]


@pytest.fixture(scope="module")
def predictor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return FlowPredictor.from_config(_config(), None, iters=1)


def test_uncertainty_pictures_pair_and_sequence(tmp_path, frames, predictor):
    flow, unc = predictor.predict_with_uncertainty(frames[0], frames[1])
    assert flow.shape == (*HW, 2) and unc.shape == HW and unc.dtype == np.float32
    assert predictor.outputs_uncertainty
    assert np.all((unc >= 0) & (unc <= 10))
    pic = uncertainty_picture(unc)
    np.testing.assert_array_equal(pic, viz.apply_colormap(unc, 10.0))
    # sequence mode: <stem>_uncertainty.png beside each flow, the picture of that pair's map
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        jio.write_image(d / f"f{i}.png", f)
    assert run_sequence(predictor, str(d), str(tmp_path / "out")) == 2
    assert sorted(os.listdir(tmp_path / "out")) == [
        "f0.flo", "f0.png", "f0_uncertainty.png", "f1.flo", "f1.png", "f1_uncertainty.png"]
    first = next(iter(predictor.predict_video(frames)))
    np.testing.assert_array_equal(first["uncertainty"], unc)
    np.testing.assert_array_equal(jio.read_image(tmp_path / "out" / "f0_uncertainty.png"), pic)


def _predict_cli(tmp_path, config, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JFLOW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "jflow.predict", f"--config={config}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_pair_uncertainty_and_its_errors(tmp_path, frames, predictor):
    for i in range(2):
        jio.write_image(tmp_path / f"f{i}.png", frames[i])
    pair = [f"--image1={tmp_path / 'f0.png'}", f"--image2={tmp_path / 'f1.png'}",
            f"--output={tmp_path / 'o' / 'flow.flo'}", "--iters=1"]
    proc = _predict_cli(tmp_path, CONFIG, *pair, f"--uncertainty={tmp_path / 'o' / 'unc.png'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, unc = predictor.predict_with_uncertainty(frames[0], frames[1])
    got = jio.read_image(tmp_path / "o" / "unc.png")
    assert got.shape == (*HW, 3)
    # same weights (seed 0), same picture up to float rounding across processes
    assert np.abs(got.astype(int) - uncertainty_picture(unc).astype(int)).max() <= 2
    # one-line errors, nothing written: not a picture; a model without uncertainty
    bad = _predict_cli(tmp_path, CONFIG, *pair, f"--uncertainty={tmp_path / 'o' / 'unc.flo'}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "--uncertainty" in bad.stderr and not (tmp_path / "o" / "unc.flo").exists()
    raft = _predict_cli(tmp_path, f"{REPO}/configs/raft.py:small,smoke", *pair[:2],
                        f"--output={tmp_path / 'r' / 'flow.flo'}", "--iters=1",
                        f"--uncertainty={tmp_path / 'r' / 'unc.png'}")
    assert raft.returncode == 1 and "Traceback" not in raft.stderr, raft.stderr[-3000:]
    assert "outputs no uncertainty" in raft.stderr and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------ convert

@pytest.fixture(scope="module")
def s_state():
    from golden_weights import GOLDEN_DIR, load_golden
    return load_golden(pathlib.Path(GOLDEN_DIR) / "sea_raft_s.npz").state_dict()


def _same_tree(a, b):
    import jax
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))


def test_safetensors_with_either_batchnorm_alias_and_lightning_ckpt(s_state, tmp_path):
    from safetensors.numpy import save_file

    from jflow import convert
    from jflow.checkpoint import load_checked
    from jflow.models import build_model, variable_shapes
    from jflow.torch_pickle import save_torch_state_dict

    shapes = variable_shapes(build_model({"name": "sea_raft", "size": "S"}))
    reference = convert.torch_to_flax(s_state, shapes)  # the official .pth layout
    # HuggingFace model.safetensors keeps one name of each shared (aliased) BatchNorm: either
    for drop in ("bn3", "downsample.1"):
        kept = {k: np.ascontiguousarray(v) for k, v in s_state.items() if f".{drop}." not in k}
        assert len(kept) == 256
        path = tmp_path / drop / "model.safetensors"
        path.parent.mkdir()
        save_file(kept, str(path))
        state = convert.load_state_dict(path)
        assert _same_tree(convert.torch_to_flax(state, shapes), reference)
    # ptlflow's Lightning .ckpt: a torch.save'd dict with the tensors under state_dict (here
    # with a model. prefix) beside epoch, versions and hyper-parameters
    ckpt = tmp_path / "sea_raft_s-things-0123abcd.ckpt"
    save_torch_state_dict({"epoch": 7, "global_step": 1000, "pytorch-lightning_version": "2.1.4",
                           "hyper_parameters": {"lr": 4e-4, "iters": 4, "loss": None},
                           "state_dict": {f"model.{k}": v for k, v in s_state.items()}}, ckpt)
    assert convert.load_state_dict(ckpt).keys() == s_state.keys()
    # end to end (the CLI's convert_checkpoint) from the safetensors file, bn3 dropped
    config = _config()
    out = convert.convert_checkpoint(config, tmp_path / "bn3" / "model.safetensors",
                                     tmp_path / "ck")
    loaded = load_checked(out, build_model(config.model), "sea_raft")
    assert _same_tree({k: loaded[k] for k in ("params", "batch_stats")}, reference)


def test_bad_safetensors_and_wrong_size_are_one_error(s_state, tmp_path):
    from safetensors.numpy import save_file

    from jflow import convert
    from jflow.errors import UserError

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(convert.ConversionError, match="model.safetensors: not a readable "
                       "safetensors file"):
        convert.load_state_dict(bad)
    assert issubclass(convert.ConversionError, UserError)
    # an S file for the M config: the size error, as for .pth files
    small = tmp_path / "s.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in s_state.items() if ".bn3." not in k},
              str(small))
    with pytest.raises(convert.ConversionError, match="is SEA-RAFT S .*configs/sea_raft.py:S"):
        convert.convert_checkpoint(_config(f"{REPO}/configs/sea_raft.py:M"), small,
                                   tmp_path / "m")
