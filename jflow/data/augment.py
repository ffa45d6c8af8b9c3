"""RAFT's training augmentation: `FlowAugmentor` (dense) and `SparseFlowAugmentor` (sparse).

Order: colour jitter -> eraser (image 2 only) -> spatial (scale, resize, flips) -> crop.
Dense (Chairs, Things, Sintel, synthetic): jitter (0.4, 0.4, 0.4, hue 0.5/3.14), per-image with
p 0.2 else shared on the stacked pair; scale `2^U(min, max)`, with p 0.8 each axis also
x `2^U(-0.2, 0.2)`, clamped >= `(crop + 8) / size`; with p 0.8 bilinear resize (flow x (sx, sy));
h-flip p 0.5 (u -> -u), v-flip p 0.1 (v -> -v) when `do_flip`; uniform crop.
Sparse (KITTI, HD1K): shared jitter (0.3, 0.3, 0.3, hue 0.3/3.14); no stretch, clamp >=
`(crop + 1) / size`; valid points are scattered to `round(x * s)` and kept only inside
`0 < x < W'`, `0 < y < H'`; h-flip only; crop corner `y0 ~ [0, H-ch+20)`, `x0 ~ [-50, W-cw+50)`
then clipped; with `pad_to_crop` (SEA-RAFT) an image smaller than the crop is first zero-padded
at the bottom/right (invalid there). A sample with a `valid_resize` mask (fractional validity,
TartanAir's `1 - mask/100`) scatters only those points when resized (SEA-RAFT keeps validity
>= 1 there) and keeps `valid` (> 0.5) when not. Eraser for both: p 0.5, 1-2 boxes with sides in [50, 100) filled with image 2's
mean colour.

Dense `valid` is resized bilinearly and kept where every contributing pixel was valid, then
`|u| < 1000 and |v| < 1000` as RAFT recomputes it. An input smaller than the crop (possible only
when the resize is skipped or the crop exceeds the image) is first scaled up just enough.
All randomness comes from the `numpy.random.Generator` passed in, so a sample's augmentation is
a pure function of (sample, seed).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jflow.data.color import ColorJitter
from jflow.data.params import AugmentParams
from jflow.data.resize import resize_bilinear

Sample = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Augmentor:
    """Dense or sparse RAFT augmentor for one crop size and one `AugmentParams`."""

    crop: tuple[int, int]
    params: AugmentParams = AugmentParams()
    eraser_prob: float = 0.5
    spatial_prob: float = 0.8
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    asymmetric_color_prob: float = 0.2
    h_flip_prob: float = 0.5
    v_flip_prob: float = 0.1

    @property
    def jitter(self) -> ColorJitter:
        if self.params.sparse:
            return ColorJitter(0.3, 0.3, 0.3, 0.3 / 3.14)
        return ColorJitter(0.4, 0.4, 0.4, 0.5 / 3.14)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Augment one sample (dict with image1, image2, flow, valid); returns a new dict."""
        img1, img2 = self.color(sample["image1"], sample["image2"], rng)
        img2 = self.eraser(img2, rng)
        flow = np.asarray(sample["flow"], np.float32)
        valid = np.asarray(sample["valid"], bool)
        if self.params.sparse:
            strict = sample.get("valid_resize")
            img1, img2, flow, valid = self.spatial_sparse(
                img1, img2, flow, valid, rng, None if strict is None else np.asarray(strict, bool))
        else:
            img1, img2, flow, valid = self.spatial_dense(img1, img2, flow, valid, rng)
        out = dict(sample)
        out.pop("valid_resize", None)
        out.update(
            image1=np.ascontiguousarray(img1),
            image2=np.ascontiguousarray(img2),
            flow=np.ascontiguousarray(flow, dtype=np.float32),
            valid=np.ascontiguousarray(valid, dtype=bool),
        )
        return out

    # -- colour and eraser -------------------------------------------------------------------
    def color(self, img1: np.ndarray, img2: np.ndarray, rng: np.random.Generator):
        jitter = self.jitter
        if not self.params.sparse and rng.random() < self.asymmetric_color_prob:
            return jitter(img1, rng), jitter(img2, rng)
        stack = jitter(np.concatenate([img1, img2], axis=0), rng)
        return stack[: img1.shape[0]], stack[img1.shape[0]:]

    def eraser(self, img2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.eraser_prob:
            return img2
        img2 = img2.copy()
        ht, wd = img2.shape[:2]
        mean_color = img2.reshape(-1, 3).mean(axis=0)
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.integers(0, wd), rng.integers(0, ht)
            dx, dy = rng.integers(50, 100), rng.integers(50, 100)
            img2[y0:y0 + dy, x0:x0 + dx] = mean_color
        return img2

    # -- spatial -----------------------------------------------------------------------------
    def spatial_dense(self, img1, img2, flow, valid, rng: np.random.Generator):
        ch, cw = self.crop
        ht, wd = img1.shape[:2]
        min_scale = max((ch + 8) / ht, (cw + 8) / wd)
        scale = 2 ** rng.uniform(self.params.min_scale, self.params.max_scale)
        sx = sy = scale
        if rng.random() < self.stretch_prob:
            sx *= 2 ** rng.uniform(-self.max_stretch, self.max_stretch)
            sy *= 2 ** rng.uniform(-self.max_stretch, self.max_stretch)
        sx, sy = max(sx, min_scale), max(sy, min_scale)
        if rng.random() < self.spatial_prob:
            img1, img2, flow, valid = _resize_dense(img1, img2, flow, valid, sx, sy)
        if self.params.do_flip:
            if rng.random() < self.h_flip_prob:
                img1, img2, flow, valid = _hflip(img1, img2, flow, valid)
            if rng.random() < self.v_flip_prob:
                img1, img2 = img1[::-1], img2[::-1]
                flow, valid = flow[::-1] * np.float32([1.0, -1.0]), valid[::-1]
        img1, img2, flow, valid = _at_least(img1, img2, flow, valid, self.crop, sparse=False)
        y0 = _randint(rng, 0, img1.shape[0] - ch)
        x0 = _randint(rng, 0, img1.shape[1] - cw)
        return _crop(img1, img2, flow, valid, y0, x0, self.crop)

    def spatial_sparse(self, img1, img2, flow, valid, rng: np.random.Generator,
                       valid_resize: np.ndarray | None = None):
        """``valid_resize``: the points a resize keeps (default ``valid``)."""
        ch, cw = self.crop
        if self.params.pad_to_crop:
            if valid_resize is not None:
                valid_resize = _pad_to(img1, img2, flow, valid_resize, self.crop)[3]
            img1, img2, flow, valid = _pad_to(img1, img2, flow, valid, self.crop)
        ht, wd = img1.shape[:2]
        min_scale = max((ch + 1) / ht, (cw + 1) / wd)
        scale = 2 ** rng.uniform(self.params.min_scale, self.params.max_scale)
        sx = sy = max(scale, min_scale)
        if rng.random() < self.spatial_prob:
            img1, img2 = resize_bilinear(img1, sx, sy), resize_bilinear(img2, sx, sy)
            flow, valid = resize_sparse_flow(flow, valid if valid_resize is None else valid_resize,
                                             sx, sy)
        if self.params.do_flip and rng.random() < self.h_flip_prob:
            img1, img2, flow, valid = _hflip(img1, img2, flow, valid)
        img1, img2, flow, valid = _at_least(img1, img2, flow, valid, self.crop, sparse=True)
        ht, wd = img1.shape[:2]
        y0 = _randint(rng, 0, ht - ch + 20)
        x0 = _randint(rng, -50, wd - cw + 50)
        y0, x0 = int(np.clip(y0, 0, ht - ch)), int(np.clip(x0, 0, wd - cw))
        return _crop(img1, img2, flow, valid, y0, x0, self.crop)


def make_augmentor(params: AugmentParams, crop: tuple[int, int]) -> Augmentor:
    """The augmentor RAFT uses for a dataset with `params`, cropping to `crop` = (H, W)."""
    return Augmentor(crop=(int(crop[0]), int(crop[1])), params=params)


def resize_sparse_flow(flow: np.ndarray, valid: np.ndarray, fx: float, fy: float):
    """RAFT's sparse resize: scatter valid points to `round(x * f)`, flow scaled by (fx, fy)."""
    ht, wd = flow.shape[:2]
    ht1, wd1 = int(round(ht * fy)), int(round(wd * fx))
    yy, xx = np.nonzero(valid)
    flow1 = flow[yy, xx] * np.float32([fx, fy])
    x1 = np.round(xx * np.float32(fx)).astype(np.int64)
    y1 = np.round(yy * np.float32(fy)).astype(np.int64)
    keep = (x1 > 0) & (x1 < wd1) & (y1 > 0) & (y1 < ht1)
    flow_img = np.zeros((ht1, wd1, 2), np.float32)
    valid_img = np.zeros((ht1, wd1), bool)
    flow_img[y1[keep], x1[keep]] = flow1[keep]
    valid_img[y1[keep], x1[keep]] = True
    return flow_img, valid_img


def _randint(rng: np.random.Generator, low: int, high: int) -> int:
    """`np.random.randint(low, high)`, returning `low` when the range is empty."""
    return int(rng.integers(low, high)) if high > low else low


def _resize_dense(img1, img2, flow, valid, sx: float, sy: float):
    img1, img2 = resize_bilinear(img1, sx, sy), resize_bilinear(img2, sx, sy)
    flow = resize_bilinear(flow, sx, sy) * np.float32([sx, sy])
    valid = resize_bilinear(valid.astype(np.float32), sx, sy) > 0.999
    valid &= (np.abs(flow[..., 0]) < 1000) & (np.abs(flow[..., 1]) < 1000)
    return img1, img2, flow, valid


def _hflip(img1, img2, flow, valid):
    return img1[:, ::-1], img2[:, ::-1], flow[:, ::-1] * np.float32([-1.0, 1.0]), valid[:, ::-1]


def _at_least(img1, img2, flow, valid, crop, *, sparse: bool):
    ht, wd = img1.shape[:2]
    if ht >= crop[0] and wd >= crop[1]:
        return img1, img2, flow, valid
    s = max(crop[0] / ht, crop[1] / wd) * (1 + 1e-6)
    s = max(s, (crop[0] + 0.5) / ht, (crop[1] + 0.5) / wd)
    if sparse:
        flow, valid = resize_sparse_flow(flow, valid, s, s)
        return resize_bilinear(img1, s, s), resize_bilinear(img2, s, s), flow, valid
    return _resize_dense(img1, img2, flow, valid, s, s)


def _pad_to(img1, img2, flow, valid, crop):
    """Zero padding at the bottom/right up to `crop` (SEA-RAFT's sparse augmentor)."""
    pad_h, pad_w = max(crop[0] - img1.shape[0], 0), max(crop[1] - img1.shape[1], 0)
    if not (pad_h or pad_w):
        return img1, img2, flow, valid
    pad = lambda a: np.pad(a, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (a.ndim - 2))  # noqa: E731
    return pad(img1), pad(img2), pad(flow), pad(valid)


def _crop(img1, img2, flow, valid, y0: int, x0: int, crop):
    ys, xs = slice(y0, y0 + crop[0]), slice(x0, x0 + crop[1])
    return img1[ys, xs], img2[ys, xs], flow[ys, xs], valid[ys, xs]
