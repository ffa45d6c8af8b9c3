"""Correlation: RAFT's all-pairs pyramid and a memory-light on-the-fly equivalent, in float32.

Both give, for coordinates ``coords`` (B, H, W, 2) at 1/8 resolution, the (B, H, W,
levels * (2r+1)^2) lookup: level ``l`` samples the correlation of ``fmap1`` with
``avgpool^l(fmap2)`` (2x2, floor) at ``coords / 2^l + (ox, oy)``, bilinear with zero padding,
scaled by ``1/sqrt(C)``. Channel ``(ox + r) * (2r + 1) + (oy + r)`` (x-offset-major, as the official
``meshgrid(dy, dx)`` quirk gives), levels finest first.

* ``all_pairs``: builds ``f1^T f2 / sqrt(C)`` once, O((HW)^2) memory, and pools the volume.
* ``on_the_fly``: pools ``fmap2`` instead (avg-pool is linear, so identical up to rounding) and
  per lookup dots ``fmap1`` with ``fmap2`` at the integer positions around each sampling point,
  then applies the bilinear weights (bilinear sampling is linear too): O(HW * C) memory. The dots
  are matrix products of 8x8-point tiles of ``fmap1`` with blocks of ``fmap2`` around their
  windows (``_tiled_level``), or with the whole map of a small level; per-offset gathers where
  a tile's windows scatter too widely, and for symbolic sizes.

The all-pairs lookup reads one (2r+2)^2 window per point and level and applies the bilinear
weights as small matrix products (``_window_level``), rather than gathering 4 corners for each of
the (2r+1)^2 offsets.

A correlation "state" is a dict of arrays with a leading batch axis, so it can travel inside the
DEQ input ``x``: ``{"pyramid": [..]}`` or ``{"fmap1": .., "fmap2": [..], "tiles1": ..}`` (no
``tiles1`` for symbolic sizes; all-pairs with ``feature_grad``: ``pyramid``, ``fmap1`` and
``fmap2``; :func:`window_state` of it: ``{"win_fmap1": .., "win_fmap2": [..]}``).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jflow.geometry import bilinear_sample

Array = Any
CORR_KINDS = ("all_pairs", "on_the_fly")
_HI = jax.lax.Precision.HIGHEST


def avg_pool2(x: Array, axes: tuple[int, int]) -> Array:
    """``F.avg_pool2d(x, 2, 2)`` over two adjacent ``axes`` (odd sizes drop the last row/col).

    The four strided slices are added elementwise: XLA:CPU runs a ``jnp.mean`` over split axes
    as a library reduction about ten times slower.
    """
    a, b = axes
    h, w = x.shape[a] // 2, x.shape[b] // 2
    if any(isinstance(d, int) and d == 0 for d in (h, w)):  # pooled away (map < 2)
        return jnp.zeros(x.shape[:a] + (h,) + x.shape[a + 1:b] + (w,) + x.shape[b + 1:], x.dtype)

    def phase(i: int, j: int) -> Array:
        y = jax.lax.slice_in_dim(x, i, i + 2 * h - 1, 2, axis=a)
        return jax.lax.slice_in_dim(y, j, j + 2 * w - 1, 2, axis=b)

    return ((phase(0, 0) + phase(0, 1)) + (phase(1, 0) + phase(1, 1))) * 0.25


def offsets(radius: int) -> jax.Array:
    """(2r+1, 2r+1, 2) offsets (x, y), first axis = x offset (official channel order)."""
    d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    ox, oy = jnp.meshgrid(d, d, indexing="ij")
    return jnp.stack([ox, oy], axis=-1)


def build_corr(fmap1: Array, fmap2: Array, *, kind: str = "all_pairs", num_levels: int = 4,
               feature_grad: bool = False) -> dict:
    """Precomputes what the lookups need from feature maps (B, H, W, C) (cast to float32).

    ``feature_grad`` (all-pairs): the pyramid is built without gradient and kept with the feature
    maps (``fmap1``, pooled ``fmap2``); the lookups' backward pass then gives the feature maps'
    gradients from the sampled windows directly (``_window_feature_grads``), never an (HW)^2
    gradient buffer. Same values and gradients.
    """
    fmap1 = jnp.asarray(fmap1, jnp.float32)
    fmap2 = jnp.asarray(fmap2, jnp.float32)
    if fmap1.shape != fmap2.shape or fmap1.ndim != 4:
        raise ValueError(f"build_corr: fmap1 and fmap2 must both be (B, H, W, C), got "
                         f"{fmap1.shape} and {fmap2.shape}")
    if kind == "all_pairs":
        c = fmap1.shape[-1]
        # fmap1 scaled before the product (exact for C = 256): XLA:CPU would scale the (HW)^2
        # product in a pass of its own
        f1, f2 = fmap1 * jax.lax.rsqrt(jnp.float32(c)), fmap2
        if feature_grad:
            f1, f2 = jax.lax.stop_gradient(f1), jax.lax.stop_gradient(f2)
        vol = jnp.einsum("bijc,bklc->bijkl", f1, f2, precision=_HI)
        pyramid = [vol]
        for _ in range(num_levels - 1):
            vol = avg_pool2(vol, (3, 4))
            pyramid.append(vol)
        # every level written out once: XLA:CPU (jax 0.12) would otherwise fuse the pooling
        # into each iteration's window gathers and recompute it there (experiments/README.md)
        pyramid = list(jax.lax.optimization_barrier(tuple(pyramid)))
        if not feature_grad:
            return {"pyramid": pyramid}
        pyr2 = [fmap2]
        for _ in range(num_levels - 1):
            pyr2.append(avg_pool2(pyr2[-1], (1, 2)))
        return {"pyramid": pyramid, "fmap1": fmap1, "fmap2": pyr2}
    if kind == "on_the_fly":
        pyr = [fmap2]
        for _ in range(num_levels - 1):
            pyr.append(avg_pool2(pyr[-1], (1, 2)))
        if not all(isinstance(d, int) for d in fmap1.shape):  # symbolic sizes: gathers only
            return {"fmap1": fmap1, "fmap2": pyr}
        return {"fmap1": fmap1, "fmap2": pyr, "tiles1": _tiles(fmap1 * jax.lax.rsqrt(
            jnp.float32(fmap1.shape[-1])))}
    raise ValueError(f"corr kind must be one of {CORR_KINDS}, got {kind!r}")


def window_state(corr: dict) -> dict:
    """The feature maps of a ``feature_grad`` state without its pyramid: lookups on it give the
    same values and gradients, each (2r+2)^2 window computed from the feature maps (a dot product
    per window position; the windows are kept for the backward pass), so a pyramid used only by
    a gradient-free solve need not be kept for the backward pass."""
    return {"win_fmap1": corr["fmap1"], "win_fmap2": list(corr["fmap2"])}


def lookup(corr: dict, coords: Array, radius: int = 4) -> jax.Array:
    """Correlation features (B, H, W, levels * (2r+1)^2) at ``coords`` (B, H, W, 2), float32."""
    coords = jnp.asarray(coords, jnp.float32)
    if "win_fmap1" in corr:
        return _feature_window_lookup(radius, corr["win_fmap1"], tuple(corr["win_fmap2"]), coords)
    delta = offsets(radius)
    k = 2 * radius + 1
    b, h, w, _ = coords.shape
    out = []
    if "pyramid" in corr and "fmap1" in corr and _static_windows(corr["pyramid"]):
        return _feature_grad_lookup(radius, tuple(corr["pyramid"]), corr["fmap1"],
                                    tuple(corr["fmap2"]), coords)
    if "pyramid" in corr:
        for lvl, vol in enumerate(corr["pyramid"]):
            h2, w2 = vol.shape[3], vol.shape[4]
            if h2 == 0 or w2 == 0:  # pooled away (map < 2^l): every corner is padding
                out.append(jnp.zeros((b, h, w, k * k), jnp.float32))
                continue
            flat = vol.reshape(b * h * w, h2, w2)
            pts = coords.reshape(b * h * w, 2) / 2**lvl
            if all(isinstance(d, int) for d in (h2, w2)):
                s = _window_level(flat, pts, radius)
            else:  # symbolic sizes (jax.export): per-point gathers need no static window
                s = bilinear_sample(flat[..., None], pts[:, None, None] + delta)
            out.append(s.reshape(b, h, w, k * k))
    else:
        return _on_the_fly_lookup(corr, coords, radius)
    return jnp.concatenate(out, axis=-1)


def _window_level(vol: Array, pts: Array, radius: int) -> jax.Array:
    """One all-pairs level: ``vol`` (P, h2, w2) sampled around ``pts`` (P, 2) -> (P, (2r+1)^2).

    Every offset shares the fractional part of ``pts``, so one (2r+2)^2 window per point (one
    batched ``dynamic_slice``, its start clamped into the map) holds every integer corner. The
    bilinear weights, the clamp's shift and the zero padding are folded into two small (2r+1) x
    (2r+2) tap matrices per point (zero where a corner is outside the window, hence outside the
    map), applied as batched matrix products: no per-corner gathers.
    """
    h2, w2 = vol.shape[1:]
    n = 2 * radius + 2
    if h2 < n or w2 < n:  # a coarse level smaller than the window: zeros beyond the map
        vol = jnp.pad(vol, ((0, 0), (0, max(n - h2, 0)), (0, max(n - w2, 0))))
        h2, w2 = vol.shape[1:]
    cy, cx, ty, tx = _window_taps(pts, h2, w2, radius)
    win = jax.vmap(lambda v, y, x: jax.lax.dynamic_slice(v, (y, x), (n, n)))(vol, cy, cx)
    return _apply_taps(win, ty, tx)


def _apply_taps(win: Array, ty: Array, tx: Array) -> jax.Array:
    """Windows (P, 2r+2, 2r+2) through tap matrices (P, 2r+1, 2r+2) -> (P, (2r+1)^2), x-major."""
    rows = jnp.einsum("piy,pyx->pix", ty, win, precision=_HI)
    return jnp.einsum("pix,pax->pai", rows, tx, precision=_HI).reshape(win.shape[0], -1)


def _window_taps(pts: Array, h2: int, w2: int, radius: int) -> tuple:
    """Window starts ``cy, cx`` (P,) in a map of at least (2r+2)^2 and tap matrices ``ty, tx``
    (P, 2r+1, 2r+2): weight of window row/column m for offset a."""
    k, n = 2 * radius + 1, 2 * radius + 2
    x0, y0 = jnp.floor(pts[:, 0]), jnp.floor(pts[:, 1])
    sx, sy = x0.astype(jnp.int32) - radius, y0.astype(jnp.int32) - radius  # window start
    cx, cy = jnp.clip(sx, 0, w2 - n), jnp.clip(sy, 0, h2 - n)
    m = jnp.arange(n)[None, None, :]
    a = jnp.arange(k)[None, :, None]

    def taps(shift, frac):
        rel = m - a - shift[:, None, None]
        f = frac[:, None, None]
        return jnp.where(rel == 0, 1 - f, 0.0) + jnp.where(rel == 1, f, 0.0)

    return cy, cx, taps(sy - cy, pts[:, 1] - y0), taps(sx - cx, pts[:, 0] - x0)


def _static_windows(pyramid: list) -> bool:
    return all(isinstance(d, int) for v in pyramid for d in v.shape[3:5])


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _feature_grad_lookup(radius, pyramid, fmap1, fmap2s, coords):
    """``lookup`` on an all-pairs pyramid whose backward pass differentiates the feature maps
    (``fmap1``, pooled ``fmap2s``) from the windows, not the pyramid."""
    return lookup({"pyramid": list(pyramid)}, coords, radius)


def _feature_grad_lookup_fwd(radius, pyramid, fmap1, fmap2s, coords):
    return _feature_grad_lookup(radius, pyramid, fmap1, fmap2s, coords), (pyramid, fmap1,
                                                                           fmap2s, coords)


def _feature_grad_lookup_bwd(radius, res, g):
    pyramid, f1, f2s, coords = res
    b, h, w, _ = coords.shape
    levels = [None if 0 in vol.shape else
              partial(_window_level, vol.reshape(b * h * w, *vol.shape[3:5]), radius=radius)
              for vol in pyramid]
    return (None,) + _windows_bwd(radius, levels, f1, f2s, coords, g)


def _windows_bwd(radius: int, levels: list, f1: Array, f2s: tuple, coords: Array, g: Array
                 ) -> tuple:
    """Gradients ``(d_fmap1, d_fmap2s, d_coords)`` of the lookup's ``sum(g * out)``; ``levels``:
    per level, the lookup as a function of the points (its windows fixed), None if pooled away."""
    b, h, w, _ = coords.shape
    k, n = 2 * radius + 1, 2 * radius + 2
    g = g.reshape(b * h * w, len(levels), k, k)  # [point, level, x offset, y offset]
    pts = coords.reshape(b * h * w, 2)
    d_f1, d_f2s, d_pts = jnp.zeros_like(f1), [], jnp.zeros_like(pts)
    for lvl, (level, f2) in enumerate(zip(levels, f2s)):
        if level is None:  # pooled away: zeros, no gradient
            d_f2s.append(jnp.zeros_like(f2))
            continue
        q = pts / 2**lvl
        _, vjp_pts = jax.vjp(level, q)
        d_pts = d_pts + vjp_pts(g[:, lvl].reshape(-1, k * k))[0] / 2**lvl
        cy, cx, ty, tx = _window_taps(q, max(f2.shape[1], n), max(f2.shape[2], n), radius)
        d_win = jnp.einsum("pai,piy,pax->pyx", g[:, lvl], ty, tx, precision=_HI)
        # one fmap1-gradient buffer carried through every level's loop
        d_f1, d2 = _window_feature_grads(f1, f2, cy, cx, d_win, d_f1)
        d_f2s.append(d2)
    return d_f1, tuple(d_f2s), d_pts.reshape(coords.shape)


_feature_grad_lookup.defvjp(_feature_grad_lookup_fwd, _feature_grad_lookup_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _feature_window_lookup(radius, fmap1, fmap2s, coords):
    """``lookup`` on a :func:`window_state`: the windows from the feature maps."""
    return _feature_window_lookup_fwd(radius, fmap1, fmap2s, coords)[0]


def _feature_window_lookup_fwd(radius, fmap1, fmap2s, coords):
    b, h, w, _ = coords.shape
    k, n = 2 * radius + 1, 2 * radius + 2
    pts = coords.reshape(b * h * w, 2)
    out, wins = [], []
    for lvl, f2 in enumerate(fmap2s):
        if f2.shape[1] == 0 or f2.shape[2] == 0:  # pooled away: every corner is padding
            out.append(jnp.zeros((b * h * w, k * k), jnp.float32))
            wins.append(None)
            continue
        cy, cx, ty, tx = _window_taps(pts / 2**lvl, max(f2.shape[1], n), max(f2.shape[2], n),
                                      radius)
        wins.append(_feature_windows(fmap1, f2, cy, cx, n))
        out.append(_apply_taps(wins[-1], ty, tx))
    return jnp.concatenate(out, axis=-1).reshape(b, h, w, -1), (fmap1, fmap2s, coords, wins)


def _feature_window_lookup_bwd(radius, res, g):
    f1, f2s, coords, wins = res
    n = 2 * radius + 2

    def level(win, f2):
        hp, wp = max(f2.shape[1], n), max(f2.shape[2], n)
        return lambda q: _apply_taps(win, *_window_taps(q, hp, wp, radius)[2:])

    levels = [None if win is None else level(win, f2) for win, f2 in zip(wins, f2s)]
    return _windows_bwd(radius, levels, f1, f2s, coords, g)


_feature_window_lookup.defvjp(_feature_window_lookup_fwd, _feature_window_lookup_bwd)


def _feature_windows(f1: Array, f2: Array, cy: Array, cx: Array, n: int) -> jax.Array:
    """``win[p, y, x] = <f1[p], f2[cy + y, cx + x]> / sqrt(C)`` (P, n, n) for ``f1`` (B, H, W, C),
    ``f2`` (B, h2, w2, C) zero-padded to at least n x n: one gather of (B, HW, C) rows per
    window position, in a loop."""
    b, h, w, c = f1.shape
    h2, w2 = f2.shape[1:3]
    hp, wp = max(h2, n), max(w2, n)
    f2p = jnp.pad(f2, ((0, 0), (0, hp - h2), (0, wp - w2), (0, 0))).reshape(b, hp * wp, c)
    f1 = f1.reshape(b, h * w, c) * jax.lax.rsqrt(jnp.float32(c))
    start = (cy * wp + cx).reshape(b, h * w)

    def dot(o):
        rows = jnp.take_along_axis(f2p, (start + (o // n) * wp + o % n)[..., None], axis=1)
        return jnp.einsum("bpc,bpc->bp", rows, f1, precision=_HI)

    return jnp.moveaxis(jax.lax.map(dot, jnp.arange(n * n)), 0, -1).reshape(b * h * w, n, n)


def _window_feature_grads(f1: Array, f2: Array, cy: Array, cx: Array, d_win: Array,
                          d_f1: Array | None = None) -> tuple:
    """Gradients of ``sum(d_win * win)`` w.r.t. ``f1`` (B, H, W, C; added to ``d_f1`` if given)
    and ``f2`` (B, h2, w2, C), where ``win[p, y, x] = <f1[p], f2[cy + y, cx + x]> / sqrt(C)``
    (zero beyond the map): one window offset at a time (a loop over (2r+2)^2 gathers /
    scatter-adds of (B, HW, C))."""
    b, h, w, c = f1.shape
    h2, w2 = f2.shape[1:3]
    n = d_win.shape[-1]
    hp, wp = max(h2, n), max(w2, n)
    f2p = jnp.pad(f2, ((0, 0), (0, hp - h2), (0, wp - w2), (0, 0))).reshape(b, hp * wp, c)
    f1 = f1.reshape(b, h * w, c)
    start = (cy * wp + cx).reshape(b, h * w)
    d_win = d_win.reshape(b, h * w, n * n) / jnp.sqrt(jnp.float32(c))
    bi = jnp.arange(b)[:, None]

    def body(o, carry):
        d1, d2 = carry
        idx = start + (o // n) * wp + o % n
        wgt = jax.lax.dynamic_index_in_dim(d_win, o, axis=2, keepdims=False)[..., None]
        d1 = d1 + wgt * jnp.take_along_axis(f2p, idx[..., None], axis=1)
        return d1, d2.at[bi, idx].add(wgt * f1)

    d1 = jnp.zeros_like(f1) if d_f1 is None else d_f1.reshape(f1.shape)
    d1, d2 = jax.lax.fori_loop(0, n * n, body, (d1, jnp.zeros_like(f2p)))
    return d1.reshape(b, h, w, c), d2.reshape(b, hp, wp, c)[:, :h2, :w2]


def _on_the_fly_lookup(corr: dict, coords: Array, radius: int) -> jax.Array:
    """``lookup`` on an on-the-fly state. Concrete sizes (``tiles1`` in the state): per level
    :func:`_whole_map_level` when the level's map is small, else :func:`_tiled_level`; if some
    tile's windows were too spread out for it, every level again by :func:`_gather_level` (under
    ``lax.cond``: computed only then). Symbolic sizes (``jax.export``): the gathers."""
    f1, tiles1 = corr["fmap1"], corr.get("tiles1")
    b, h, w, _ = coords.shape
    k = (2 * radius + 1) ** 2

    def levels(fast: bool) -> tuple[list, Any]:
        out, done = [], True
        for lvl, f2 in enumerate(corr["fmap2"]):
            pts = coords / 2**lvl
            region = tile_region(radius, lvl)
            if f2.shape[1] == 0 or f2.shape[2] == 0:  # pooled away: every corner is padding
                out.append(jnp.zeros((b, h, w, k), jnp.float32))
            elif not fast:
                out.append(_gather_level(f1, f2, pts, radius))
            elif f2.shape[1] * f2.shape[2] <= 2 * region**2:
                out.append(_whole_map_level(f1, f2, pts, radius))
            else:
                o, d = _tiled_level(tiles1, f2, pts, radius, region, EXTRA_PASSES)
                out.append(o)
                done = done & d
        return jnp.concatenate(out, axis=-1), done

    if tiles1 is None:
        return levels(False)[0]
    out, done = levels(True)
    if done is True:
        return out
    return jax.lax.cond(done, lambda: out, lambda: levels(False)[0])


_TILE = 8  # query points per tile side in _tiled_level
_CHUNK_BYTES = 2**21  # blocks per lax.map step of _tiled_level: about a core's L2
EXTRA_PASSES = 2  # _tiled_level's passes over tiles whose points did not all fit


def tile_region(radius: int, level: int) -> int:
    """Side of the ``fmap2`` block a tile of query points multiplies at pyramid ``level``: the
    (2r+2) window, the tile's extent at that level, and as much again for the flow's variation
    within the tile (at level 0 with r = 4: 24)."""
    return 2 * radius + 2 + 2 * -(-(_TILE - 1) // 2**level)


def _whole_map_level(f1: Array, f2: Array, pts: Array, radius: int) -> jax.Array:
    """A small level (at most 2 ``tile_region``^2 positions): the level's volume of every point with
    the whole map, one matrix product, then the all-pairs window lookup; memory O(points)."""
    b, h, w, c = f1.shape
    vol = jnp.einsum("bpc,bqc->bpq", f1.reshape(b, h * w, c) * jax.lax.rsqrt(jnp.float32(c)),
                     f2.reshape(b, -1, c), precision=_HI)
    out = _window_level(vol.reshape(b * h * w, *f2.shape[1:3]), pts.reshape(-1, 2), radius)
    return out.reshape(b, h, w, -1)


def _tiles(a: Array) -> jax.Array:
    """(B, H, W, ...) -> (B, ceil(H / t) * ceil(W / t), t * t, ...) tiles of t = _TILE, row-major
    (H, W padded with their last row and column)."""
    b, h, w, t = *a.shape[:3], _TILE
    ht, wt = -(-h // t), -(-w // t)
    a = jnp.pad(a, ((0, 0), (0, ht * t - h), (0, wt * t - w)) + ((0, 0),) * (a.ndim - 3),
                mode="edge")
    a = a.reshape(b, ht, t, wt, t, -1).transpose(0, 1, 3, 2, 4, 5)
    return a.reshape(b, ht * wt, t * t, -1)


def _tiled_level(f1t: Array, f2: Array, pts: Array, radius: int, region: int,
                 passes: int = EXTRA_PASSES) -> tuple:
    """Lookups of tiles of _TILE x _TILE query points as matrix products, for ``f1t`` the
    :func:`_tiles` of the scaled ``f1``: (B, H, W, (2r+1)^2) and whether every value is exact
    (each point's window fitted one of the blocks tried for its tile).

    Each tile's points multiply one ``region`` x ``region`` block of ``f2`` at once, a (tile, C)
    x (C, region^2) product, and :func:`_window_level` takes each point's window from its row
    (its window positions outside the block lie outside the map: zeros). The block starts at the
    smallest window start of the tile's points (in map, per axis), moved so that the first
    point's window fits, and no further than the map's end. Tiles go a chunk of about
    ``_CHUNK_BYTES`` of blocks at a time, so each block is multiplied while still in cache:
    every tile once (``lax.map``), then a ``lax.scan`` over ``passes`` x 1/8 of the tiles more,
    each step the first tiles with points left (a motion boundary in the tile) with a block
    placed for those points (skipped once every point is done). Reverse mode keeps no blocks of
    the first pass (rematerialised per chunk).
    """
    b, h, w, _ = pts.shape
    h2, w2, c = f2.shape[1:]
    n, k, t = 2 * radius + 2, (2 * radius + 1) ** 2, _TILE
    ht, wt = -(-h // t), -(-w // t)
    f1t, pt = f1t.reshape(-1, *f1t.shape[2:]), _tiles(pts).reshape(-1, t * t, 2)
    start = jnp.floor(pt).astype(jnp.int32) - radius  # window starts (x, y)
    size = jnp.array([w2, h2], jnp.int32)
    lo, hi = jnp.clip(start, 0, size), jnp.clip(start + n, 0, size)  # window within the map
    inside = jnp.all(hi > lo, axis=-1)  # windows wholly outside the map are zeros anyway
    batch = jnp.repeat(jnp.arange(b), ht * wt)
    # zeros only where the map is smaller than a block: elsewhere blocks end inside the map
    f2p = jnp.pad(f2, ((0, 0), (0, max(region - h2, 0)), (0, max(region - w2, 0)), (0, 0)))
    last = jnp.array([f2p.shape[2], f2p.shape[1]], jnp.int32) - region  # last block start
    tiles = len(batch)
    chunk = min(tiles, max(1, _CHUNK_BYTES // (region**2 * c * 4)))
    first_steps = -(-tiles // chunk)

    def run(sel, todo):  # tiles ``sel`` (chunk,), their points still to do (chunk, t * t)
        live = (todo & inside[sel])[..., None]
        lo_s, hi_s = lo[sel], hi[sel]
        first = jnp.argmax(live[..., 0], axis=1)
        first_hi = jnp.take_along_axis(hi_s, first[:, None, None], axis=1)[:, 0]
        low = jnp.min(jnp.where(live, lo_s, jnp.iinfo(jnp.int32).max), axis=1)
        r0 = jnp.where(jnp.any(live, axis=1), jnp.maximum(low, first_hi - region), 0)  # (S, 2)
        r0 = jnp.minimum(r0, last)  # a block past the map's end: positions there are zeros
        fit = ~inside[sel] | jnp.all((lo_s >= r0[:, None]) & (hi_s <= r0[:, None] + region), -1)
        blocks = jax.vmap(lambda i, y, x: jax.lax.dynamic_slice(
            f2p, (i, y, x, 0), (1, region, region, c)))(batch[sel], r0[:, 1], r0[:, 0])
        vol = jnp.einsum("spc,sqc->spq", f1t[sel], blocks.reshape(chunk, -1, c), precision=_HI)
        rel = (pt[sel] - r0[:, None].astype(pt.dtype)).reshape(-1, 2)
        out = _window_level(vol.reshape(-1, region, region), rel, radius)
        return out.reshape(chunk, t * t, k), fit & todo

    # every tile once, in order; under reverse mode the blocks are recomputed, not kept
    o, fit = jax.lax.map(partial(jax.checkpoint(run, prevent_cse=False), todo=jnp.ones(
        (chunk, t * t), bool)), jnp.minimum(jnp.arange(first_steps * chunk).reshape(
            first_steps, chunk), tiles - 1))
    out = jnp.where(fit[..., None], o, 0.0).reshape(-1, t * t, k)[:tiles]
    done = fit.reshape(-1, t * t)[:tiles]

    def more(done, _):  # the first tiles with points left; ``tiles`` marks no tile
        left = ~jnp.all(done, axis=1)
        sel = jnp.nonzero(left, size=chunk, fill_value=tiles)[0]

        def work(done):
            was = done.at[sel].get(mode="fill", fill_value=True)
            o, fit = run(jnp.minimum(sel, tiles - 1), ~was)
            return (done.at[sel].set(was | fit, mode="drop"),
                    (sel, jnp.where(fit[..., None], o, 0.0)))

        return jax.lax.cond(jnp.any(left), work, lambda d: (d, (
            jnp.full_like(sel, tiles), jnp.zeros((chunk, t * t, k), jnp.float32))), done)

    # each point is computed once (where it first fits), so the later values add disjointly
    done, (sel, o) = jax.lax.scan(more, done, None, passes * -(-max(1, tiles // 8) // chunk))
    out = out.at[sel.reshape(-1)].add(o.reshape(-1, t * t, k), mode="drop")
    out = out.reshape(b, ht, wt, t, t, k).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, ht * t, wt * t, k)[:, :h, :w], jnp.all(done)


def _gather_level(f1: Array, f2: Array, pts: Array, radius: int) -> jax.Array:
    """One on-the-fly level for any sizes, one gather per window offset: (B, H, W, (2r+1)^2).

    Every offset shares the fractional part of ``pts``, so the (2r+2)^2 integer-position dot
    products ``<f1, f2[y0 + dy, x0 + dx]>`` (zero outside the map) are computed once (one gather of
    (B, H, W, C) at a time) and combined with the bilinear weights.
    """
    b, h, w, c = f1.shape
    h2, w2 = f2.shape[1], f2.shape[2]
    n = 2 * radius + 2
    x0, y0 = jnp.floor(pts[..., 0]), jnp.floor(pts[..., 1])
    fx, fy = pts[..., 0] - x0, pts[..., 1] - y0
    x0, y0 = x0.astype(jnp.int32).reshape(b, -1), y0.astype(jnp.int32).reshape(b, -1)
    f1 = f1.reshape(b, h * w, c)
    f2 = f2.reshape(b, h2 * w2, c)
    d = jnp.arange(-radius, radius + 2, dtype=jnp.int32)
    dxy = jnp.stack(jnp.meshgrid(d, d, indexing="ij"), -1).reshape(-1, 2)  # [i * n + j] = (dx, dy)

    @jax.checkpoint  # reverse mode keeps no gathered rows: recomputed per offset
    def dot_at(off):
        xi, yi = x0 + off[0], y0 + off[1]
        inside = (xi >= 0) & (xi < w2) & (yi >= 0) & (yi < h2)
        idx = jnp.clip(yi, 0, h2 - 1) * w2 + jnp.clip(xi, 0, w2 - 1)
        g = jnp.take_along_axis(f2, idx[..., None], axis=1)  # (B, HW, C)
        return jnp.where(inside, jnp.einsum("bnc,bnc->bn", g, f1, precision=_HI), 0.0)

    dots = jax.lax.map(dot_at, dxy).reshape(n, n, b, h, w)  # [x offset, y offset]
    dots = dots / jnp.sqrt(jnp.float32(c))
    wx, wy = fx[None, None], fy[None, None]
    vals = ((1 - wx) * (1 - wy) * dots[:-1, :-1] + wx * (1 - wy) * dots[1:, :-1]
            + (1 - wx) * wy * dots[:-1, 1:] + wx * wy * dots[1:, 1:])  # (2r+1, 2r+1, B, H, W)
    return jnp.moveaxis(vals.reshape(-1, b, h, w), 0, -1)


