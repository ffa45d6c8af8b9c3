"""The procedural synthetic dataset: determinism, contract, and exact ground truth."""
import numpy as np
import pytest

from jflow.data import SyntheticFlow
from jflow.data.textures import procedural_texture, texture_bank
from tests.fixtures_data import warp


@pytest.fixture(scope="module")
def dataset():
    return SyntheticFlow(6, 48, 64, seed=11)


def test_deterministic_and_distinct(dataset):
    again = SyntheticFlow(6, 48, 64, seed=11)
    for i in (0, 5):
        a, b = dataset[i], again[i]
        for key in ("image1", "image2", "flow", "valid"):
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(dataset[0]["image1"], dataset[1]["image1"])
    other = SyntheticFlow(6, 48, 64, seed=12)
    assert not np.array_equal(dataset[0]["flow"], other[0]["flow"])
    np.testing.assert_array_equal(dataset[-1]["flow"], dataset[5]["flow"])
    with pytest.raises(IndexError):
        dataset[6]


def test_contract_and_any_resolution():
    for h, w in ((48, 64), (37, 53), (9, 200)):
        s = SyntheticFlow(1, h, w, seed=0)[0]
        assert s["image1"].shape == s["image2"].shape == (h, w, 3)
        assert s["image1"].dtype == np.uint8 and s["flow"].dtype == np.float32
        assert s["flow"].shape == (h, w, 2) and s["valid"].dtype == bool
        assert s["meta"]["dataset"] == "synthetic" and s["meta"]["has_gt"]


def test_warping_image2_by_flow_reproduces_image1(dataset):
    """The photometric check: on visible pixels, image2(x + flow(x)) == image1(x)."""
    all_errs = []
    for i in range(len(dataset)):
        s = dataset[i]
        img1 = s["image1"].astype(np.float64)
        err = np.abs(warp(s["image2"], s["flow"]) - img1).mean(-1)
        valid = s["valid"]
        assert 0.5 < valid.mean() < 1.0  # some occlusion, mostly visible
        # Bilinear re-interpolation of a resampled texture: about a grey level, more at
        # layer edges and on sharp stripes.
        assert np.median(err[valid]) < 2.5, i
        assert err[valid].mean() < 5.0, i
        # The flow matters: without it the error is far larger.
        zero = np.abs(s["image2"].astype(np.float64) - img1).mean(-1)
        assert zero[valid].mean() > 3 * err[valid].mean(), i
        all_errs.append(err[valid])
    assert np.median(np.concatenate(all_errs)) < 1.0


def test_occluded_pixels_do_not_match(dataset):
    """Occluded pixels (valid False inside the frame) are where the warp check fails."""
    errs = []
    for i in range(len(dataset)):
        s = dataset[i]
        h, w = s["valid"].shape
        yy, xx = np.mgrid[0:h, 0:w]
        tx, ty = xx + s["flow"][..., 0], yy + s["flow"][..., 1]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        occluded = inside & ~s["valid"]
        if occluded.sum() > 20:
            err = np.abs(warp(s["image2"], s["flow"]) - s["image1"]).mean(-1)
            errs.append((err[occluded].mean(), err[s["valid"]].mean()))
    assert errs and all(occ > 2 * vis for occ, vis in errs)


def test_displacements_and_options():
    ds = SyntheticFlow(8, 64, 96, seed=3)
    mags = np.concatenate([np.linalg.norm(ds[i]["flow"], axis=-1).ravel() for i in range(8)])
    assert np.percentile(mags, 50) < 16 and mags.max() > 2
    big = SyntheticFlow(8, 64, 96, seed=3, max_flow=60, large_motion_prob=1.0)
    big_mags = np.concatenate([np.linalg.norm(big[i]["flow"], axis=-1).ravel()
                               for i in range(8)])
    assert np.percentile(big_mags, 90) > 2 * np.percentile(mags, 90)
    assert SyntheticFlow(1, 32, 32, occluded_valid=True)[0]["valid"].all()
    with pytest.raises(ValueError, match="num_layers"):
        SyntheticFlow(1, 32, 32, num_layers=(4, 2))


def test_textures_are_rich():
    rng = np.random.default_rng(0)
    for kind in ("noise", "stripes", "checker", "blobs", "gradient"):
        tex = procedural_texture(rng, 64, kind).astype(np.float64)
        assert tex.shape == (64, 64, 3)
        # Local structure everywhere: neighbouring pixels differ.
        grad = np.abs(np.diff(tex, axis=1)).mean(-1)
        assert np.percentile(grad, 25) > 0.5, kind
    bank = texture_bank()
    assert len(bank) >= 24 and all(t.dtype == np.uint8 for t in bank)
    with pytest.raises(ValueError, match="unknown kind"):
        procedural_texture(rng, 8, "plaid")


def test_motion_has_rotation_scaling_and_occlusion(dataset):
    """Non-translational motion: inside a layer the GT flow is affine, ``(M - I)(p - c) + t``,
    with curl ``m10 - m01`` (rotation) and divergence ``tr(M) - 2`` (scaling); a translation-only
    dataset would give curl = div = 0 away from layer edges. Layers move differently, and
    surfaces get occluded (invalid although they land inside frame 2)."""
    curls, divs, occluded = [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        u, v = (s["flow"][..., k].astype(np.float64) for k in (0, 1))
        dx = lambda c: c[1:-1, 2:] - c[1:-1, 1:-1]  # noqa: E731
        dy = lambda c: c[2:, 1:-1] - c[1:-1, 1:-1]  # noqa: E731
        affine = np.ones(u[1:-1, 1:-1].shape, bool)  # no layer edge in the 3x3 cross
        for c in (u, v):
            affine &= np.abs(c[1:-1, 2:] - 2 * c[1:-1, 1:-1] + c[1:-1, :-2]) < 1e-3
            affine &= np.abs(c[2:, 1:-1] - 2 * c[1:-1, 1:-1] + c[:-2, 1:-1]) < 1e-3
        assert affine.mean() > 0.5, i
        curl, div = (dx(v) - dy(u))[affine], (dx(u) + dy(v))[affine]
        curls.append(curl)
        divs.append(div)
        # several layers with different motions: several distinct curl values, each frequent
        values, counts = np.unique(np.round(curl, 3), return_counts=True)
        assert (counts > 20).sum() >= 2, (i, values, counts)
        h, w = s["valid"].shape
        yy, xx = np.mgrid[0:h, 0:w]
        tx, ty = xx + s["flow"][..., 0], yy + s["flow"][..., 1]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        occluded.append((inside & ~s["valid"]).mean())
    curls, divs = np.concatenate(curls), np.concatenate(divs)
    assert (np.abs(curls) > 1e-2).mean() > 0.5  # measured: every affine pixel, |curl| 0.04-0.3
    assert (np.abs(divs) > 1e-2).mean() > 0.5  # measured: 87 %, |div| up to 0.2
    assert sum(o > 0.005 for o in occluded) >= len(occluded) // 2, occluded
