"""Ten real Sintel frames shipped with jflow (CC-BY 3.0, see README.md here): no download needed.

``sintel_dir()`` is the folder (for ``python -m jflow.predict --frames_dir=...``),
``sintel_frames()`` the sorted frame paths, ``load_sintel(n, scale)`` the first ``n`` frames as
uint8 RGB arrays, optionally downscaled.
"""
from __future__ import annotations

import os

import numpy as np

_DIR = os.path.dirname(os.path.abspath(__file__))


def sintel_dir() -> str:
    """The folder holding ``frame_0016.png`` ... ``frame_0025.png`` (1024x436 RGB)."""
    return _DIR


def sintel_frames() -> list[str]:
    """Paths of the ten frames, in order."""
    return sorted(os.path.join(_DIR, f) for f in os.listdir(_DIR) if f.endswith(".png"))


def load_sintel(n: int = 10, scale: float = 1.0) -> list[np.ndarray]:
    """The first ``n`` frames as (H, W, 3) uint8 RGB, resized by ``scale`` (bilinear) if != 1."""
    from PIL import Image

    frames = []
    for path in sintel_frames()[:n]:
        im = Image.open(path).convert("RGB")
        if scale != 1.0:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
        frames.append(np.asarray(im))
    return frames
