"""jflow.geometry against float64 numpy references written here (loops, no shared code)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import interpolate, ndimage

from jflow import geometry as geo


def ref_bilinear(img, coords, padding):
    """Per-point float64 bilinear sample, torch grid_sample(align_corners=True) semantics."""
    img = np.asarray(img, np.float64)
    b, h, w, c = img.shape
    pts = np.asarray(coords, np.float64).reshape(b, -1, 2)
    out = np.zeros((b, pts.shape[1], c))
    for n in range(b):
        for p, (x, y) in enumerate(pts[n]):
            if padding == "border":
                x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    if 0 <= xi < w and 0 <= yi < h:
                        out[n, p] += wx * wy * img[n, yi, xi]
    return out.reshape(*np.shape(coords)[:-1], c)


@pytest.fixture(scope="module")
def img_coords():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    coords = np.stack([rng.uniform(-2.5, 8.5, size=(2, 6, 9)),
                       rng.uniform(-2.5, 6.5, size=(2, 6, 9))], axis=-1)
    coords[0, 0, :4] = [[0, 0], [6, 4], [3, 2], [-1, 2]]  # exact pixels and an out-of-range one
    coords[0, 1, :3] = [[6.5, 2], [3, 4.25], [-0.5, -0.5]]  # half outside the last column/row
    return img, coords.astype(np.float32)


def test_coords_grid_layout():
    g = np.asarray(geo.coords_grid(2, 3, 4))
    assert g.shape == (2, 3, 4, 2)
    assert g[1, 2, 3].tolist() == [3.0, 2.0]  # channel 0 = x
    assert g[0, 1, 0].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_sample_matches_reference(img_coords, padding):
    img, coords = img_coords
    out = np.asarray(geo.bilinear_sample(img, coords, padding=padding))
    assert out.shape == (2, 6, 9, 3)
    np.testing.assert_allclose(out, ref_bilinear(img, coords, padding), atol=2e-5)


def test_bilinear_sample_matches_scipy(img_coords):
    img, coords = img_coords
    out = np.asarray(geo.bilinear_sample(img, coords))
    for n in range(2):
        for ch in range(3):
            want = ndimage.map_coordinates(
                img[n, ..., ch].astype(np.float64), [coords[n, ..., 1], coords[n, ..., 0]],
                order=1, mode="grid-constant", cval=0.0)
            np.testing.assert_allclose(out[n, ..., ch], want, atol=2e-5)


def test_bilinear_sample_edges(img_coords):
    img = img_coords[0]
    pts = np.array([[[6.0, 4.0], [6.5, 4.0], [7.0, 4.0], [-1.0, 0.0], [-0.5, 0.0]]] * 2, np.float32)
    out = np.asarray(geo.bilinear_sample(img, pts))
    np.testing.assert_allclose(out[0, 0], img[0, 4, 6], atol=1e-6)  # last pixel exactly
    np.testing.assert_allclose(out[0, 1], 0.5 * img[0, 4, 6], atol=1e-6)  # half zero padding
    np.testing.assert_allclose(out[0, 2], 0.0)
    np.testing.assert_allclose(out[0, 3], 0.0)
    np.testing.assert_allclose(out[0, 4], 0.5 * img[0, 0, 0], atol=1e-6)
    border = np.asarray(geo.bilinear_sample(img, pts, padding="border"))
    np.testing.assert_allclose(border[0, 2], img[0, 4, 6], atol=1e-6)
    np.testing.assert_allclose(border[0, 3], img[0, 0, 0], atol=1e-6)


def test_bilinear_sample_jit_and_gradients(img_coords):
    img, _ = img_coords
    pts = jnp.array([[[2.3, 1.6]], [[4.7, 3.2]]], jnp.float32)
    f = jax.jit(lambda im, c: geo.bilinear_sample(im, c).sum())
    g_img, g_xy = jax.grad(f, argnums=(0, 1))(jnp.asarray(img), pts)
    # d/d img = bilinear weights at the four corners of (2.3, 1.6)
    g = np.asarray(g_img)[0, ..., 0]
    assert g[1, 2] == pytest.approx(0.7 * 0.4, abs=1e-6)
    assert g[2, 3] == pytest.approx(0.3 * 0.6, abs=1e-6)
    assert g.sum() == pytest.approx(1.0, abs=1e-6)
    # d/d coords by central differences in float64 on the reference
    eps = 1e-3
    for n in range(2):
        for k in range(2):
            d = np.zeros((2, 1, 2))
            d[n, 0, k] = eps
            fd = (ref_bilinear(img, pts + d, "zeros").sum()
                  - ref_bilinear(img, pts - d, "zeros").sum()) / (2 * eps)
            assert float(g_xy[n, 0, k]) == pytest.approx(fd, abs=1e-3)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_grid_sample_matches_reference(img_coords, align_corners, padding):
    img, _ = img_coords
    rng = np.random.default_rng(1)
    grid = rng.uniform(-1.4, 1.4, size=(2, 4, 5, 2)).astype(np.float32)
    h, w = img.shape[1:3]
    size = np.array([w, h], np.float64)
    g64 = grid.astype(np.float64)
    pix = (g64 + 1) / 2 * (size - 1) if align_corners else ((g64 + 1) * size - 1) / 2
    if padding == "border":
        pix = np.clip(pix, 0, size - 1)
    want = ref_bilinear(img, pix, "zeros")
    out = geo.grid_sample(img, grid, align_corners=align_corners, padding=padding)
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-5)


def test_grid_sample_identity_grids(img_coords):
    img, _ = img_coords
    h, w = img.shape[1:3]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centres = np.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], -1)[None].repeat(2, 0)
    out = geo.grid_sample(img, centres.astype(np.float32), align_corners=False)
    np.testing.assert_allclose(np.asarray(out), img, atol=1e-5)
    corners = np.stack([2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1], -1)[None].repeat(2, 0)
    out = geo.grid_sample(img, corners.astype(np.float32), align_corners=True)
    np.testing.assert_allclose(np.asarray(out), img, atol=1e-5)


def test_bad_padding_name(img_coords):
    with pytest.raises(ValueError, match="padding"):
        geo.bilinear_sample(img_coords[0], img_coords[1], padding="reflect")


def test_backward_warp_integer_shift():
    rng = np.random.default_rng(2)
    img2 = rng.normal(size=(1, 12, 14, 3)).astype(np.float32)
    dx, dy = 3, -2
    img1 = np.zeros_like(img2)
    img1[:, 2:, :-3] = img2[:, :-2, 3:]  # img1(x, y) = img2(x + dx, y + dy)
    flow = np.broadcast_to(np.array([dx, dy], np.float32), (1, 12, 14, 2))
    warped = np.asarray(geo.backward_warp(img2, flow))
    np.testing.assert_allclose(warped[:, 2:, :-3], img1[:, 2:, :-3], atol=1e-6)
    assert np.all(warped[:, :2] == 0) and np.all(warped[:, :, -3:] == 0)  # sampled outside
    unbatched = np.asarray(geo.backward_warp(img2[0], flow[0]))
    np.testing.assert_array_equal(unbatched, warped[0])


@pytest.mark.parametrize("mode", ["sintel", "kitti"])
@pytest.mark.parametrize("hw", [(13, 21), (16, 24), (9, 7)])
def test_input_padder_round_trip(mode, hw):
    h, w = hw
    rng = np.random.default_rng(3)
    a4 = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    a3 = a4[0]
    padder = geo.InputPadder((h, w), mode=mode)
    p4, p3 = padder.pad(a4, a3)
    hp, wp = padder.padded_hw
    assert p4.shape == (2, hp, wp, 3) and p3.shape == (hp, wp, 3)
    assert hp % 8 == 0 and wp % 8 == 0 and 0 <= hp - h < 8 and 0 <= wp - w < 8
    assert isinstance(p4, np.ndarray)
    np.testing.assert_array_equal(padder.unpad(p4), a4)
    np.testing.assert_array_equal(padder.unpad(p3), a3)
    (pj,) = padder.pad(jnp.asarray(a4))
    assert isinstance(pj, jax.Array)
    np.testing.assert_array_equal(np.asarray(pj), p4)
    np.testing.assert_array_equal(np.asarray(padder.unpad(pj)), a4)


def test_input_padder_splits_and_replicate():
    a = np.arange(13 * 21, dtype=np.float32).reshape(13, 21, 1)
    s = geo.InputPadder((13, 21), mode="sintel")  # pad h 3, w 3
    assert (s.top, s.bottom, s.left, s.right) == (1, 2, 1, 2)
    k = geo.InputPadder((13, 21), mode="kitti")
    assert (k.top, k.bottom, k.left, k.right) == (0, 3, 1, 2)
    (p,) = s.pad(a)
    np.testing.assert_array_equal(p[0, 1:-2], a[0])  # replicated top row
    np.testing.assert_array_equal(p[-1, 1:-2], a[-1])
    np.testing.assert_array_equal(p[1:-2, 0], a[:, 0])
    (z,) = geo.InputPadder((13, 21), fill="zeros").pad(a)
    assert z[0].sum() == 0 and z[1:-2, 1:-2].sum() == a.sum()
    with pytest.raises(ValueError, match="spatial size"):
        s.unpad(a)
    with pytest.raises(ValueError, match="mode"):
        geo.InputPadder((13, 21), mode="chairs")


def ref_convex_upsample(flow, mask, r):
    """Direct float64 loops over output pixels of RAFT's formula."""
    b, h, w, _ = flow.shape
    out = np.zeros((b, r * h, r * w, 2))
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for a in range(r):
                    for c in range(r):
                        logits = np.array([mask[n, y, x, k * r * r + a * r + c] for k in range(9)],
                                          np.float64)
                        wts = np.exp(logits - logits.max())
                        wts /= wts.sum()
                        acc = np.zeros(2)
                        for k in range(9):
                            yy, xx = y + k // 3 - 1, x + k % 3 - 1
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += wts[k] * r * flow[n, yy, xx]
                        out[n, r * y + a, r * x + c] = acc
    return out


def test_convex_upsample_matches_reference():
    rng = np.random.default_rng(4)
    r = 4
    flow = rng.normal(size=(2, 3, 4, 2)).astype(np.float32)
    mask = rng.normal(size=(2, 3, 4, 9 * r * r)).astype(np.float32) * 2
    out = np.asarray(geo.convex_upsample(flow, mask, rate=r))
    assert out.shape == (2, 12, 16, 2)
    np.testing.assert_allclose(out, ref_convex_upsample(flow, mask, r), atol=1e-5)
    half = geo.convex_upsample(flow, jnp.asarray(mask, jnp.bfloat16), rate=r)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(half), out, atol=0.1)


def test_convex_upsample_constant_flow():
    rng = np.random.default_rng(5)
    flow = np.broadcast_to(np.array([1.5, -2.0], np.float32), (1, 5, 6, 2))
    mask = rng.normal(size=(1, 5, 6, 9 * 64)).astype(np.float32)
    out = np.asarray(geo.convex_upsample(flow, mask, rate=8))
    np.testing.assert_allclose(out[:, 8:-8, 8:-8], np.broadcast_to([12.0, -16.0], (1, 24, 32, 2)),
                               atol=1e-5)
    # zero-padded unfold: boundary blocks are pulled towards 0
    assert np.all(np.abs(out[:, :8, :, 0]) < 12.0 - 1e-3)


def test_upflow():
    flow = np.broadcast_to(np.array([0.5, -1.0], np.float32), (1, 3, 4, 2))
    np.testing.assert_allclose(np.asarray(geo.upflow(flow, rate=8)),
                               np.broadcast_to([4.0, -8.0], (1, 24, 32, 2)), atol=1e-6)
    rng = np.random.default_rng(6)
    f = rng.normal(size=(2, 3, 5, 2)).astype(np.float32)
    out = np.asarray(geo.upflow(f, rate=2))
    # align_corners=True: output (Y, X) samples input at (Y*(H-1)/(2H-1), X*(W-1)/(2W-1))
    ys = np.arange(6) * 2 / 5
    xs = np.arange(10) * 4 / 9
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    want = 2 * ref_bilinear(f, np.stack([xx, yy], -1)[None].repeat(2, 0), "zeros")
    np.testing.assert_allclose(out, want, atol=1e-5)
    np.testing.assert_allclose(out[:, -1, -1], 2 * f[:, -1, -1], atol=1e-5)


def test_forward_interpolate_constant_and_griddata():
    const = np.broadcast_to(np.array([1.5, -0.5], np.float32), (8, 10, 2))
    out = geo.forward_interpolate(const)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, const)
    rng = np.random.default_rng(7)
    flow = rng.normal(scale=3.0, size=(9, 11, 2)).astype(np.float32)
    h, w = 9, 11
    x0, y0 = np.meshgrid(np.arange(w), np.arange(h))
    x1, y1 = (x0 + flow[..., 0]).ravel(), (y0 + flow[..., 1]).ravel()
    valid = (x1 > 0) & (x1 < w) & (y1 > 0) & (y1 < h)
    want = np.stack([interpolate.griddata((x1[valid], y1[valid]), flow[..., k].ravel()[valid],
                                          (x0, y0), method="nearest", fill_value=0)
                     for k in range(2)], -1)
    np.testing.assert_allclose(geo.forward_interpolate(flow), want, atol=0)
    batched = geo.forward_interpolate(np.stack([flow, np.full_like(flow, 2.0)]))
    np.testing.assert_allclose(batched[0], want)
    np.testing.assert_allclose(batched[1], 2.0)


def test_forward_interpolate_all_out_of_range():
    flow = np.full((4, 5, 2), 100.0, np.float32)
    np.testing.assert_array_equal(geo.forward_interpolate(flow), np.zeros((4, 5, 2)))


def test_pad_axis_is_jnp_pad_edge_or_zeros():
    x = np.random.default_rng(3).normal(size=(2, 5, 4, 3)).astype(np.float32)
    for axis, (before, after) in [(1, (2, 3)), (2, (0, 1))]:
        widths = [(0, 0)] * 4
        widths[axis] = (before, after)
        np.testing.assert_array_equal(geo.pad_axis(x, axis, before, after),
                                      np.pad(x, widths, mode="edge"))
        np.testing.assert_array_equal(geo.pad_axis(x, axis, before, after, fill="zeros"),
                                      np.pad(x, widths))
