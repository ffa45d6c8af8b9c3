"""Texture bank for the synthetic dataset: procedural textures plus, when scikit-image is
installed, the photographs it ships (read from its data folder with PIL; nothing is downloaded).

Procedural kinds: multi-octave colour value noise, noise-warped stripes, rotated checkers,
random colour blobs, and colour gradients; every kind gets a fine noise octave so no region is
flat (correlation-based flow needs texture everywhere). The bank is a pure function of its
seed and is cached per process.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from jflow.data.resize import resize_bilinear

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
          "ihc.png", "retina.jpg", "motorcycle_left.png", "brick.png", "grass.png",
          "gravel.png", "camera.png", "moon.png", "coins.png")


def value_noise(rng: np.random.Generator, size: int, channels: int = 3,
                octaves: int = 5, base_cells: int = 4, persistence: float = 0.6) -> np.ndarray:
    """Sum of bilinearly upsampled random grids, (size, size, channels) in about [0, 1]."""
    out = np.zeros((size, size, channels), np.float32)
    amp, total, cells = 1.0, 0.0, base_cells
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
        up = resize_bilinear(grid, size / (cells + 1), size / (cells + 1))[:size, :size]
        out[: up.shape[0], : up.shape[1]] += amp * up
        total += amp
        amp *= persistence
        cells = min(cells * 2, size // 2)
    return out / total


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 255, (n, 3)).astype(np.float32)


def procedural_texture(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """One procedural texture, uint8 (size, size, 3)."""
    kinds = ("noise", "stripes", "checker", "blobs", "gradient")
    kind = kind or kinds[rng.integers(len(kinds))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "noise":
        img = value_noise(rng, size, 3, base_cells=int(rng.integers(2, 8))) * 255.0
        img = (img - img.mean()) * rng.uniform(1.5, 3.0) + rng.uniform(60, 200, 3)
    elif kind in ("stripes", "checker"):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        warp = (value_noise(rng, size, 1, base_cells=3)[..., 0] - 0.5) * rng.uniform(0, 30)
        a = (xx * np.cos(angle) + yy * np.sin(angle) + warp) / period
        if kind == "stripes":
            t = 0.5 + 0.5 * np.sin(2 * np.pi * a)
        else:
            b = (-xx * np.sin(angle) + yy * np.cos(angle) + warp) / period
            t = ((np.floor(a) + np.floor(b)) % 2).astype(np.float32)
        c0, c1 = _palette(rng, 2)
        img = c0 + t[..., None] * (c1 - c0)
    elif kind == "blobs":
        img = np.zeros((size, size, 3), np.float32) + _palette(rng, 1)[0]
        for _ in range(int(rng.integers(20, 60))):
            cx, cy = rng.uniform(0, size, 2)
            r = rng.uniform(3, size / 8)
            y0, y1 = max(int(cy - 3 * r), 0), min(int(cy + 3 * r) + 1, size)
            x0, x1 = max(int(cx - 3 * r), 0), min(int(cx + 3 * r) + 1, size)
            win = (slice(y0, y1), slice(x0, x1))
            m = np.exp(-((xx[win] - cx) ** 2 + (yy[win] - cy) ** 2) / (2 * r * r))[..., None]
            img[win] = img[win] * (1 - m) + _palette(rng, 1)[0] * m
    elif kind == "gradient":
        c = _palette(rng, 4)
        u, v = (xx / size)[..., None], (yy / size)[..., None]
        img = (c[0] * (1 - u) * (1 - v) + c[1] * u * (1 - v) + c[2] * (1 - u) * v + c[3] * u * v)
    else:
        raise ValueError(f"procedural_texture: unknown kind {kind!r}; choose from {kinds}")
    fine = (value_noise(rng, size, 3, octaves=1, base_cells=size // 4) - 0.5) * rng.uniform(40, 90)
    return np.clip(np.rint(img + fine), 0, 255).astype(np.uint8)


def shipped_photos(size: int) -> list[np.ndarray]:
    """scikit-image's shipped photographs as uint8 RGB crops (empty without scikit-image)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    from PIL import Image

    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    out = []
    for name in PHOTOS:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except OSError:
            continue
        side = min(img.shape[:2])
        img = img[:side, :side]
        if side != size:
            img = resize_bilinear(img, size / side, size / side)[:size, :size]
        out.append(np.ascontiguousarray(img))
    return out


def texture_bank(seed: int = 0, count: int = 24, size: int = 256,
                 photos: bool = True) -> tuple[np.ndarray, ...]:
    """`count` procedural textures (a pure function of `seed`) plus shipped photos (cached)."""
    return _texture_bank(int(seed), int(count), int(size), bool(photos))


@functools.lru_cache(maxsize=4)
def _texture_bank(seed: int, count: int, size: int, photos: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng([seed, 7919])
    bank = [procedural_texture(rng, size) for _ in range(count)]
    if photos:
        bank += shipped_photos(size)
    return tuple(bank)
