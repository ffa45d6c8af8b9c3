"""Colour jitter with torchvision `ColorJitter` semantics on uint8 RGB images.

The four operations run in a random order (a permutation drawn first, then the factors):
- brightness `f ~ U(max(0, 1-b), 1+b)`: blend with black (`PIL.ImageEnhance.Brightness`);
- contrast `f ~ U(max(0, 1-c), 1+c)`: blend with the integer mean of the grayscale image
  (`ImageEnhance.Contrast`);
- saturation `f ~ U(max(0, 1-s), 1+s)`: blend with the grayscale image (`ImageEnhance.Color`);
- hue `f ~ U(-h, h)`: add `uint8(f * 255)` (wrapping) to PIL's 8-bit HSV hue.
These are the PIL operations torchvision applies to PIL images (as RAFT does), so given the same
factors and order the results are identical; the random streams differ (numpy, not torch).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageEnhance


@dataclasses.dataclass(frozen=True)
class ColorJitter:
    """Jitter strengths (brightness, contrast, saturation, hue) as in torchvision."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5 / 3.14

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Jitter one uint8 (H, W, 3) RGB image (or a stacked pair: statistics are shared)."""
        order = rng.permutation(4)
        factors = (
            rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness),
            rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast),
            rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation),
            rng.uniform(-self.hue, self.hue),
        )
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        out = image
        for k in order:
            out = ops[k](out, factors[k])
        return out


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale intensities by `factor` (blend with black)."""
    return np.asarray(ImageEnhance.Brightness(_pil(image)).enhance(factor))


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the (integer) mean grey level of the image."""
    return np.asarray(ImageEnhance.Contrast(_pil(image)).enhance(factor))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grayscale version of the image."""
    return np.asarray(ImageEnhance.Color(_pil(image)).enhance(factor))


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
    """Shift PIL's 8-bit HSV hue by `uint8(factor * 255)`, wrapping (factor in [-0.5, 0.5])."""
    if not -0.5 <= factor <= 0.5:
        raise ValueError(f"adjust_hue: factor must be in [-0.5, 0.5], got {factor}")
    shift = int(factor * 255) % 256  # torchvision: np.array(f * 255).astype(np.uint8)
    if shift == 0:
        return np.asarray(image)
    h, s, v = _pil(image).convert("HSV").split()
    h = Image.fromarray(((np.asarray(h, np.uint16) + shift) % 256).astype(np.uint8), "L")
    return np.asarray(Image.merge("HSV", (h, s, v)).convert("RGB"))


def grayscale(image: np.ndarray) -> np.ndarray:
    """PIL "L" conversion of a uint8 RGB image, as float32 (H, W)."""
    return np.asarray(_pil(image).convert("L"), np.float32)
