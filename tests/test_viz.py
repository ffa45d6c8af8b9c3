"""jflow.viz: bit-identity with flow_vis, magnitude clipping, NaN handling, panels."""
import flow_vis
import numpy as np
import pytest

from jflow import io as jio
from jflow import viz


@pytest.fixture
def flow():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(24, 32, 2)) * 7).astype(np.float32)


def test_colorwheel_matches_flow_vis():
    np.testing.assert_array_equal(viz.make_colorwheel(), flow_vis.make_colorwheel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bgr", [False, True])
def test_flow_to_color_bit_identical(flow, dtype, bgr):
    f = flow.astype(dtype)
    f[0, 0] = 0.0
    f[1, 1] = [-3.0, 0.0]  # exactly on the wheel seam (a = 1)
    want = flow_vis.flow_to_color(f, clip_flow=None, convert_to_bgr=bgr)
    got = viz.flow_to_color(f, convert_to_bgr=bgr)
    assert got.dtype == np.uint8 and got.shape == (24, 32, 3)
    np.testing.assert_array_equal(got, want)


def test_max_flow_clips_magnitude_not_components():
    left = np.zeros((2, 2, 2), np.float32)
    left[..., 0] = -20.0
    rim = np.zeros((2, 2, 2), np.float32)
    rim[..., 0] = -10.0
    got = viz.flow_to_color(left, max_flow=10.0)
    np.testing.assert_array_equal(got, viz.flow_to_color(rim, max_flow=10.0))
    np.testing.assert_array_equal(got, flow_vis.flow_to_color(rim))  # rim colour, direction kept
    clipped_by_flow_vis = flow_vis.flow_to_color(left, clip_flow=10.0)
    assert not np.array_equal(got, clipped_by_flow_vis)  # flow_vis zeroes the negative u


def test_max_flow_shared_scale(flow):
    # the same max_flow gives the same picture for flow and for flow scaled with it
    np.testing.assert_array_equal(viz.flow_to_color(flow, max_flow=50.0),
                                  viz.flow_to_color(2 * flow, max_flow=100.0))
    # a fixed scale larger than the flow gives paler colours (closer to white) than auto
    auto = viz.flow_to_color(flow).astype(int).sum()
    fixed = viz.flow_to_color(flow, max_flow=100.0).astype(int).sum()
    assert fixed > auto
    with pytest.raises(ValueError, match="max_flow"):
        viz.flow_to_color(flow, max_flow=0)


def test_nan_pixels_black(flow):
    bad = flow.copy()
    bad[3, 4] = [np.nan, 1.0]
    bad[5, 6] = [np.inf, 0.0]
    got = viz.flow_to_color(bad)
    assert np.all(got[3, 4] == 0) and np.all(got[5, 6] == 0)
    clean = flow.copy()
    clean[3, 4] = 0
    clean[5, 6] = 0
    want = flow_vis.flow_to_color(clean)
    keep = np.ones((24, 32), bool)
    keep[3, 4] = keep[5, 6] = False
    np.testing.assert_array_equal(got[keep], want[keep])


def test_make_panel(tmp_path, flow):
    rng = np.random.default_rng(1)
    image1 = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    gt = flow + rng.normal(size=flow.shape).astype(np.float32)
    gt[0, 0] = [3.0, 4.0]
    pred = gt.copy()
    pred[0, 0] = [3.0, 4.0 + 20.0]  # EPE 20 -> top of the colormap
    valid = np.ones((24, 32), bool)
    valid[10:12] = False
    panel = viz.make_panel(image1, pred, gt, valid, titles=False)
    assert panel.shape == (24, 4 * 32, 3) and panel.dtype == np.uint8
    np.testing.assert_array_equal(panel[:, :32], image1)
    scale = np.linalg.norm(gt[valid], axis=-1).max()
    np.testing.assert_array_equal(panel[:, 32:64], viz.flow_to_color(pred, max_flow=scale))
    gt_tile = panel[:, 64:96]
    assert np.all(gt_tile[10:12] == 0)
    np.testing.assert_array_equal(gt_tile[:10], viz.flow_to_color(gt, max_flow=scale)[:10])
    epe_tile = panel[:, 96:]
    assert np.all(epe_tile[10:12] == 0)
    np.testing.assert_array_equal(epe_tile[0, 0], viz.apply_colormap(1e9, 10.0))
    np.testing.assert_array_equal(epe_tile[5, 5], viz.apply_colormap(0.0, 10.0))  # EPE 0
    assert viz.make_panel(image1, pred, titles=False).shape == (24, 64, 3)
    titled = viz.make_panel(image1, pred, gt, valid)
    assert titled.shape == panel.shape and not np.array_equal(titled[:8], panel[:8])
    np.testing.assert_array_equal(titled[16:], panel[16:])  # labels only at the top
    viz.save_panel(tmp_path / "p.png", image1, pred, gt, valid)
    np.testing.assert_array_equal(jio.read_image(tmp_path / "p.png"), titled)
    with pytest.raises(ValueError, match="flow must have shape"):
        viz.make_panel(image1, pred[:-1])


def test_apply_colormap_endpoints():
    cm = viz.apply_colormap(np.array([0.0, 5.0, 10.0, 50.0, np.nan]), 10.0)
    assert cm[0].tolist() == [68, 1, 84] and cm[2].tolist() == [253, 231, 37]
    assert cm[3].tolist() == cm[2].tolist() and cm[4].tolist() == [0, 0, 0]
    assert cm[1].tolist() == [38, 130, 142]


def test_colorwheel_legend():
    leg = viz.colorwheel_legend(33)
    assert leg.shape == (33, 33, 3) and leg.dtype == np.uint8
    assert leg[16, 16].tolist() == [255, 255, 255]  # zero flow is white
    assert leg[0, 0].tolist() == [255, 255, 255]  # outside the disc
    right, left = leg[16, 32], leg[16, 0]
    assert right.tolist() == [255, 0, 0]  # +x at the rim is pure red (wheel entry 0)
    assert left[0] < 60 and left[2] > 200  # -x is cyan-blue (entry 27)
