"""Optical-flow metrics: EPE, 1/3/5 px accuracies, KITTI Fl-all, dataset accumulators (numpy).

Per pixel: ``EPE = ||pred - gt||_2``; ``Npx`` = fraction of valid pixels with EPE < N (an
accuracy, as RAFT reports it); ``fl_all`` = percent of valid pixels with EPE > 3 px **and**
EPE > 5 % of ``||gt||``. Valid pixels are ``valid`` (default all) where ``gt`` is finite.
A non-finite prediction counts as an infinite error (an outlier, never accurate), is counted in
``nan_count`` and makes ``epe`` inf: a NaN mean is never produced silently. An image with no
valid pixel has ``count`` 0 and NaN means; accumulators skip it.

Averaging conventions (report the one used with every number):

- ``pooled``: every valid pixel of the dataset weighs the same.
- ``per_image_mean``: the mean over images of each image's mean.

RAFT, GMA and DEQ-Flow report Sintel (and Chairs) EPE pooled, KITTI EPE as ``per_image_mean``
and KITTI Fl-all pooled; mmflow pools everything; ptlflow averages per image.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

THRESHOLDS = (1, 3, 5)
METRICS = ("epe", "1px", "3px", "5px", "fl_all")
# headline metric -> convention, for MetricAccumulator(convention=...)
CONVENTIONS = {
    "pooled": {m: "pooled" for m in METRICS},
    "per_image_mean": {m: "per_image_mean" for m in METRICS},
    "sintel": {m: "pooled" for m in METRICS},
    "kitti": {**{m: "pooled" for m in METRICS}, "epe": "per_image_mean"},
}


def epe_map(pred: Any, gt: Any) -> np.ndarray:
    """Per-pixel end-point error ``||pred - gt||_2`` over the last axis (float64)."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1:] != (2,):
        raise ValueError(f"epe_map: pred and gt must have the same shape (..., 2), "
                         f"got {pred.shape} and {gt.shape}")
    return np.sqrt(np.sum(np.square(pred - gt), axis=-1))


def _valid_mask(gt: np.ndarray, valid: Optional[Any]) -> np.ndarray:
    mask = np.all(np.isfinite(gt), axis=-1)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != gt.shape[:-1]:
            raise ValueError(f"valid must have shape {gt.shape[:-1]}, got {valid.shape}")
        mask &= valid.astype(bool)
    return mask


def _sums(pred: Any, gt: Any, valid: Optional[Any]) -> dict:
    """Counts and sums over the valid pixels of one image."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    epe = epe_map(pred, gt)
    mask = _valid_mask(gt, valid)
    bad = ~np.all(np.isfinite(pred), axis=-1)
    epe = np.where(bad, np.inf, epe)[mask]
    mag = np.sqrt(np.sum(np.square(gt), axis=-1))[mask]
    sums = {"count": int(mask.sum()), "nan_count": int(bad[mask].sum()),
            "epe": float(epe.sum()) if epe.size else 0.0,
            "fl_all": int(np.count_nonzero((epe > 3.0) & (epe > 0.05 * mag)))}
    for t in THRESHOLDS:
        sums[f"{t}px"] = int(np.count_nonzero(epe < t))
    return sums


def _means(sums: dict) -> dict:
    n = sums["count"]
    out = {m: (sums[m] / n if n else float("nan")) for m in METRICS}
    out["fl_all"] *= 100.0
    out["count"] = n
    out["nan_count"] = sums["nan_count"]
    return out


def flow_metrics(pred: Any, gt: Any, valid: Optional[Any] = None) -> dict:
    """Metrics of one image: ``epe``, ``1px``, ``3px``, ``5px`` (fractions), ``fl_all`` (%),
    ``count`` (valid pixels), ``nan_count`` (valid pixels with a non-finite prediction)."""
    return _means(_sums(pred, gt, valid))


class MetricAccumulator:
    """Accumulates per-image results; ``result()`` reports both conventions by name.

    ``convention`` (None, "pooled", "per_image_mean", "sintel", "kitti") adds unprefixed headline
    keys (``epe``, ``fl_all``, ...) taken from that convention; "kitti" is RAFT's: EPE per image,
    the rest pooled. Update with one image (H, W, 2) or a batch (B, H, W, 2).
    """

    def __init__(self, convention: Optional[str] = None):
        if convention is not None and convention not in CONVENTIONS:
            raise ValueError(f"MetricAccumulator: convention must be one of "
                             f"{sorted(CONVENTIONS)} or None, got {convention!r}")
        self.convention = convention
        self._images: list[dict] = []

    def __len__(self) -> int:
        return len(self._images)

    def update(self, pred: Any, gt: Any, valid: Optional[Any] = None) -> list[dict]:
        """Add one image or a batch; returns the per-image metrics."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.ndim == 3:
            pred, gt = pred[None], gt[None]
            valid = None if valid is None else np.asarray(valid)[None]
        if pred.ndim != 4 or pred.shape != gt.shape:
            raise ValueError(f"MetricAccumulator.update: pred and gt must be (H, W, 2) or "
                             f"(B, H, W, 2) of equal shape, got {pred.shape} and {gt.shape}")
        out = []
        for i in range(pred.shape[0]):
            sums = _sums(pred[i], gt[i], None if valid is None else valid[i])
            self._images.append(sums)
            out.append(_means(sums))
        return out

    def merge(self, other: "MetricAccumulator") -> None:
        """Add another accumulator's images (e.g. from another process)."""
        self._images.extend(other._images)

    def result(self) -> dict:
        """``{"epe/pooled", "epe/per_image_mean", ..., "count", "images", "nan_count"}``."""
        total = {k: sum(s[k] for s in self._images) for k in (*METRICS, "count", "nan_count")}
        pooled = _means(total)
        per_image = [_means(s) for s in self._images if s["count"] > 0]
        res = {}
        for m in METRICS:
            res[f"{m}/pooled"] = pooled[m]
            res[f"{m}/per_image_mean"] = (float(np.mean([p[m] for p in per_image]))
                                          if per_image else float("nan"))
        if self.convention is not None:
            for m, conv in CONVENTIONS[self.convention].items():
                res[m] = res[f"{m}/{conv}"]
        res.update(count=total["count"], nan_count=total["nan_count"],
                   images=len(per_image), empty_images=len(self._images) - len(per_image))
        return res
