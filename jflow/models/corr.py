"""Correlation: RAFT's all-pairs pyramid and a memory-light on-the-fly equivalent, in float32.

Both give, for coordinates ``coords`` (B, H, W, 2) at 1/8 resolution, the (B, H, W,
levels * (2r+1)^2) lookup: level ``l`` samples the correlation of ``fmap1`` with
``avgpool^l(fmap2)`` (2x2, floor) at ``coords / 2^l + (ox, oy)``, bilinear with zero padding,
scaled by ``1/sqrt(C)``. Channel ``(ox + r) * (2r + 1) + (oy + r)`` (x-offset-major, as the official
``meshgrid(dy, dx)`` quirk gives), levels finest first.

* ``all_pairs``: builds ``f1^T f2 / sqrt(C)`` once, O((HW)^2) memory, and pools the volume.
* ``on_the_fly``: pools ``fmap2`` instead (avg-pool is linear, so identical up to rounding) and
  per lookup dots ``fmap1`` with ``fmap2`` at the integer positions around each sampling point,
  then applies the bilinear weights (bilinear sampling is linear too): O(HW * C) memory.

The all-pairs lookup reads one (2r+2)^2 window per point and level and applies the bilinear
weights as small matrix products (``_window_level``), rather than gathering 4 corners for each of
the (2r+1)^2 offsets.

A correlation "state" is a dict of arrays with a leading batch axis, so it can travel inside the
DEQ input ``x``: ``{"pyramid": [..]}`` or ``{"fmap1": .., "fmap2": [..]}``.
"""
from __future__ import annotations

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

    def phase(i: int, j: int) -> Array:
        y = jax.lax.slice_in_dim(x, i, i + 2 * h - 1, 2, axis=a)
        return jax.lax.slice_in_dim(y, j, j + 2 * w - 1, 2, axis=b)

    return ((phase(0, 0) + phase(0, 1)) + (phase(1, 0) + phase(1, 1))) * 0.25


def offsets(radius: int) -> jax.Array:
    """(2r+1, 2r+1, 2) offsets (x, y), first axis = x offset (official channel order)."""
    d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    ox, oy = jnp.meshgrid(d, d, indexing="ij")
    return jnp.stack([ox, oy], axis=-1)


def build_corr(fmap1: Array, fmap2: Array, *, kind: str = "all_pairs", num_levels: int = 4) -> dict:
    """Precomputes what the lookups need from feature maps (B, H, W, C) (cast to float32)."""
    fmap1 = jnp.asarray(fmap1, jnp.float32)
    fmap2 = jnp.asarray(fmap2, jnp.float32)
    if fmap1.shape != fmap2.shape or fmap1.ndim != 4:
        raise ValueError(f"build_corr: fmap1 and fmap2 must both be (B, H, W, C), got "
                         f"{fmap1.shape} and {fmap2.shape}")
    if kind == "all_pairs":
        c = fmap1.shape[-1]
        vol = jnp.einsum("bijc,bklc->bijkl", fmap1, fmap2, precision=_HI) / jnp.sqrt(
            jnp.float32(c))
        pyramid = [vol]
        for _ in range(num_levels - 1):
            vol = avg_pool2(vol, (3, 4))
            pyramid.append(vol)
        return {"pyramid": pyramid}
    if kind == "on_the_fly":
        pyr = [fmap2]
        for _ in range(num_levels - 1):
            pyr.append(avg_pool2(pyr[-1], (1, 2)))
        return {"fmap1": fmap1, "fmap2": pyr}
    raise ValueError(f"corr kind must be one of {CORR_KINDS}, got {kind!r}")


def lookup(corr: dict, coords: Array, radius: int = 4) -> jax.Array:
    """Correlation features (B, H, W, levels * (2r+1)^2) at ``coords`` (B, H, W, 2), float32."""
    coords = jnp.asarray(coords, jnp.float32)
    delta = offsets(radius)
    k = 2 * radius + 1
    b, h, w, _ = coords.shape
    out = []
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
        for lvl, f2 in enumerate(corr["fmap2"]):
            if f2.shape[1] == 0 or f2.shape[2] == 0:
                out.append(jnp.zeros((b, h, w, k * k), jnp.float32))
                continue
            out.append(_on_the_fly_level(corr["fmap1"], f2, coords / 2**lvl, radius))
    return jnp.concatenate(out, axis=-1)


def _window_level(vol: Array, pts: Array, radius: int) -> jax.Array:
    """One all-pairs level: ``vol`` (P, h2, w2) sampled around ``pts`` (P, 2) -> (P, (2r+1)^2).

    Every offset shares the fractional part of ``pts``, so one (2r+2)^2 window per point (one
    batched ``dynamic_slice``, its start clamped into the map) holds every integer corner. The
    bilinear weights, the clamp's shift and the zero padding are folded into two small (2r+1) x
    (2r+2) tap matrices per point (zero where a corner is outside the window, hence outside the
    map), applied as batched matrix products: no per-corner gathers.
    """
    p, h2, w2 = vol.shape
    k, n = 2 * radius + 1, 2 * radius + 2
    if h2 < n or w2 < n:  # a coarse level smaller than the window: zeros beyond the map
        vol = jnp.pad(vol, ((0, 0), (0, max(n - h2, 0)), (0, max(n - w2, 0))))
        h2, w2 = vol.shape[1:]
    x0, y0 = jnp.floor(pts[:, 0]), jnp.floor(pts[:, 1])
    sx, sy = x0.astype(jnp.int32) - radius, y0.astype(jnp.int32) - radius  # window start
    cx, cy = jnp.clip(sx, 0, w2 - n), jnp.clip(sy, 0, h2 - n)
    win = jax.vmap(lambda v, y, x: jax.lax.dynamic_slice(v, (y, x), (n, n)))(vol, cy, cx)
    m = jnp.arange(n)[None, None, :]
    a = jnp.arange(k)[None, :, None]

    def taps(shift, frac):  # (P, k, n): weight of window index m for offset a
        rel = m - a - shift[:, None, None]
        f = frac[:, None, None]
        return jnp.where(rel == 0, 1 - f, 0.0) + jnp.where(rel == 1, f, 0.0)

    ty = taps(sy - cy, pts[:, 1] - y0)
    tx = taps(sx - cx, pts[:, 0] - x0)
    rows = jnp.einsum("piy,pyx->pix", ty, win, precision=_HI)
    return jnp.einsum("pix,pax->pai", rows, tx, precision=_HI).reshape(p, k * k)  # x-major


def _on_the_fly_level(f1: Array, f2: Array, pts: Array, radius: int) -> jax.Array:
    """One pyramid level without the volume: (B, H, W, (2r+1)^2).

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

    def dot_at(off):
        xi, yi = x0 + off[0], y0 + off[1]
        inside = (xi >= 0) & (xi < w2) & (yi >= 0) & (yi < h2)
        idx = jnp.clip(yi, 0, h2 - 1) * w2 + jnp.clip(xi, 0, w2 - 1)
        g = jnp.take_along_axis(f2, idx[..., None], axis=1)  # (B, HW, C)
        return jnp.where(inside, jnp.einsum("bnc,bnc->bn", g, f1, precision=_HI), 0.0)

    dots = jax.lax.map(dot_at, dxy, batch_size=n).reshape(n, n, b, h, w)  # [x offset, y offset]
    dots = dots / jnp.sqrt(jnp.float32(c))
    wx, wy = fx[None, None], fy[None, None]
    vals = ((1 - wx) * (1 - wy) * dots[:-1, :-1] + wx * (1 - wy) * dots[1:, :-1]
            + (1 - wx) * wy * dots[:-1, 1:] + wx * wy * dots[1:, 1:])  # (2r+1, 2r+1, B, H, W)
    return jnp.moveaxis(vals.reshape(-1, b, h, w), 0, -1)


