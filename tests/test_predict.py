"""FlowPredictor (single, batch, video) and `python -m jflow.predict` end to end on demo frames."""
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jflow import convert, geometry
from jflow import io as jio
from jflow.models import RAFT, variable_shapes
from jflow.predict import FlowPredictor, list_frames, run_sequence
from jflow.torch_pickle import save_torch_state_dict
from test_convert import official_raft_small_state_dict

ITERS = 2
SMALL_HW = (41, 96)  # neither a multiple of 8: padding is exercised
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def frames(sintel_demo_dir):
    """Three consecutive demo frames, downscaled to SMALL_HW."""
    out = []
    for i in (16, 17, 18):
        im = Image.open(sintel_demo_dir / f"frame_{i:04d}.png").convert("RGB")
        out.append(np.asarray(im.resize(SMALL_HW[::-1], Image.BILINEAR)))
    return out


@pytest.fixture(scope="module")
def predictor():
    model = RAFT(small=True, eval_iters=ITERS)
    variables = convert.torch_to_flax(official_raft_small_state_dict(seed=5),
                                      variable_shapes(model))
    return FlowPredictor(model, variables)


def test_predict_any_size(predictor, frames):
    flow = predictor.predict(frames[0], frames[1])
    assert flow.shape == (*SMALL_HW, 2) and flow.dtype == np.float32
    assert np.all(np.isfinite(flow)) and np.abs(flow).max() > 0
    # float 0..255 input and an RGBA image (alpha dropped) give the same flow
    rgba = np.concatenate([frames[1], np.full((*SMALL_HW, 1), 255, np.uint8)], -1)
    again = predictor.predict(frames[0].astype(np.float32), rgba)
    np.testing.assert_allclose(again, flow, atol=1e-5)


def test_batch_equals_pair_by_pair(predictor, frames):
    batch = predictor.predict_batch(np.stack(frames[:2]), np.stack(frames[1:]))
    assert batch.shape == (2, *SMALL_HW, 2)
    for i in range(2):
        single = predictor.predict(frames[i], frames[i + 1])
        # Random weights give flows of ~100 px whose iterations amplify float32 rounding (batched
        # convolutions sum in another order): compare relative to the flow's size.
        assert np.abs(batch[i] - single).max() <= 1e-3 * np.abs(single).max()


def test_bad_inputs_are_named(predictor, frames):
    with pytest.raises(ValueError, match="image2 .* same size"):
        predictor.predict(frames[0], frames[1][:-8])
    with pytest.raises(ValueError, match="predict_batch"):
        predictor.predict_batch(frames[0], frames[1])


def test_video_warm_start_and_scene_reset(predictor, frames):
    warm = list(predictor.predict_video(frames))
    cold = list(predictor.predict_video(frames, reuse=False))
    assert [o["index"] for o in warm] == [0, 1]
    assert [o["reset"] for o in warm] == [True, False]
    np.testing.assert_allclose(warm[0]["flow"], cold[0]["flow"], atol=1e-5)
    assert np.abs(warm[1]["flow"] - cold[1]["flow"]).max() > 1e-3  # warm start changes pair 2
    # Warm start is RAFT's: the previous 1/8 flow, forward-interpolated, as flow_init.
    _, out0 = predictor._forward(frames[0], frames[1])
    init = geometry.forward_interpolate(np.asarray(out0["flow_low"]))
    expected, _ = predictor._forward(frames[1], frames[2], flow_init=jnp.asarray(init))
    np.testing.assert_allclose(warm[1]["flow"], expected[0], atol=1e-5)
    # A scene change starts over: no pair across scenes, first pair of the new scene is cold.
    split = list(predictor.predict_video(frames, scene_ids=["a", "b", "b"]))
    assert [(o["index"], o["reset"]) for o in split] == [(1, True)]
    np.testing.assert_allclose(split[0]["flow"], cold[1]["flow"], atol=1e-5)


def test_list_frames_scenes(tmp_path, frames):
    for scene in ("b", "a"):
        (tmp_path / scene).mkdir()
        for i in range(2):
            jio.write_image(tmp_path / scene / f"f{i}.png", frames[i])
    assert [(s, len(f)) for s, f in list_frames(str(tmp_path))] == [("a", 2), ("b", 2)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_frames(str(tmp_path / "empty"))


def test_cli_end_to_end_with_converted_checkpoint(tmp_path, frames, predictor):
    """official-layout .pth -> jflow.convert -> orbax -> jflow.predict; sequence mode without a
    checkpoint warns about random weights."""
    import cv2

    pth = tmp_path / "raft-small-synthetic.pth"
    save_torch_state_dict(official_raft_small_state_dict(seed=5), pth)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, f in enumerate(frames):
        jio.write_image(frames_dir / f"frame_{i:04d}.png", f)
    config = f"{REPO}/configs/raft.py:small,smoke"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    conv = run("jflow.convert", f"--config={config}", f"--torch_checkpoint={pth}",
               f"--output={tmp_path / 'ckpt'}")
    assert conv.returncode == 0, conv.stderr[-3000:]
    again = run("jflow.convert", f"--config={config}", f"--torch_checkpoint={pth}",
                f"--output={tmp_path / 'ckpt'}")  # the same --output twice: refused, kept
    assert again.returncode == 1 and "already holds" in again.stderr, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    pair = run("jflow.predict", f"--config={config}", f"--checkpoint={tmp_path / 'ckpt'}",
               f"--image1={frames_dir / 'frame_0000.png'}",
               f"--image2={frames_dir / 'frame_0001.png'}", f"--output={tmp_path / 'flow.flo'}",
               f"--viz={tmp_path / 'flow.png'}", f"--iters={ITERS}")
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert "RANDOM" not in pair.stdout + pair.stderr
    flo = cv2.readOpticalFlow(str(tmp_path / "flow.flo"))
    np.testing.assert_allclose(flo, predictor.predict(frames[0], frames[1]), atol=1e-4)
    assert jio.read_image(tmp_path / "flow.png").shape == (SMALL_HW[0], 2 * SMALL_HW[1], 3)
    seq = run("jflow.predict", f"--config={config}", f"--frames_dir={frames_dir}",
              f"--output_dir={tmp_path / 'out'}", "--iters=1")
    assert seq.returncode == 0, seq.stderr[-3000:]
    assert "RANDOM weights" in seq.stderr  # no --checkpoint: said loudly
    assert len([f for f in os.listdir(tmp_path / "out") if f.endswith(".flo")]) == 2


def test_sequence_mode_writes_one_flow_and_picture_per_pair(tmp_path, predictor, frames):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, f in enumerate(frames):
        jio.write_image(frames_dir / f"frame_{i:04d}.png", f)
    assert run_sequence(predictor, str(frames_dir), str(tmp_path / "out")) == 2
    written = sorted(os.listdir(tmp_path / "out"))
    assert written == ["frame_0000.flo", "frame_0000.png", "frame_0001.flo", "frame_0001.png"]
    warm = list(predictor.predict_video(frames))
    np.testing.assert_array_equal(jio.read_flo(tmp_path / "out" / "frame_0001.flo"),
                                  warm[1]["flow"])


def test_random_weights_warn_and_checkpoint_mismatch_is_named(tmp_path):
    small = _config("raft", "small,smoke")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        p = FlowPredictor.from_config(small, None, iters=1)
    assert set(p.variables) == {"params"}
    # a RAFT-small checkpoint does not fit RAFT: refused with the reason
    from jflow.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "ck", 0, p.variables["params"], meta={"model": "raft_small"})
    with pytest.raises(ValueError, match="holds a 'raft_small' model"):
        FlowPredictor.from_config(_config("raft", None), tmp_path / "ck")


def _config(name, arg):
    from jflow.config_files import load_config

    return load_config(f"{REPO}/configs/{name}.py" + (f":{arg}" if arg else ""))


def test_deq_video_reuses_the_fixed_point_and_reports_solver_stats(frames):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        deq = FlowPredictor.from_config(_config("deq_raft", "T,smoke"), None, iters=4)
    assert deq.deq
    reused = list(deq.predict_video(frames))
    cold = list(deq.predict_video(frames, reuse=False))
    for out in reused:
        assert 1 <= out["stats"]["nstep"] <= 4
        assert np.isfinite(out["stats"]["abs_lowest"]) and np.isfinite(out["stats"]["rel_lowest"])
    np.testing.assert_allclose(reused[0]["flow"], cold[0]["flow"], atol=1e-5)
    # pair 2 starts from pair 1's fixed point h* and its forward-interpolated flow
    _, out0 = deq._forward(frames[0], frames[1])
    state = {"h": out0["state"]["h"],
             "flow": jnp.asarray(geometry.forward_interpolate(np.asarray(out0["state"]["flow"])))}
    expected, _ = deq._forward(frames[1], frames[2], state_init=state)
    np.testing.assert_allclose(reused[1]["flow"], expected[0], atol=1e-5)
    assert np.abs(reused[1]["flow"] - cold[1]["flow"]).max() > 1e-4


def _predict_cli(tmp_path, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JFLOW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "jflow.predict",
                           f"--config={REPO}/configs/raft.py:small,smoke", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def _bad_frames(tmp_path, frames, case):
    """A frames folder (or pair) broken in one way; returns (CLI args, text the error must name)."""
    d = tmp_path / "frames"
    d.mkdir()
    out = [f"--output_dir={tmp_path / 'out'}"]
    if case == "missing_dir":
        return [f"--frames_dir={tmp_path / 'nowhere'}", *out], "nowhere"
    if case == "empty_dir":
        return [f"--frames_dir={d}", *out], "no images"
    jio.write_image(d / "a.png", frames[0])
    if case == "one_image":
        return [f"--frames_dir={d}", *out], "at least two frames"
    jio.write_image(d / "b.png", frames[1][:-8])
    if case == "mixed_sizes":
        return [f"--frames_dir={d}", *out], "b.png"
    if case == "pair_sizes":
        return [f"--image1={d / 'a.png'}", f"--image2={d / 'b.png'}",
                f"--output={tmp_path / 'out' / 'f.flo'}"], "b.png"
    if case == "bad_output":
        return [f"--image1={d / 'a.png'}", f"--image2={d / 'a.png'}",
                f"--output={tmp_path / 'out' / 'f.txt'}"], "f.txt"
    if case == "zero_iters":
        return [f"--image1={d / 'a.png'}", f"--image2={d / 'a.png'}",
                f"--output={tmp_path / 'out' / 'f.flo'}", "--iters=0"], "--iters"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_dir", "empty_dir", "one_image", "mixed_sizes",
                                  "pair_sizes", "bad_output", "zero_iters"])
def test_cli_user_errors_are_one_line(tmp_path, frames, case):
    """Each bad input: exit 1, one ``error:`` line naming the file/flag, no traceback, nothing
    written."""
    args, named = _bad_frames(tmp_path, frames, case)
    proc = _predict_cli(tmp_path, *args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_too_large_inputs_are_refused_before_compiling(predictor):
    from jflow.errors import InputError
    from jflow.predict import check_memory

    with pytest.raises(InputError, match=r"8000x8000 input needs about .*GiB.*on_the_fly"):
        check_memory(predictor.model, (1, 8000, 8000, 3))
    check_memory(predictor.model, (1, 440, 1024, 3), available=64 * 2.0**30)  # fits: no error
    with pytest.raises(InputError, match="440 input needs about 0.2 GiB"):
        check_memory(predictor.model, (1, 440, 1024, 3), available=0.1 * 2.0**30)
