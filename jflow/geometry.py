"""Geometry helpers shared by every model: grids, bilinear sampling, warping, padding, upsampling.

All arrays are NHWC. Flow and coordinates carry (x, y) in the last axis, in pixels, with pixel
centre ``i`` at coordinate ``i`` (torch ``grid_sample(align_corners=True)`` after normalising with
``2x/(W-1)-1``). Functions accept numpy or jax arrays; the jax ones return jax arrays,
``forward_interpolate`` is numpy only (it runs on the host between frames).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

Array = Any
_PADDINGS = ("zeros", "border")
_HIGHEST = jax.lax.Precision.HIGHEST  # full fp32 on GPU/TPU (no TF32/bf16 passes)


def coords_grid(batch: int, h: int, w: int, dtype=jnp.float32) -> jax.Array:
    """Pixel coordinate grid (B, H, W, 2); channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
    grid = jnp.stack([xs, ys], axis=-1)
    return jnp.broadcast_to(grid[None], (batch, h, w, 2))


def _check_padding(padding: str) -> None:
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")


def bilinear_sample(img: Array, coords: Array, *, padding: str = "zeros") -> jax.Array:
    """Sample ``img`` (B, H, W, C) at pixel ``coords`` (B, ..., 2) -> (B, ..., C).

    ``padding="zeros"``: corners outside the image contribute 0 (torch zero padding).
    ``padding="border"``: coordinates are clamped to the image first (torch border padding).
    Differentiable w.r.t. ``img`` and ``coords``; one flat gather per corner and batch element.
    """
    _check_padding(padding)
    img = jnp.asarray(img)
    coords = jnp.asarray(coords)
    if img.ndim != 4:
        raise ValueError(f"bilinear_sample: img must be (B, H, W, C), got shape {img.shape}")
    if coords.shape[-1] != 2 or coords.shape[0] != img.shape[0]:
        raise ValueError(
            f"bilinear_sample: coords must be (B, ..., 2) with B={img.shape[0]}, "
            f"got shape {coords.shape}")
    b, h, w, c = img.shape
    out_shape = coords.shape[:-1]
    dtype = jnp.result_type(img.dtype, coords.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    xy = coords.reshape(b, -1, 2).astype(dtype)
    x, y = xy[..., 0], xy[..., 1]
    if padding == "border":
        x = jnp.clip(x, 0, w - 1)
        y = jnp.clip(y, 0, h - 1)
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    wx1 = x - x0
    wy1 = y - y0
    wx0 = 1 - wx1
    wy0 = 1 - wy1
    x0i = x0.astype(jnp.int32)
    y0i = y0.astype(jnp.int32)

    flat = img.reshape(b, h * w, c).astype(dtype)
    out = 0
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xi = x0i + dx
            yi = y0i + dy
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
            corner = jax.vmap(lambda im, i: im[i])(flat, idx)  # (B, N, C)
            # a sum of products, not jnp.sum over a corner axis: XLA:CPU hands that reduction to
            # a library call an order of magnitude slower than this elementwise fusion
            out = out + corner * jnp.where(inside, wx * wy, 0)[..., None]
    return out.reshape(*out_shape, c)


def grid_sample(img: Array, grid: Array, *, align_corners: bool,
                padding: str = "zeros") -> jax.Array:
    """torch ``F.grid_sample`` (bilinear) on normalised [-1, 1] (x, y) grids, NHWC.

    ``img`` (B, H, W, C), ``grid`` (B, ..., 2) -> (B, ..., C).
    """
    _check_padding(padding)
    img = jnp.asarray(img)
    grid = jnp.asarray(grid)
    h, w = img.shape[1], img.shape[2]
    size = jnp.array([w, h], dtype=grid.dtype if jnp.issubdtype(grid.dtype, jnp.floating)
                     else jnp.float32)
    if align_corners:
        coords = (grid + 1) / 2 * (size - 1)
    else:
        coords = ((grid + 1) * size - 1) / 2
    return bilinear_sample(img, coords, padding=padding)


def backward_warp(img: Array, flow: Array, *, padding: str = "zeros") -> jax.Array:
    """Sample ``img`` at ``x + flow(x)``: (B, H, W, C) and (B, H, W, 2), or unbatched."""
    img = jnp.asarray(img)
    flow = jnp.asarray(flow)
    unbatched = img.ndim == 3
    if unbatched:
        img, flow = img[None], flow[None]
    if flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[:3] != img.shape[:3]:
        raise ValueError(
            f"backward_warp: flow must be (B, H, W, 2) matching img {img.shape}, got {flow.shape}")
    b, h, w, _ = flow.shape
    coords = coords_grid(b, h, w, dtype=jnp.result_type(flow.dtype, jnp.float32)) + flow
    out = bilinear_sample(img, coords, padding=padding)
    return out[0] if unbatched else out


def pad_amounts(size, multiple: int, centered: bool = True):
    """``(before, after)`` padding that brings ``size`` to the next multiple of ``multiple``:
    split evenly (the extra pixel after) when ``centered``, else all after. Works on ints and on
    ``jax.export`` symbolic sizes."""
    pad = ((size + multiple - 1) // multiple) * multiple - size
    before = pad // 2 if centered else 0
    return before, pad - before


def pad_axis(x: Array, axis: int, before, after, fill: str = "replicate") -> Array:
    """``x`` padded along ``axis`` by ``before`` / ``after`` entries, edge-replicated
    ("replicate") or zero ("zeros"), as one gather of clipped indices: works on ``jax.export``
    symbolic sizes (``jnp.pad`` needs concrete widths)."""
    size = x.shape[axis]
    idx = jax.lax.iota(jnp.int32, size + before + after) - jnp.asarray(before, jnp.int32)
    last = jnp.asarray(size, jnp.int32) - 1
    out = jnp.take(x, jnp.clip(idx, 0, last), axis=axis)
    if fill == "zeros":
        inside = (idx >= 0) & (idx <= last)
        shape = [1] * x.ndim
        shape[axis] = -1
        out = jnp.where(inside.reshape(shape), out, jnp.zeros((), out.dtype))
    return out


class InputPadder:
    """Pads images so H and W are multiples of ``multiple``; ``unpad`` is the exact inverse.

    ``mode="sintel"`` splits the padding evenly (extra pixel bottom/right); ``mode="kitti"``
    splits the width evenly and puts all vertical padding at the bottom (as RAFT). ``fill`` is
    ``"replicate"`` (RAFT) or ``"zeros"`` (DIP). Arrays are (B, H, W, ...) when 4-D, (H, W, C) when
    3-D, (H, W) when 2-D; numpy stays numpy, jax stays jax.
    """

    def __init__(self, shape_hw: Sequence[int], multiple: int = 8, mode: str = "sintel",
                 fill: str = "replicate"):
        if len(shape_hw) != 2:
            raise ValueError(f"InputPadder: shape_hw must be (H, W), got {tuple(shape_hw)}")
        if mode not in ("sintel", "kitti"):
            raise ValueError(f"InputPadder: mode must be 'sintel' or 'kitti', got {mode!r}")
        if fill not in ("replicate", "zeros"):
            raise ValueError(f"InputPadder: fill must be 'replicate' or 'zeros', got {fill!r}")
        if multiple < 1:
            raise ValueError(f"InputPadder: multiple must be >= 1, got {multiple}")
        self.h, self.w = int(shape_hw[0]), int(shape_hw[1])
        self.multiple, self.mode, self.fill = multiple, mode, fill
        self.top, self.bottom = pad_amounts(self.h, multiple, centered=mode == "sintel")
        self.left, self.right = pad_amounts(self.w, multiple)

    @property
    def padded_hw(self) -> tuple[int, int]:
        return self.h + self.top + self.bottom, self.w + self.left + self.right

    def _hw_axes(self, array: Array, expect_hw: tuple[int, int], what: str) -> int:
        """Index of the H axis (W follows); checks the spatial size."""
        if array.ndim == 4:
            ax = 1
        elif array.ndim in (2, 3):
            ax = 0
        else:
            raise ValueError(
                f"InputPadder.{what}: expected a 2-, 3- or 4-D array, got {array.shape}")
        if tuple(array.shape[ax:ax + 2]) != expect_hw:
            raise ValueError(
                f"InputPadder.{what}: expected spatial size {expect_hw}, got array {array.shape}")
        return ax

    def pad(self, *arrays: Array) -> tuple:
        """Pad each array; always returns a tuple (``x, = padder.pad(x)``)."""
        out = []
        for a in arrays:
            ax = self._hw_axes(a, (self.h, self.w), "pad")
            widths = [(0, 0)] * a.ndim
            widths[ax] = (self.top, self.bottom)
            widths[ax + 1] = (self.left, self.right)
            xp = np if isinstance(a, np.ndarray) else jnp
            mode = "edge" if self.fill == "replicate" else "constant"
            out.append(xp.pad(a, widths, mode=mode))
        return tuple(out)

    def unpad(self, array: Array) -> Array:
        """Crop a padded array back to (H, W)."""
        ax = self._hw_axes(array, self.padded_hw, "unpad")
        sl = [slice(None)] * array.ndim
        sl[ax] = slice(self.top, self.top + self.h)
        sl[ax + 1] = slice(self.left, self.left + self.w)
        return array[tuple(sl)]


def convex_upsample(flow: Array, mask: Array, rate: int = 8) -> jax.Array:
    """RAFT convex upsampling: (B, H, W, 2) + mask (B, H, W, 9*rate^2) -> (B, rH, rW, 2).

    Any number of channels C works the same way ((B, H, W, C) -> (B, rH, rW, C), all times
    ``rate``; SEA-RAFT upsamples its mixture parameters with the flow's mask).

    Mask channel ``k*rate^2 + a*rate + b`` weighs 3x3 neighbour ``k`` (row-major, zero padded)
    for output pixel ``(rate*y + a, rate*x + b)``; softmax over the 9 neighbours; flow * rate.
    Computed in float32 at least (a bf16 mask from mixed precision is upcast first).
    """
    flow = jnp.asarray(flow)
    mask = jnp.asarray(mask)
    b, h, w, _ = flow.shape
    if mask.shape != (b, h, w, 9 * rate * rate):
        raise ValueError(f"convex_upsample: mask must be {(b, h, w, 9 * rate * rate)}, "
                         f"got {mask.shape}")
    dtype = jnp.result_type(mask.dtype, flow.dtype, jnp.float32)
    weights = jax.nn.softmax(mask.astype(dtype).reshape(b, h, w, 9, rate, rate), axis=3)
    padded = jnp.pad(rate * flow.astype(dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
    neigh = jnp.stack([padded[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)],
                      axis=3)  # (B, H, W, 9, 2)
    up = jnp.einsum("bhwkij,bhwkc->bhiwjc", weights, neigh, precision=_HIGHEST)
    return up.reshape(b, rate * h, rate * w, flow.shape[-1])


def linear_taps(n_in: int, n_out: int, *, align_corners: bool, scale: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's 1-D linear interpolation from ``n_in`` to ``n_out`` samples (no antialias) as taps
    ``(i0, i1, lam)``: ``out[j] = (1 - lam[j]) x[i0[j]] + lam[j] x[i1[j]]``.

    ``align_corners=True``: source ``j (n_in - 1) / (n_out - 1)``; ``False``: ``max((j + 0.5) / s
    - 0.5, 0)`` with ``s = scale`` (torch's ``scale_factor``) or ``n_out / n_in`` (``size=``).
    """
    j = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = j * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        s = n_out / n_in if scale is None else scale
        src = np.maximum((j + 0.5) / s - 0.5, 0.0)
    i0 = np.clip(np.floor(src).astype(np.int64), 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def resize_matrix(n_in: int, n_out: int, *, align_corners: bool, scale: float | None = None
                  ) -> np.ndarray:
    """(n_out, n_in) float64 matrix of :func:`linear_taps`."""
    i0, i1, lam = linear_taps(n_in, n_out, align_corners=align_corners, scale=scale)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def resize_separable(x: Array, mh: Array, mw: Array) -> jax.Array:
    """``mh @ x @ mw.T`` over the H and W axes of (B, H, W, C) ``x`` (float32-exact products)."""
    return jnp.einsum("Yh,bhwc,Xw->bYXc", mh, x, mw, precision=_HIGHEST)


def resize_bilinear(x: Array, hw: tuple[int, int], *, align_corners: bool,
                    scale: float | None = None) -> jax.Array:
    """torch ``F.interpolate(mode="bilinear")`` of (B, H, W, C) ``x`` to ``hw`` (no antialias)."""
    _, h, w, _ = x.shape
    mh = jnp.asarray(resize_matrix(h, int(hw[0]), align_corners=align_corners, scale=scale),
                     x.dtype)
    mw = jnp.asarray(resize_matrix(w, int(hw[1]), align_corners=align_corners, scale=scale),
                     x.dtype)
    return resize_separable(x, mh, mw)


def _interp_matrix_traced(n_in, n_out, dtype) -> jax.Array:
    """:func:`resize_matrix` (align_corners) built in the graph, for symbolic sizes (``jax.export`` with
    symbolic H, W): the same formula in ``dtype`` instead of float64."""
    row = jax.lax.broadcasted_iota(jnp.int32, (n_out, n_in), 0).astype(dtype)
    col = jax.lax.broadcasted_iota(jnp.int32, (n_out, n_in), 1)
    last_in = jnp.asarray(n_in, jnp.int32) - 1
    scale = last_in.astype(dtype) / jnp.maximum(jnp.asarray(n_out, jnp.int32) - 1, 1).astype(dtype)
    pos = row * scale
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, last_in)
    hi = jnp.minimum(lo + 1, last_in)
    frac = pos - lo.astype(dtype)
    return (jnp.where(col == lo, 1 - frac, 0) + jnp.where(col == hi, frac, 0)).astype(dtype)


def upflow(flow: Array, rate: int = 8) -> jax.Array:
    """Bilinear (align_corners=True) resize of (B, H, W, 2) flow by ``rate``, times ``rate``."""
    flow = jnp.asarray(flow)
    _, h, w, _ = flow.shape
    dtype = flow.dtype if jnp.issubdtype(flow.dtype, jnp.floating) else jnp.float32
    if isinstance(h, int) and isinstance(w, int):
        return rate * resize_bilinear(flow.astype(dtype), (rate * h, rate * w), align_corners=True)
    # symbolic sizes (jax.export): the matrices are built in the graph
    mh = _interp_matrix_traced(h, rate * h, dtype)
    mw = _interp_matrix_traced(w, rate * w, dtype)
    return rate * resize_separable(flow.astype(dtype), mh, mw)


def forward_interpolate(flow: Array) -> np.ndarray:
    """RAFT warm start: splat each pixel to ``x + flow(x)``, fill the grid by nearest neighbour.

    Targets strictly inside (0, W) x (0, H) are kept (scipy ``griddata(method='nearest')``
    semantics); with no valid target the result is zeros. (H, W, 2) or (B, H, W, 2), numpy out.
    """
    flow = np.asarray(flow)
    if flow.ndim == 4:
        return np.stack([forward_interpolate(f) for f in flow])
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"forward_interpolate: flow must be (H, W, 2) or (B, H, W, 2), "
                         f"got {flow.shape}")
    out_dtype = flow.dtype if np.issubdtype(flow.dtype, np.floating) else np.float32
    h, w, _ = flow.shape
    y0, x0 = np.mgrid[0:h, 0:w]
    dx = flow[..., 0].astype(np.float64).ravel()
    dy = flow[..., 1].astype(np.float64).ravel()
    x1 = x0.ravel() + dx
    y1 = y0.ravel() + dy
    valid = (x1 > 0) & (x1 < w) & (y1 > 0) & (y1 < h)
    if not valid.any():
        return np.zeros_like(flow, dtype=out_dtype)
    tree = cKDTree(np.stack([x1[valid], y1[valid]], axis=1))
    _, nearest = tree.query(np.stack([x0.ravel(), y0.ravel()], axis=1).astype(np.float64))
    out = np.stack([dx[valid][nearest], dy[valid][nearest]], axis=-1)
    return out.reshape(h, w, 2).astype(out_dtype)
