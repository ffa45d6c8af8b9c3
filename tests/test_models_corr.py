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


def _big_maps(flow, h=36, w=40):
    """(1, 36, 40, 16) feature maps: level 0 (1440 positions) takes the tiled path, level 1 (360)
    the whole-map product; ``flow(grid)`` gives the displacement (at level-0 resolution)."""
    rng = np.random.default_rng(2)
    f1 = jnp.asarray(rng.normal(size=(1, h, w, 16)), jnp.float32)
    f2 = jnp.asarray(rng.normal(size=(1, h, w, 16)), jnp.float32)
    grid = np.stack(np.meshgrid(np.arange(float(w)), np.arange(float(h)), indexing="xy"), -1)[None]
    return f1, f2, jnp.asarray(grid + flow(grid, rng), jnp.float32)


def _smooth(grid, rng):
    return np.stack([3 * np.sin(grid[..., 1] / 7) - 1.3, 2 * np.cos(grid[..., 0] / 9) + 0.6], -1)


def _boundary(grid, rng):  # a square moving 9.4 px right inside a still background: two modes
    out = np.zeros(grid.shape)
    inside = (grid[..., 0] >= 10) & (grid[..., 0] < 27) & (grid[..., 1] >= 5) & (grid[..., 1] < 22)
    out[inside] = (9.4, -2.2)
    return out + 0.25


def _scattered(grid, rng):  # every point anywhere, many outside the map: no region fits
    return rng.uniform(-30, 30, grid.shape)


@pytest.mark.parametrize("flow,first_pass,passes", [
    (_smooth, True, True), (_boundary, False, True), (_scattered, False, False)])
def test_on_the_fly_tiles_against_float64_reference(flow, first_pass, passes):
    """Tiled matrix products (one block per tile, the extra passes at a motion boundary, the
    gathers when windows scatter): the float64 reference either way; the path is asserted."""
    import jflow.models.corr as corr

    f1, f2, coords = _big_maps(flow)
    state = build_corr(f1, f2, kind="on_the_fly", num_levels=2)
    got = jax.jit(lambda s, c: lookup(s, c, radius=4))(state, coords)
    np.testing.assert_allclose(np.asarray(got), reference_lookup(f1, f2, coords, 2, 4),
                               rtol=1e-4, atol=1e-4)
    for extra, fits in ((0, first_pass), (corr.EXTRA_PASSES, passes)):
        assert bool(jax.jit(lambda s, c: corr._tiled_level(
            s["tiles1"], s["fmap2"][0], c, 4, corr.tile_region(4, 0), extra)[1])(
                state, coords)) == fits


def test_on_the_fly_tiles_on_a_map_thinner_than_a_block():
    """A 10 x 160 level 0 (tiled; blocks of 24 run past its bottom into zeros, and stop at its
    right end), points near and beyond every border: the float64 reference, no fallback."""
    import jflow.models.corr as corr

    f1, f2, coords = _big_maps(lambda g, rng: np.stack(
        [3 * np.sin(g[..., 1]) + 2.5 * np.sign(g[..., 0] - 80), np.cos(g[..., 0] / 9) - 1], -1),
        h=10, w=160)
    state = build_corr(f1, f2, kind="on_the_fly", num_levels=2)
    got = jax.jit(lambda s, c: lookup(s, c, radius=4))(state, coords)
    np.testing.assert_allclose(np.asarray(got), reference_lookup(f1, f2, coords, 2, 4),
                               rtol=1e-4, atol=1e-4)
    assert bool(jax.jit(lambda s, c: corr._tiled_level(
        s["tiles1"], s["fmap2"][0], c, 4, corr.tile_region(4, 0))[1])(state, coords))


@pytest.mark.parametrize("flow", [_boundary, _scattered])
def test_on_the_fly_derivatives_equal_all_pairs(flow):
    """Reverse mode (the tiles' loop, the rematerialised gathers, the ``lax.cond``) and forward
    mode through the on-the-fly lookup: the all-pairs lookup's gradients w.r.t. both feature maps
    and the coordinates, and its JVP (which optimistix's Newton solver needs)."""
    f1, f2, coords = _big_maps(flow)
    g = jax.random.normal(jax.random.key(0), (1, 36, 40, 162))
    tangents = tuple(jax.random.normal(jax.random.key(i), a.shape) for i, a in
                     enumerate((f1, f2, coords)))

    def corr(kind):
        return lambda a, b, c: lookup(build_corr(a, b, kind=kind, num_levels=2), c)

    def grads(kind):
        return jax.jit(jax.grad(lambda *a: jnp.sum(g * corr(kind)(*a)), argnums=(0, 1, 2)))(
            f1, f2, coords)

    def jvp(kind):
        return jax.jit(lambda p, t: jax.jvp(corr(kind), p, t)[1])((f1, f2, coords), tangents)

    for a, b in zip(grads("on_the_fly") + (jvp("on_the_fly"),),
                    grads("all_pairs") + (jvp("all_pairs"),)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-4)


def test_on_the_fly_gradient_memory_stays_below_all_pairs():
    """XLA's temp memory of one lookup's gradient (both feature maps and the coordinates) at RAFT's
    432x1024 feature size, compiled on shapes only: the on-the-fly kind must stay well below the
    all-pairs volume's (reverse mode through per-offset gathers, or a fallback branch's
    residuals, once made it several times larger)."""
    spec = [jax.ShapeDtypeStruct((1, 54, 128, 256), jnp.float32)] * 2 + [
        jax.ShapeDtypeStruct((1, 54, 128, 2), jnp.float32)]

    def temp(kind):
        grad = jax.grad(lambda a, b, c: jnp.sum(lookup(build_corr(a, b, kind=kind), c)),
                        argnums=(0, 1, 2))
        return jax.jit(grad).lower(*spec).compile().memory_analysis().temp_size_in_bytes

    assert temp("on_the_fly") < 0.5 * temp("all_pairs")
