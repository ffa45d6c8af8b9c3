"""Flow pictures: the Middlebury colour wheel, side-by-side panels, a wheel legend.

``flow_to_color(flow)`` is bit-identical to ``flow_vis.flow_to_color(flow)`` (and so to RAFT's
``flow_to_image``) for finite flow. Differences, on purpose:

- ``max_flow`` clips the flow *magnitude* at ``max_flow`` and normalises by it, keeping the
  direction (flow_vis/RAFT ``clip_flow`` clips each component to ``[0, clip]``, which zeroes
  negative components and changes the hue). A fixed ``max_flow`` gives every frame of a video
  the same scale.
- NaN/inf pixels are drawn black and do not take part in the normalisation.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from jflow import io as jio

# Middlebury wheel: ramps between red, yellow, green, cyan, blue, magenta (55 entries).
_WHEEL_SEGMENTS = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                   (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                   (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))
# Viridis, 9 anchors (linear interpolation between them) for error maps.
_VIRIDIS = np.array([(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
                     (31, 158, 137), (53, 183, 121), (110, 206, 88), (253, 231, 37)], np.float64)


def make_colorwheel() -> np.ndarray:
    """(55, 3) float64 Middlebury colour wheel, entries ``floor(255 * i / n)`` ramps."""
    rows = []
    for n, start, end in _WHEEL_SEGMENTS:
        ramp = np.floor(255 * np.arange(n) / n)[:, None]
        direction = (np.array(end) - np.array(start)) / 255.0
        rows.append(np.array(start, np.float64) + direction * ramp)
    return np.concatenate(rows)


_COLORWHEEL = make_colorwheel()


def _wheel_colors(u: np.ndarray, v: np.ndarray, rad: np.ndarray) -> np.ndarray:
    """Colour normalised flow (direction from u, v; saturation from rad) -> uint8 RGB."""
    ncols = _COLORWHEEL.shape[0]
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int32)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = fk - k0
    img = np.zeros(u.shape + (3,), np.uint8)
    inside = rad <= 1
    for i in range(3):
        col0 = _COLORWHEEL[k0, i] / 255.0
        col1 = _COLORWHEEL[k1, i] / 255.0
        col = (1 - f) * col0 + f * col1
        col[inside] = 1 - rad[inside] * (1 - col[inside])
        col[~inside] = col[~inside] * 0.75
        img[..., i] = np.floor(255 * col)
    return img


def flow_to_color(flow: Any, max_flow: Optional[float] = None,
                  convert_to_bgr: bool = False) -> np.ndarray:
    """(H, W, 2) flow -> (H, W, 3) uint8 Middlebury colours (see the module docstring).

    Without ``max_flow`` the largest finite magnitude maps to the wheel's rim.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow_to_color: flow must have shape (H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        flow = flow.astype(np.float32)
    finite = np.all(np.isfinite(flow), axis=-1)
    u = np.where(finite, flow[..., 0], 0)
    v = np.where(finite, flow[..., 1], 0)
    if max_flow is None:
        rad = np.sqrt(np.square(u) + np.square(v))
        rad_max = np.max(rad) if rad.size else 0
        u = u / (rad_max + 1e-5)
        v = v / (rad_max + 1e-5)
        rad = np.sqrt(np.square(u) + np.square(v))
    else:
        if not max_flow > 0:
            raise ValueError(f"flow_to_color: max_flow must be > 0, got {max_flow}")
        rad = np.minimum(np.sqrt(np.square(u) + np.square(v)) / max_flow, 1.0)
    img = _wheel_colors(u, v, rad)
    img[~finite] = 0
    return img[..., ::-1].copy() if convert_to_bgr else img


def apply_colormap(values: Any, vmax: float) -> np.ndarray:
    """Map values in [0, vmax] (clipped) to uint8 RGB with viridis; NaN -> black."""
    values = np.asarray(values, np.float64)
    t = np.clip(np.nan_to_num(values / vmax, nan=0.0), 0, 1) * (len(_VIRIDIS) - 1)
    i0 = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    frac = (t - i0)[..., None]
    rgb = (1 - frac) * _VIRIDIS[i0] + frac * _VIRIDIS[i0 + 1]
    rgb[np.isnan(values)] = 0
    return np.round(rgb).astype(np.uint8)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` in the top-left corner on a dark box (PIL default font)."""
    from PIL import Image, ImageDraw
    im = Image.fromarray(tile)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((2, 1), text)
    draw.rectangle((0, 0, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(im)


def _as_uint8_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"make_panel: image1 must be (H, W, 3) or (H, W), got {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)  # float 0-255
    return image


def make_panel(image1: Any, flow: Any, gt: Optional[Any] = None, valid: Optional[Any] = None,
               titles: bool = True, max_error: float = 10.0) -> np.ndarray:
    """Side by side: image1 | flow colour | GT colour | EPE map (the last two with ``gt``).

    Prediction and GT share one colour scale (largest finite GT magnitude over valid pixels,
    else the prediction's). The EPE map uses viridis on [0, ``max_error``] px; invalid pixels
    are black. Returns uint8 (H, k*W, 3).
    """
    image1 = _as_uint8_image(image1)
    flow = np.asarray(flow, np.float32)
    h, w = image1.shape[:2]
    if flow.shape != (h, w, 2):
        raise ValueError(f"make_panel: flow must have shape {(h, w, 2)}, got {flow.shape}")
    ref = flow if gt is None else np.asarray(gt, np.float32)
    if ref.shape != (h, w, 2):
        raise ValueError(f"make_panel: gt must have shape {(h, w, 2)}, got {ref.shape}")
    mask = np.ones((h, w), bool) if valid is None else np.asarray(valid).astype(bool)
    if mask.shape != (h, w):
        raise ValueError(f"make_panel: valid must have shape {(h, w)}, got {mask.shape}")
    mag = np.linalg.norm(ref, axis=-1)
    mag = mag[mask & np.isfinite(mag)]
    scale = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    tiles = [(image1, "image1"), (flow_to_color(flow, max_flow=scale), "flow")]
    if gt is not None:
        gt_img = flow_to_color(ref, max_flow=scale)
        gt_img[~mask] = 0
        epe = np.linalg.norm(flow - ref, axis=-1)
        epe_img = apply_colormap(epe, max_error)
        epe_img[~mask | ~np.isfinite(epe)] = 0
        sel = epe[mask]
        mean = float(np.mean(np.where(np.isfinite(sel), sel, np.inf))) if sel.size else np.nan
        tiles += [(gt_img, "ground truth"), (epe_img, f"EPE {mean:.2f} (0-{max_error:g} px)")]
    if titles:
        tiles = [(_label(t, name), name) for t, name in tiles]
    return np.concatenate([t for t, _ in tiles], axis=1)


def save_panel(path: str | os.PathLike, image1: Any, flow: Any, gt: Optional[Any] = None,
               valid: Optional[Any] = None, titles: bool = True) -> None:
    """``make_panel`` written to ``path`` (PNG/JPEG/PPM by extension, atomic)."""
    jio.write_image(path, make_panel(image1, flow, gt, valid, titles))


def colorwheel_legend(size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8 picture of the wheel: the flow at each pixel is its offset from
    the centre, the rim is ``max_flow``; outside the disc is white."""
    if size < 2:
        raise ValueError(f"colorwheel_legend: size must be >= 2, got {size}")
    c = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([xs - c, ys - c], axis=-1)
    img = flow_to_color(flow, max_flow=c)
    img[np.hypot(xs - c, ys - c) > c] = 255
    return img
