"""Bilinear resize with OpenCV `cv2.resize(..., fx, fy, INTER_LINEAR)` semantics, in numpy.

Output size is `round(W * fx) x round(H * fy)`; output pixel `x` samples the input at
`(x + 0.5) / fx - 0.5` (half-pixel centres), clamped to the border. Like OpenCV's INTER_LINEAR
(and unlike area averaging or PIL's antialiased filters) downscaling also interpolates between the
two nearest input pixels only. OpenCV computes uint8 images with 11-bit fixed-point weights, so
uint8 results can differ from it by one grey level; float arrays agree to rounding error.
"""
from __future__ import annotations

import numpy as np


def _axis_weights(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
    lo = np.floor(src)
    frac = src - lo
    lo = lo.astype(np.int64)
    # OpenCV clamps to the border: weights collapse onto the edge pixel.
    frac = np.where(lo < 0, 0.0, frac)
    lo = np.clip(lo, 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = np.where(lo >= n_in - 1, 0.0, frac)
    return lo, hi, frac.astype(np.float32)


def resized_shape(shape_hw: tuple[int, int], fx: float, fy: float) -> tuple[int, int]:
    """(H', W') that `resize_bilinear` produces for scale factors (fx, fy), like OpenCV."""
    h, w = shape_hw
    return int(round(h * fy)), int(round(w * fx))


def resize_bilinear(array: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array by factors (fx, fy); uint8 in gives uint8 out."""
    if array.ndim not in (2, 3):
        raise ValueError(f"resize_bilinear: expected (H, W) or (H, W, C), got shape {array.shape}")
    if fx <= 0 or fy <= 0:
        raise ValueError(f"resize_bilinear: scale factors must be positive, got fx={fx}, fy={fy}")
    h, w = array.shape[:2]
    h2, w2 = resized_shape((h, w), fx, fy)
    if h2 < 1 or w2 < 1:
        raise ValueError(f"resize_bilinear: {h}x{w} scaled by ({fx}, {fy}) is empty")
    y0, y1, wy = _axis_weights(h, h2, fy)
    x0, x1, wx = _axis_weights(w, w2, fx)
    src = array if array.ndim == 3 else array[..., None]
    # Separable: blend rows, then columns (np.take is faster than fancy indexing).
    top = np.take(src, y0, axis=0).astype(np.float32)
    bottom = np.take(src, y1, axis=0).astype(np.float32)
    bottom -= top
    bottom *= wy[:, None, None]
    top += bottom
    out = np.take(top, x0, axis=1)
    right = np.take(top, x1, axis=1)
    right -= out
    right *= wx[None, :, None]
    out += right
    if array.ndim == 2:
        out = out[..., 0]
    if array.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32)
