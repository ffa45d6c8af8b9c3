"""Validation protocols and submission writers on tiny datasets in the real file formats."""
import csv
import json
import os

import numpy as np
import pytest

import configs_for_tests as cft
import fixtures_data as fx
from jflow import checkpoint, evaluate, geometry, io as jio
from jflow.data import build_source


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("datasets")
    fx.write_sintel(str(r))
    fx.write_kitti(str(r), n_train=2, n_test=2)
    return str(r)


def _recording_predictor(flow_fn):
    """A predictor returning ``flow_fn(image1)`` and recording its keyword arguments."""
    calls = []

    def predict(image1, image2, flow_init=None, state_init=None):
        calls.append({"flow_init": flow_init, "state_init": state_init})
        flow = flow_fn(image1)
        low = np.zeros((1, 2, 2, 2), np.float32)
        return {"flow": flow, "flow_low": low, "state": {"h": low[..., :1] + len(calls),
                                                         "flow": low}}

    return predict, calls


def test_protocol_settings():
    assert evaluate.padding_mode("kitti") == "kitti"
    assert evaluate.padding_mode("sintel_final") == "sintel"
    assert evaluate.dataset_family("things_clean") == "things"
    c = cft.smoke_config()
    c.eval.iters.sintel, c.eval.iters.kitti = 32, 24
    assert evaluate.eval_iters(c, "sintel_clean") == 32 and evaluate.eval_iters(c, "kitti") == 24


def test_validate_scores_against_ground_truth(root):
    src = build_source("kitti", root, "val")
    gts = [src[i] for i in range(len(src))]
    zeros, _ = _recording_predictor(lambda im: np.zeros(im.shape[:2] + (2,), np.float32))
    res = evaluate.validate(zeros, src, convention="kitti").metrics
    per_image = [np.linalg.norm(s["flow"], axis=-1)[s["valid"]] for s in gts]
    np.testing.assert_allclose(res["epe/per_image_mean"], np.mean([p.mean() for p in per_image]),
                               rtol=1e-6)
    np.testing.assert_allclose(res["epe/pooled"], np.concatenate(per_image).mean(), rtol=1e-6)
    assert res["epe"] == res["epe/per_image_mean"]  # KITTI headline: mean of per-image means
    mag = np.concatenate(per_image)
    np.testing.assert_allclose(res["fl_all/pooled"], 100 * np.mean((mag > 3) & (mag > 0.05 * mag)),
                               rtol=1e-6)
    it = iter(gts)
    exact, _ = _recording_predictor(lambda im: next(it)["flow"])
    assert evaluate.validate(exact, src, convention="kitti").metrics["epe"] == 0.0


def test_make_predictor_pads_and_unpads():
    model = cft.fake_model(cft.smoke_config())
    import jax
    import jax.numpy as jnp
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)))
    rng = np.random.default_rng(0)
    im1, im2 = (rng.integers(0, 255, (12, 20, 3), dtype=np.uint8) for _ in range(2))
    for mode in ("sintel", "kitti"):
        out = evaluate.make_predictor(model, variables, 2, mode)(im1, im2)
        assert out["flow"].shape == (12, 20, 2)
        padder = geometry.InputPadder((12, 20), 8, mode=mode)
        padded = [padder.pad(x[None].astype(np.float32))[0] for x in (im1, im2)]
        ref = jax.jit(lambda v, a, b: model.apply(v, a, b, train=False, iters=2))(
            variables, *padded)["flow"]
        np.testing.assert_allclose(out["flow"], padder.unpad(np.asarray(ref))[0], atol=1e-5)


def test_sintel_submission_names_and_warm_start_per_scene(root, tmp_path):
    sources = {p: build_source(f"sintel_{p}", root, "test") for p in ("clean", "final")}
    predict, calls = _recording_predictor(lambda im: np.full(im.shape[:2] + (2,), 1.5, np.float32))
    written = evaluate.write_sintel_submission(predict, sources, str(tmp_path), warm_start=True)
    rel = sorted(os.path.relpath(p, tmp_path) for p in written)
    expected = sorted(f"{p}/{s}/frame{k:04d}.flo" for p in ("clean", "final")
                      for s, n in (("alley_1_test", 2), ("bamboo_2_test", 1))
                      for k in range(1, n + 1))
    assert rel == expected
    # first pair of each scene starts cold; the second alley pair starts from the first
    assert [c["flow_init"] is None for c in calls] == [True, False, True] * 2
    assert all(c["state_init"] is None for c in calls)
    np.testing.assert_array_equal(jio.read_flo(written[0]), np.full((fx.H, fx.W, 2), 1.5))
    # DEQ fixed-point reuse: the previous h* and splatted flow*, never together with flow_init
    predict, calls = _recording_predictor(lambda im: np.zeros(im.shape[:2] + (2,), np.float32))
    evaluate.write_sintel_submission(predict, {"clean": sources["clean"]}, str(tmp_path / "r"),
                                     reuse_state=True)
    assert [c["state_init"] is None for c in calls] == [True, False, True]
    assert all(c["flow_init"] is None for c in calls)
    np.testing.assert_array_equal(calls[1]["state_init"]["h"], 1.0)  # from the first pair


def test_kitti_submission_png(root, tmp_path):
    predict, _ = _recording_predictor(
        lambda im: np.stack([np.full(im.shape[:2], -3.25), np.full(im.shape[:2], 7.5)], -1))
    written = evaluate.write_kitti_submission(predict, build_source("kitti", root, "test"),
                                              str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["000000_10.png", "000001_10.png"]
    flow, valid = jio.read_kitti_flow(written[0])
    assert valid.all()
    np.testing.assert_array_equal(flow[..., 0], -3.25)
    np.testing.assert_array_equal(flow[..., 1], 7.5)


def test_eval_mode_writes_table(root, tmp_path, monkeypatch, capsys):
    config = cft.smoke_config()
    model = cft.fake_model(config)
    import jflow.models
    monkeypatch.setattr(jflow.models, "model_from_config", cft.fake_model)
    import jax
    import jax.numpy as jnp
    v = model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)))
    checkpoint.save_checkpoint(tmp_path / "checkpoints", 7, v["params"], v["batch_stats"])
    config.eval.datasets = ("sintel_clean", "kitti", "synthetic")
    config.eval.root = root
    results = evaluate.evaluate_and_report(config, str(tmp_path))
    out = capsys.readouterr().out
    assert "epe/per_image_mean" in out and "kitti" in out
    with open(tmp_path / "eval_results.json") as f:
        saved = json.load(f)
    assert saved["meta"]["step"] == 7
    assert set(saved["results"]) == {"sintel_clean", "kitti", "synthetic"}
    assert saved["results"]["sintel_clean"]["images"] == 3  # 2 + 1 pairs
    with open(tmp_path / "eval_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["sintel_clean", "kitti", "synthetic"]
    np.testing.assert_allclose(float(rows[1]["epe/pooled"]), results["kitti"]["epe/pooled"])
