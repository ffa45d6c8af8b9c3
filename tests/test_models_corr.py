"""Correlation: all-pairs pyramid vs a float64 reference, on-the-fly vs all-pairs, channel order."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.models.corr import avg_pool2, build_corr, lookup


def reference_lookup(f1, f2, coords, levels, r):
    """Float64 numpy version of the official CorrBlock (volume, avg-pool, zero-padded bilinear)."""
    f1, f2, coords = (np.asarray(a, np.float64) for a in (f1, f2, coords))
    b, h, w, c = f1.shape
    vol = np.einsum("bijc,bklc->bijkl", f1, f2) / np.sqrt(c)
    out = []
    for lvl in range(levels):
        h2, w2 = vol.shape[3], vol.shape[4]
        feats = np.zeros((b, h, w, 2 * r + 1, 2 * r + 1))
        for a, ox in enumerate(range(-r, r + 1)):       # x offset is the slow channel axis
            for e, oy in enumerate(range(-r, r + 1)):
                x = coords[..., 0] / 2**lvl + ox
                y = coords[..., 1] / 2**lvl + oy
                x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
                acc = np.zeros((b, h, w))
                for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                    xi, yi = x0 + dx, y0 + dy
                    wgt = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
                    ok = (xi >= 0) & (xi < w2) & (yi >= 0) & (yi < h2)
                    bi, ii, ji = np.indices((b, h, w))
                    val = vol[bi, ii, ji, np.clip(yi, 0, h2 - 1), np.clip(xi, 0, w2 - 1)]
                    acc += np.where(ok, wgt * val, 0.0)
                feats[..., a, e] = acc
        out.append(feats.reshape(b, h, w, -1))
        vol = vol[:, :, :, : h2 // 2 * 2, : w2 // 2 * 2]
        vol = vol.reshape(b, h, w, h2 // 2, 2, w2 // 2, 2).mean(axis=(4, 6))
    return np.concatenate(out, axis=-1)


@pytest.fixture(scope="module")
def fmaps():
    rng = np.random.default_rng(0)
    f1 = jnp.asarray(rng.normal(size=(2, 8, 12, 32)), jnp.float32)
    f2 = jnp.asarray(rng.normal(size=(2, 8, 12, 32)), jnp.float32)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(12.0), jnp.arange(8.0), indexing="xy"), -1)
    coords = grid[None] + jnp.asarray(4.0 * rng.normal(size=(2, 8, 12, 2)), jnp.float32)
    return f1, f2, coords  # some coordinates fall outside the map


@jax.jit
def both_kinds(f1, f2, coords):
    return (lookup(build_corr(f1, f2, kind="all_pairs"), coords),
            lookup(build_corr(f1, f2, kind="on_the_fly"), coords))


def test_all_pairs_matches_float64_reference(fmaps):
    f1, f2, coords = fmaps
    got = jax.jit(lambda a, b, c: lookup(build_corr(a, b), c, radius=2))(f1, f2, coords)
    ref = reference_lookup(f1, f2, coords, 4, 2)
    assert got.shape == (2, 8, 12, 4 * 25) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4)


def test_on_the_fly_equals_all_pairs(fmaps):
    f1, f2, coords = fmaps
    a, b = both_kinds(f1, f2, coords)
    assert a.shape == b.shape == (2, 8, 12, 324)
    scale = float(jnp.max(jnp.abs(a)))
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * scale


def test_channel_order_is_x_offset_major(fmaps):
    f1, f2, _ = fmaps
    grid = jnp.stack(jnp.meshgrid(jnp.arange(12.0), jnp.arange(8.0), indexing="xy"), -1)[None]
    grid = jnp.repeat(grid, 2, axis=0)
    out = jax.jit(lambda a, b, c: lookup(build_corr(a, b, num_levels=1), c, radius=1))(
        f1, f2, grid)  # 9 channels
    # pixel (y=3, x=5), offset (ox=+1, oy=-1) -> channel (1+1)*3 + (-1+1) = 6
    expect = jnp.dot(f1[0, 3, 5], f2[0, 2, 6]) / jnp.sqrt(32.0)
    np.testing.assert_allclose(float(out[0, 3, 5, 6]), float(expect), rtol=1e-5)


def test_avg_pool_floors_odd_sizes():
    x = jnp.arange(2 * 5 * 7, dtype=jnp.float32).reshape(1, 5, 7, 2)
    y = avg_pool2(x, (1, 2))
    assert y.shape == (1, 2, 3, 2)
    np.testing.assert_allclose(float(y[0, 1, 2, 0]), float(jnp.mean(x[0, 2:4, 4:6, 0])))


def test_bfloat16_features_give_float32_correlation(fmaps):
    f1, f2, coords = fmaps
    out = jax.eval_shape(lambda a, b, c: lookup(build_corr(a, b), c),
                         f1.astype(jnp.bfloat16), f2.astype(jnp.bfloat16), coords)
    assert out.dtype == jnp.float32 and out.shape == (2, 8, 12, 324)


def test_bad_kind_and_shapes_raise(fmaps):
    f1, f2, _ = fmaps
    with pytest.raises(ValueError, match="corr kind"):
        build_corr(f1, f2, kind="sparse")
    with pytest.raises(ValueError, match="fmap1 and fmap2"):
        build_corr(f1, f2[:, :4])


def test_all_pairs_window_near_and_beyond_the_borders():
    """A map larger than the (2r+2)^2 window: windows clamped at every border, points far outside
    (all zeros) and inside, against the float64 reference."""
    rng = np.random.default_rng(1)
    f1 = jnp.asarray(rng.normal(size=(1, 14, 18, 8)), jnp.float32)
    f2 = jnp.asarray(rng.normal(size=(1, 14, 18, 8)), jnp.float32)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(18.0), jnp.arange(14.0), indexing="xy"), -1)[None]
    shift = np.zeros((1, 14, 18, 2), np.float32)
    shift[0, :4] = (-9.5, 3.25)     # left of the map, partly and wholly
    shift[0, 4:8] = (12.7, -0.4)    # right of it
    shift[0, 8:11] = (0.3, -15.0)   # above
    shift[0, 11:] = (-0.6, 2.9)     # near the bottom border, inside
    coords = grid + jnp.asarray(shift)
    got = jax.jit(lambda a, b, c: lookup(build_corr(a, b, num_levels=2), c, radius=2))(
        f1, f2, coords)
    ref = reference_lookup(f1, f2, coords, 2, 2)
    assert np.abs(ref[0, :4, :3]).max() == 0 and np.abs(ref).max() > 1  # both cases occur
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4)
