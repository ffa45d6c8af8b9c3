"""Procedural synthetic flow dataset (FlyingChairs / AutoFlow in spirit) — needs no download.

Each sample is a textured background plus several textured foreground layers with random
outlines (a superellipse whose radius is modulated by a few random harmonics). Layer k has an
affine placement `A_k` (layer units -> image-1 pixels) and its own random motion `M_k`
(translation, rotation and scale about the layer centre), so frame 2 uses `M_k ∘ A_k`.
Both frames are rendered by backward mapping: each pixel looks up the topmost layer covering
it and samples that layer's texture at `A^-1(x)` (bilinear, reflected borders).

Ground truth is exact: `flow(x) = M_k(x) - x` for the topmost layer `k` at `x` in frame 1.
`valid(x)` is True where that surface point is visible in frame 2 (no higher layer covers
`M_k(x)`) and `M_k(x)` lies inside the frame; with `occluded_valid=True` every pixel is valid.
Sample `i` is a pure function of `(seed, i)` and the texture bank (`jflow.data.textures`):
procedural textures always, plus scikit-image's shipped photographs when it is installed
(`photos=False` gives the same samples with or without it).
Displacements: translations are mostly small (|N(0, max_flow/4)|) and with probability
`large_motion_prob` uniform in [max_flow/2, max_flow]; `max_flow` defaults to a quarter of the
shorter image side (16 px at 64x96).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from jflow.data import params as P
from jflow.data.textures import texture_bank


@dataclasses.dataclass
class _Layer:
    linear1: np.ndarray      # (2, 2) layer units -> image pixels, frame 1
    centre: np.ndarray       # (2,) image position of the layer origin, frame 1
    motion: np.ndarray       # (2, 2) linear part of M about the centre
    shift: np.ndarray        # (2,) translation of M
    shape: tuple | None      # (power, harmonics (K, 3)) or None for the background
    radius: float            # bound on |u| of the outline, layer units
    texture: np.ndarray      # uint8 (S, S, 3)
    tex_scale: float         # texture pixels per layer unit
    tex_origin: np.ndarray   # texture pixel of the layer origin
    gain: np.ndarray         # (3,) colour gain
    bias: np.ndarray         # (3,) colour offset

    def affine(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(linear, offset) mapping layer units to image pixels in frame 1 or 2."""
        if frame == 1:
            return self.linear1, self.centre
        return self.motion @ self.linear1, self.centre + self.shift

    def flow(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Displacement M(p) - p of image points p = (x, y)."""
        dx, dy = x - np.float32(self.centre[0]), y - np.float32(self.centre[1])
        m = self.motion.astype(np.float32)
        t = self.shift.astype(np.float32)
        return (m[0, 0] - 1) * dx + m[0, 1] * dy + t[0], m[1, 0] * dx + (m[1, 1] - 1) * dy + t[1]


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _inside(shape: tuple | None, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether layer points (u, v) lie inside the outline."""
    if shape is None:
        return np.ones(u.shape, bool)
    power, harmonics = shape
    rho = (np.abs(u) ** np.float32(power) + np.abs(v) ** np.float32(power)) ** np.float32(
        1.0 / power)
    phi = np.arctan2(v, u)
    r = np.ones_like(u)
    for k, amp, phase in harmonics:
        r += np.float32(amp) * np.cos(np.float32(k) * phi + np.float32(phase))
    return rho < r


def _mirror(t: np.ndarray, size: int) -> np.ndarray:
    """Reflect coordinates into [0, size - 1] (mirrored, period 2 (size - 1))."""
    last = np.float32(size - 1)
    if t.size == 0 or (t.min() >= 0 and t.max() <= last):
        return t
    m = np.mod(t, 2 * last)
    return last - np.abs(m - last)


def _sample_texture(tex: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Bilinear lookup with mirrored borders; returns float32 (N, 3)."""
    size = tex.shape[0]
    tx, ty = _mirror(tx, size), _mirror(ty, size)
    x0 = np.minimum(tx.astype(np.int32), size - 2)
    y0 = np.minimum(ty.astype(np.int32), size - 2)
    wx = (tx - x0).astype(np.float32)[:, None]
    wy = (ty - y0).astype(np.float32)[:, None]
    flat = tex.reshape(-1, 3)
    i00 = y0 * size + x0
    top = np.take(flat, i00, axis=0).astype(np.float32)
    right = np.take(flat, i00 + 1, axis=0).astype(np.float32)
    right -= top
    right *= wx
    top += right
    bottom = np.take(flat, i00 + size, axis=0).astype(np.float32)
    right = np.take(flat, i00 + size + 1, axis=0).astype(np.float32)
    right -= bottom
    right *= wx
    bottom += right
    bottom -= top
    bottom *= wy
    top += bottom
    return top


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return xx, yy


class SyntheticFlow:
    """`num_samples` synthetic pairs of `height` x `width`, sample `i` a pure function of
    `(seed, i)`. Random access like the real datasets; samples follow the data contract."""

    name = "synthetic"

    def __init__(self, num_samples: int, height: int, width: int, seed: int = 0, *,
                 max_flow: float | None = None, num_layers: tuple[int, int] = (3, 6),
                 large_motion_prob: float = 0.2, occluded_valid: bool = False,
                 photos: bool = True, augment_params: P.AugmentParams = P.SYNTHETIC):
        if num_samples < 1 or height < 8 or width < 8:
            raise ValueError(f"SyntheticFlow: need num_samples >= 1 and height, width >= 8, got "
                             f"{num_samples}, {height}, {width}")
        if not 0 <= num_layers[0] <= num_layers[1]:
            raise ValueError(f"SyntheticFlow: num_layers must be (min, max), got {num_layers}")
        self.num_samples, self.height, self.width, self.seed = num_samples, height, width, seed
        self.max_flow = float(max_flow if max_flow is not None else 0.25 * min(height, width))
        self.num_layers = num_layers
        self.large_motion_prob = large_motion_prob
        self.occluded_valid = occluded_valid
        self.photos = photos
        self.augment_params = augment_params

    def __len__(self) -> int:
        return self.num_samples

    def augment_params_at(self, index: int) -> P.AugmentParams:
        return self.augment_params

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self.num_samples
        if not -n <= index < n:
            raise IndexError(f"SyntheticFlow: index {index} out of range for {n} samples")
        index %= n
        rng = np.random.default_rng([self.seed, index])
        layers = self._layers(rng)
        image1, label, flow = self._render(layers, 1)
        image2, _, _ = self._render(layers, 2)
        valid = self._valid(layers, label, flow)
        meta = dict(dataset=self.name, scene=f"{self.seed}", frame=index,
                    path=f"synthetic://{self.seed}/{index}", has_gt=True)
        return dict(image1=image1, image2=image2, flow=flow, valid=valid, meta=meta)

    # -- scene description -------------------------------------------------------------------
    def _translation(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        if rng.random() < self.large_motion_prob:
            mag = rng.uniform(0.5, 1.0) * self.max_flow
        else:
            mag = min(abs(rng.normal(0.0, 0.25 * self.max_flow)), self.max_flow)
        angle = rng.uniform(0, 2 * np.pi)
        return scale * mag * np.array([np.cos(angle), np.sin(angle)])

    def _layers(self, rng: np.random.Generator) -> list[_Layer]:
        bank = texture_bank(photos=self.photos)
        h, w = self.height, self.width
        side = min(h, w)

        def texture_params(unit_px: float):
            tex = bank[rng.integers(len(bank))]
            zoom = 2 ** rng.uniform(-1.0, 0.0)          # texture pixels per image pixel
            origin = rng.uniform(0, tex.shape[0], 2)
            gain = rng.uniform(0.6, 1.4, 3)
            bias = rng.uniform(-40, 40, 3)
            if rng.random() < 0.3:
                tex = tex[..., rng.permutation(3)]
            return dict(texture=tex, tex_scale=zoom * unit_px, tex_origin=origin,
                        gain=gain, bias=bias)

        bg_motion = _rotation(rng.uniform(-0.03, 0.03)) * 2 ** rng.uniform(-0.05, 0.05)
        layers = [_Layer(linear1=_rotation(rng.uniform(0, 2 * np.pi)),
                         centre=np.array([(w - 1) / 2, (h - 1) / 2]), motion=bg_motion,
                         shift=self._translation(rng, 0.5), shape=None, radius=np.inf,
                         **texture_params(1.0))]
        for _ in range(int(rng.integers(self.num_layers[0], self.num_layers[1] + 1))):
            size = rng.uniform(0.08, 0.35) * side
            aspect = 2 ** rng.uniform(-0.6, 0.6)
            linear1 = _rotation(rng.uniform(0, 2 * np.pi)) @ np.diag([size * aspect,
                                                                      size / aspect])
            centre = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
            motion = _rotation(rng.uniform(-0.15, 0.15)) * 2 ** rng.uniform(-0.15, 0.15)
            power = 2 ** rng.uniform(0, 2.5)
            n_harm = int(rng.integers(1, 5))
            ks = rng.choice(np.arange(2, 9), n_harm, replace=False)
            amps = rng.uniform(0, 0.35, n_harm) / np.sqrt(n_harm)
            harmonics = tuple(zip(ks, amps, rng.uniform(0, 2 * np.pi, n_harm)))
            radius = (1.0 + amps.sum()) * 2 ** 0.5
            layers.append(_Layer(linear1=linear1, centre=centre, motion=motion,
                                 shift=self._translation(rng, 1.0), shape=(power, harmonics),
                                 radius=radius, **texture_params(size)))
        return layers

    # -- rendering ---------------------------------------------------------------------------
    def _bbox(self, layer: _Layer, frame: int) -> tuple[slice, slice] | None:
        """Image rows/cols that can contain the layer in `frame` (None if off-screen)."""
        if layer.shape is None:
            return slice(0, self.height), slice(0, self.width)
        linear, offset = layer.affine(frame)
        extent = layer.radius * np.abs(linear).sum(axis=1)   # bound on |linear @ u| per axis
        x0, x1 = int(np.floor(offset[0] - extent[0])), int(np.ceil(offset[0] + extent[0])) + 1
        y0, y1 = int(np.floor(offset[1] - extent[1])), int(np.ceil(offset[1] + extent[1])) + 1
        x0, x1, y0, y1 = max(x0, 0), min(x1, self.width), max(y0, 0), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    @staticmethod
    def _to_layer(layer: _Layer, frame: int, x: np.ndarray, y: np.ndarray):
        linear, offset = layer.affine(frame)
        inv = np.linalg.inv(linear)
        inv = inv.astype(np.float32)
        dx, dy = x - np.float32(offset[0]), y - np.float32(offset[1])
        return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy

    def _render(self, layers: list[_Layer], frame: int):
        """Top-down: each pixel is computed once, by the topmost layer that covers it.

        Returns the uint8 image, the layer label per pixel and, for frame 1, the flow."""
        h, w = self.height, self.width
        xx, yy = _grid(h, w)
        image = np.empty((h * w, 3), np.float32)
        label = np.zeros(h * w, np.int32)
        flow = np.zeros((h * w, 2), np.float32) if frame == 1 else None
        filled = np.zeros((h, w), bool)
        flat_index = _flat_index(h, w)
        for k in range(len(layers) - 1, -1, -1):
            layer = layers[k]
            box = self._bbox(layer, frame)
            if box is None:
                continue
            open_ = ~filled[box]
            x, y = xx[box][open_], yy[box][open_]
            u, v = self._to_layer(layer, frame, x, y)
            idx = flat_index[box][open_]
            if layer.shape is not None:
                mask = _inside(layer.shape, u, v)
                if not mask.any():
                    continue
                idx, u, v, x, y = idx[mask], u[mask], v[mask], x[mask], y[mask]
            scale = np.float32(layer.tex_scale)
            tx = np.float32(layer.tex_origin[0]) + scale * u
            ty = np.float32(layer.tex_origin[1]) + scale * v
            colour = _sample_texture(layer.texture, tx, ty)
            colour *= layer.gain.astype(np.float32)
            colour += layer.bias.astype(np.float32)
            image[idx] = colour
            label[idx] = k
            filled.reshape(-1)[idx] = True
            if flow is not None:
                flow[idx, 0], flow[idx, 1] = layer.flow(x, y)
        np.rint(image, out=image)
        np.clip(image, 0, 255, out=image)
        image = image.astype(np.uint8).reshape(h, w, 3)
        if flow is not None:
            flow = flow.reshape(h, w, 2)
        return image, label.reshape(h, w), flow

    def _valid(self, layers: list[_Layer], label: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Pixels whose surface point lands inside frame 2 with no higher layer above it."""
        if self.occluded_valid:
            return np.ones(label.shape, bool)
        xx, yy = _grid(self.height, self.width)
        px, py = xx + flow[..., 0], yy + flow[..., 1]
        valid = (px >= 0) & (px <= self.width - 1) & (py >= 0) & (py <= self.height - 1)
        for j in range(1, len(layers)):
            box = self._bbox(layers[j], 2)
            if box is None:
                continue
            ys, xs = box
            cand = valid & (label < j) & (px >= xs.start - 1) & (px <= xs.stop) \
                & (py >= ys.start - 1) & (py <= ys.stop)
            idx = np.flatnonzero(cand)
            if idx.size == 0:
                continue
            u, v = self._to_layer(layers[j], 2, px.reshape(-1)[idx], py.reshape(-1)[idx])
            valid.reshape(-1)[idx[_inside(layers[j].shape, u, v)]] = False
        return valid


@functools.lru_cache(maxsize=8)
def _flat_index(height: int, width: int) -> np.ndarray:
    return np.arange(height * width).reshape(height, width)
