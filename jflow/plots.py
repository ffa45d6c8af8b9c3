"""Line and bar plots drawn with PIL (matplotlib is not a dependency): experiments, notebooks,
training."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
DASHES = [None, (8, 4), (2, 3), (10, 3, 2, 3)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
        return f"{v:.0e}"
    return f"{v:g}"


def _dashed(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color, width: int,
            dash: tuple[int, ...] | None) -> None:
    if dash is None:
        draw.line(pts, fill=color, width=width, joint="curve")
        return
    pattern, k, left, on = list(dash), 0, float(dash[0]), True
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        seg = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while pos < seg:
            step = min(left, seg - pos)
            a, b = pos / seg, (pos + step) / seg
            if on:
                draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                           (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=color, width=width)
            pos += step
            left -= step
            if left <= 1e-9:
                k = (k + 1) % len(pattern)
                left, on = float(pattern[k]), not on


def line_plot(path: str, series: Sequence[dict], *, title: str, xlabel: str, ylabel: str,
              logy: bool = False, size: tuple[int, int] = (900, 560)) -> None:
    """Writes a PNG. ``series``: dicts with ``x``, ``y`` (sequences), ``label`` and optional
    ``color`` (RGB), ``dash`` (on/off pixel pattern) and ``marker`` (bool, default True).
    Missing (None) and non-finite points (and non-positive ones with ``logy``) are skipped."""
    w, h = size
    left, right, top, bottom = 90, 230, 50, 60
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(13)

    def ok(x, y):
        return (x is not None and y is not None and math.isfinite(float(x))
                and math.isfinite(float(y)) and (float(y) > 0 or not logy))

    clean = []
    for s in series:
        pts = [(float(x), float(y)) for x, y in zip(s["x"], s["y"]) if ok(x, y)]
        clean.append((s, pts))
    xs = [p[0] for _, pts in clean for p in pts] or [0.0, 1.0]
    ys = [p[1] for _, pts in clean for p in pts] or [1.0, 10.0]
    tf = (lambda v: math.log10(v)) if logy else (lambda v: v)
    x0, x1 = min(xs), max(xs)
    y0, y1 = tf(min(ys)), tf(max(ys))
    if logy:
        y0, y1 = math.floor(y0), math.ceil(y1)
        if y1 == y0:
            y1 += 1
    else:
        pad = 0.05 * (y1 - y0 or 1.0)
        y0, y1 = (0.0 if min(ys) >= 0 and y0 - pad < 0 else y0 - pad), y1 + pad
    if x1 == x0:
        x1 = x0 + 1.0

    def px(x, y):
        u = left + (x - x0) / (x1 - x0) * (w - left - right)
        v = h - bottom - (tf(y) - y0) / (y1 - y0) * (h - top - bottom)
        return u, v

    # Axes, grid and ticks.
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for xt in _ticks(x0, x1):
        u = px(xt, 10 ** y0 if logy else y0)[0]
        draw.line([(u, top), (u, h - bottom)], fill=(230, 230, 230))
        draw.text((u, h - bottom + 6), _fmt(xt), fill="black", font=small, anchor="mt")
    yticks = [10.0 ** e for e in range(int(y0), int(y1) + 1)] if logy else _ticks(y0, y1)
    if logy and len(yticks) > 9:
        yticks = yticks[::math.ceil(len(yticks) / 9)]
    for yt in yticks:
        v = px(x0, yt)[1]
        draw.line([(left, v), (w - right, v)], fill=(230, 230, 230))
        draw.text((left - 6, v), _fmt(yt), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    draw.text(((left + w - right) / 2, 18), title, fill="black", font=font, anchor="mt")
    draw.text(((left + w - right) / 2, h - 22), xlabel, fill="black", font=font, anchor="mt")
    label = Image.new("RGB", (h - top - bottom, 24), "white")
    ImageDraw.Draw(label).text((label.width / 2, 12), ylabel + (" (log)" if logy else ""),
                               fill="black", font=font, anchor="mm")
    img.paste(label.rotate(90, expand=True), (8, top))

    # Series and legend.
    for i, (s, pts) in enumerate(clean):
        color = tuple(s.get("color") or COLORS[i % len(COLORS)])
        dash = s.get("dash", DASHES[i % len(DASHES)])
        p = [px(x, y) for x, y in pts]
        if len(p) > 1:
            _dashed(draw, p, color, 2, dash)
        if s.get("marker", True):
            for u, v in p:
                draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=color)
        ly = top + 10 + 22 * i
        lx = w - right + 12
        _dashed(draw, [(lx, ly), (lx + 30, ly)], color, 3, dash)
        draw.text((lx + 38, ly), str(s["label"]), fill="black", font=small, anchor="lm")
    img.save(path)


def bar_plot(path: str, labels: Sequence[str], values: Sequence[float], *, title: str,
             ylabel: str, reference: float | None = None, size: tuple[int, int] | None = None,
             marks: Sequence[float | None] | None = None, marks_label: str = "") -> None:
    """Writes a PNG of horizontal bars, one per label (top to bottom), each with its value; an
    optional dashed vertical line at ``reference`` (e.g. a target) and, per bar, an optional
    mark (a vertical tick across the bar's row, e.g. a bound; None: none), named in a legend
    by ``marks_label``."""
    vals = [float(v) for v in values]
    if marks is not None and len(marks) != len(vals):
        raise ValueError(f"bar_plot: {len(marks)} marks for {len(vals)} bars")
    ticks = [None if m is None or not math.isfinite(float(m)) else float(m)
             for m in (marks or [None] * len(vals))]
    legend = bool(marks_label) and any(m is not None for m in ticks)
    left, right, top, bottom = 230, 40, 64 if legend else 50, 40  # the legend above the frame
    w, h = size or (900, top + 40 + 34 * max(len(labels), 1))
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(13)
    hi = max([v for v in vals if math.isfinite(v)] + [m for m in ticks if m is not None]
             + [reference or 0.0, 1e-9]) * 1.1

    def u(v):
        return left + v / hi * (w - left - right)

    for xt in _ticks(0.0, hi):
        draw.line([(u(xt), top), (u(xt), h - bottom)], fill=(230, 230, 230))
        draw.text((u(xt), h - bottom + 6), _fmt(xt), fill="black", font=small, anchor="mt")
    step = (h - top - bottom) / max(len(vals), 1)
    for i, (name, v) in enumerate(zip(labels, vals)):
        y = top + (i + 0.5) * step
        draw.text((left - 8, y), str(name), fill="black", font=small, anchor="rm")
        if math.isfinite(v):
            draw.rectangle([left, y - 0.35 * step, u(v), y + 0.35 * step],
                           fill=COLORS[0 if reference is None or v >= reference else 3])
            draw.text((u(v) + 4, y), f"{v:.2f}", fill="black", font=small, anchor="lm")
    for i, m in enumerate(ticks):
        if m is not None:
            y = top + (i + 0.5) * step
            draw.line([(u(m), y - 0.45 * step), (u(m), y + 0.45 * step)], fill=COLORS[1], width=3)
    if legend:
        x = w - right - draw.textlength(marks_label, font=small)  # right-aligned, above the frame
        draw.line([(x - 10, top - 19), (x - 10, top - 5)], fill=COLORS[1], width=3)
        draw.text((x, top - 12), marks_label, fill="black", font=small, anchor="lm")
    if reference is not None:
        _dashed(draw, [(u(reference), top), (u(reference), h - bottom)], (0, 0, 0), 1, (6, 4))
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    draw.text((w / 2, 18), title, fill="black", font=font, anchor="mt")
    draw.text(((left + w - right) / 2, h - 18), ylabel, fill="black", font=small, anchor="mt")
    img.save(path)


def to_list(a) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def show(image, title: str = "") -> None:
    """Shows an (H, W, 3) uint8 array or an image file inline in Jupyter / Colab; elsewhere (a
    plain ``python notebook.py`` run) prints what would be shown."""
    from PIL import Image as PILImage

    pil = (PILImage.open(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__")
           else PILImage.fromarray(np.asarray(image)))
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            if title:
                print(title)
            display(pil)
            return
    except ImportError:
        pass
    print(f"[image {title}: {pil.width}x{pil.height}]")
