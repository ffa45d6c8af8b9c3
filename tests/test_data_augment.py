"""Augmentation: resize vs OpenCV, colour jitter semantics, and flow consistent with the
image transform (warping checks after scale, stretch and flips)."""
import colorsys

import numpy as np
import pytest
from PIL import Image

from jflow.data import Augmentor, AugmentParams, SyntheticFlow
from jflow.data import color
from jflow.data.augment import resize_sparse_flow
from jflow.data.resize import resize_bilinear
from tests.fixtures_data import warp


@pytest.fixture(scope="module")
def sample():
    return SyntheticFlow(1, 48, 64, seed=4, max_flow=10)[0]


def photometric(s):
    """(error with the flow, error without it) on valid pixels."""
    img1 = s["image1"].astype(np.float64)
    err = np.abs(warp(s["image2"], s["flow"]) - img1).mean(-1)[s["valid"]]
    zero = np.abs(s["image2"] - img1).mean(-1)[s["valid"]]
    return float(np.median(err)), float(np.median(zero))


def test_resize_matches_opencv():
    import cv2  # a dev dependency: missing is a failure, not a skip
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    flo = rng.standard_normal((23, 31, 2)).astype(np.float32)
    for fx, fy in ((1.7, 1.3), (0.6, 0.45), (1.0, 2.1)):
        ours, ref = resize_bilinear(img, fx, fy), cv2.resize(img, None, fx=fx, fy=fy,
                                                             interpolation=cv2.INTER_LINEAR)
        assert ours.shape == ref.shape and np.abs(ours.astype(int) - ref).max() <= 1
        np.testing.assert_allclose(resize_bilinear(flo, fx, fy),
                                   cv2.resize(flo, None, fx=fx, fy=fy,
                                              interpolation=cv2.INTER_LINEAR), atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(img, 0, 1)


def test_color_operations():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    for op in (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation):
        np.testing.assert_array_equal(op(img, 1.0), img)
    np.testing.assert_array_equal(color.adjust_hue(img, 0.0), img)
    assert not color.adjust_brightness(img, 0.0).any()
    half = color.adjust_brightness(img, 0.5).astype(int)
    assert np.abs(half - img / 2).max() <= 1
    gray = color.adjust_saturation(img, 0.0)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    np.testing.assert_array_equal(gray[..., 0], color.grayscale(img))
    flat = color.adjust_contrast(img, 0.0)
    assert (flat == int(color.grayscale(img).mean() + 0.5)).all()
    # Hue: PIL's 8-bit hue plus uint8(255 f), wrapping at 256 (torchvision); colorsys reference.
    sat = np.stack(np.meshgrid(np.arange(0, 256, 51), [0], [255], indexing="ij"), -1)
    sat = sat.reshape(1, -1, 3).astype(np.uint8)
    hue8 = np.asarray(Image.fromarray(sat).convert("HSV"))[0, :, 0].astype(int)
    for f in (0.34, -0.2):
        got = color.adjust_hue(sat, f)[0].astype(float)
        for px, h8, out in zip(sat[0] / 255.0, hue8, got):
            _, s_, v = colorsys.rgb_to_hsv(*px)
            h = ((h8 + int(f * 255)) % 256) / 255
            ref = 255 * np.array(colorsys.hsv_to_rgb(h, s_, v))
            assert np.abs(out - ref).max() <= 2, (px, f, out, ref)
    with pytest.raises(ValueError, match="hue"):
        color.adjust_hue(img, 0.7)
    jitter = color.ColorJitter()
    a = jitter(img, np.random.default_rng(5))
    np.testing.assert_array_equal(a, jitter(img, np.random.default_rng(5)))
    assert a.dtype == np.uint8 and not np.array_equal(a, img)


@pytest.mark.parametrize("hflip,vflip,scale,stretch", [
    (0.0, 0.0, 0.6, 0.0), (1.0, 0.0, 0.3, 1.0), (0.0, 1.0, 0.0, 1.0), (1.0, 1.0, 0.5, 0.0)])
def test_dense_spatial_keeps_flow_consistent(sample, hflip, vflip, scale, stretch):
    aug = Augmentor(crop=(40, 56), params=AugmentParams(False, scale, scale, True),
                    spatial_prob=1.0, stretch_prob=stretch, h_flip_prob=hflip, v_flip_prob=vflip)
    rng = np.random.default_rng(7)
    img1, img2, flow, valid = aug.spatial_dense(sample["image1"], sample["image2"],
                                                sample["flow"], sample["valid"], rng)
    assert img1.shape == (40, 56, 3) and flow.shape == (40, 56, 2) and valid.shape == (40, 56)
    out = dict(image1=img1, image2=img2, flow=flow, valid=valid)
    err, zero = photometric(out)
    assert valid.mean() > 0.5
    assert err < 2.5 and zero > 3 * err, (err, zero)


def test_flips_negate_flow(sample):
    aug = Augmentor(crop=(48, 64), params=AugmentParams(False, 0, 0, True), spatial_prob=0.0,
                    h_flip_prob=1.0, v_flip_prob=1.0)
    _, _, flow, valid = aug.spatial_dense(sample["image1"], sample["image2"], sample["flow"],
                                          sample["valid"], np.random.default_rng(0))
    np.testing.assert_array_equal(flow, -sample["flow"][::-1, ::-1])
    np.testing.assert_array_equal(valid, sample["valid"][::-1, ::-1])


def test_full_augmentor_deterministic_and_cropped(sample):
    aug = Augmentor(crop=(32, 40), params=AugmentParams(False, -0.2, 0.4, True))
    a = aug(sample, np.random.default_rng(3))
    b = aug(sample, np.random.default_rng(3))
    c = aug(sample, np.random.default_rng(4))
    for key in ("image1", "image2", "flow", "valid"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image1"], c["image1"])
    assert a["image1"].shape == (32, 40, 3) and a["flow"].dtype == np.float32
    assert a["valid"].dtype == bool and a["meta"] == sample["meta"]
    # A crop larger than the image is reached by scaling up first.
    big = Augmentor(crop=(64, 80), params=AugmentParams(False, 0, 0, False), spatial_prob=0.0)
    assert big(sample, np.random.default_rng(0))["image1"].shape == (64, 80, 3)


def test_dense_invalid_region_stays_invalid(sample):
    s = dict(sample, valid=np.ones((48, 64), bool))
    s["valid"][:, :20] = False
    aug = Augmentor(crop=(48, 64), params=AugmentParams(False, 0.5, 0.5, False),
                    spatial_prob=1.0, stretch_prob=0.0)
    _, _, _, valid = aug.spatial_dense(s["image1"], s["image2"], s["flow"], s["valid"],
                                       np.random.default_rng(0))
    assert valid.any() and not valid.all()


def test_eraser_only_touches_image2(sample):
    aug = Augmentor(crop=(48, 64), eraser_prob=1.0)
    img2 = aug.eraser(sample["image2"], np.random.default_rng(2))
    changed = (img2 != sample["image2"]).any(-1)
    assert changed.any()
    mean = sample["image2"].reshape(-1, 3).mean(0).astype(np.uint8)
    assert (img2[changed] == mean).all()


def test_sparse_resize_semantics():
    flow = np.zeros((4, 6, 2), np.float32)
    valid = np.zeros((4, 6), bool)
    pts = [(1, 1), (2, 4), (0, 3), (3, 5)]  # (y, x)
    for k, (y, x) in enumerate(pts):
        flow[y, x] = (k + 1, -(k + 1))
        valid[y, x] = True
    f2, v2 = resize_sparse_flow(flow, valid, 1.5, 2.0)
    assert f2.shape == (8, 9, 2) and v2.shape == (8, 9)
    # (1, 1) -> (2, 2); (2, 4) -> (4, 6); (0, 3): y' = 0 dropped (RAFT keeps 0 < y' < H');
    # (3, 5) -> (6, 8).
    assert set(zip(*np.nonzero(v2))) == {(2, 2), (4, 6), (6, 8)}
    np.testing.assert_allclose(f2[2, 2], [1.5, -2.0])
    np.testing.assert_allclose(f2[4, 6], [3.0, -4.0])
    assert not f2[~v2].any()


def test_sparse_augmentor_keeps_points_consistent(sample):
    rng = np.random.default_rng(0)
    valid = sample["valid"] & (rng.random(sample["valid"].shape) < 0.5)
    s = dict(sample, valid=valid, flow=np.where(valid[..., None], sample["flow"], 0))
    aug = Augmentor(crop=(40, 56), params=AugmentParams(True, 0.4, 0.4, True), spatial_prob=1.0,
                    h_flip_prob=1.0)
    img1, img2, flow, v = aug.spatial_sparse(s["image1"], s["image2"], s["flow"], s["valid"],
                                             np.random.default_rng(1))
    assert img1.shape == (40, 56, 3) and v.dtype == bool
    assert 0.1 < v.mean() < 0.6 and not flow[~v].any()
    err, zero = photometric(dict(image1=img1, image2=img2, flow=flow, valid=v))
    # Points snap to the nearest pixel (RAFT): up to half a pixel off, so looser than dense.
    assert err < 8 and zero > 2 * err, (err, zero)
    a = aug(s, np.random.default_rng(9))
    b = aug(s, np.random.default_rng(9))
    np.testing.assert_array_equal(a["flow"], b["flow"])
    assert a["flow"].shape == (40, 56, 2)
