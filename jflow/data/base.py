"""Random-access flow datasets over image pairs on disk, and the sample contract.

A sample is a dict: `image1`, `image2` (H, W, 3) uint8 RGB, `flow` (H, W, 2) float32, `valid`
(H, W) bool, and `meta` = {dataset, scene, frame, path, has_gt}. Samples without ground truth
(Sintel and KITTI test splits) carry zero flow, an all-False `valid` and `has_gt=False`.
A sample that cannot be read raises `CorruptSampleError` naming its files; with
`skip_corrupt=True` it is reported by a warning and replaced by the next readable sample.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from jflow.data.errors import CorruptSampleError, DatasetError, missing_layout_error
from jflow.data.params import AugmentParams

Sample = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """Where one sample lives: two image files, an optional flow file, and its place."""

    image1: str
    image2: str
    flow: str | None
    scene: str = ""
    frame: int = 0


def to_rgb(image: np.ndarray, path: str) -> np.ndarray:
    """(H, W, 3) uint8: grayscale is tiled to 3 channels, alpha is dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{path}: expected an (H, W, 1|3|4) image, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit image, got {image.dtype}")
    return np.ascontiguousarray(image)


def dense_valid(flow: np.ndarray) -> np.ndarray:
    """RAFT's dense validity: `|u| < 1000 and |v| < 1000` (unknown .flo values are > 1e9)."""
    return (np.abs(flow[..., 0]) < 1000) & (np.abs(flow[..., 1]) < 1000)


class FlowDataset:
    """Random-access dataset of `PairRecord`s read with `flow_reader`.

    `flow_reader(path) -> (flow, valid)`; `valid` None means dense (RAFT's magnitude rule).
    `augment_params` tells the loader how RAFT augments this dataset in the current stage.
    """

    name = "flow"

    def __init__(
        self,
        records: Sequence[PairRecord],
        *,
        flow_reader: Callable[[str], tuple[np.ndarray, np.ndarray | None]] | None,
        augment_params: AugmentParams,
        skip_corrupt: bool = False,
        name: str | None = None,
    ):
        self.records = list(records)
        self.flow_reader = flow_reader
        self.augment_params = augment_params
        self.skip_corrupt = skip_corrupt
        if name is not None:
            self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def augment_params_at(self, index: int) -> AugmentParams:
        """Augmentation parameters of sample `index` (the same for every sample here)."""
        return self.augment_params

    def __getitem__(self, index: int) -> Sample:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        index %= n
        for attempt in range(n):
            k = (index + attempt) % n
            try:
                return self.read(k)
            except CorruptSampleError as err:
                if not self.skip_corrupt:
                    raise
                warnings.warn(f"skipping corrupt sample ({err}); using sample {(k + 1) % n}")
        raise DatasetError(f"{self.name}: no readable sample among {n}")

    def read(self, index: int) -> Sample:
        """Read sample `index` from disk; `CorruptSampleError` names the files on failure.

        `valid` is the reader's validity > 0.5; a fractional validity (TartanAir) also gives
        `valid_resize`, the points with validity >= 1 that a sparse resize keeps (augment)."""
        rec = self.records[index]
        extra = {}
        try:
            from jflow import io as jio

            img1 = to_rgb(jio.read_image(rec.image1), rec.image1)
            img2 = to_rgb(jio.read_image(rec.image2), rec.image2)
            if rec.flow is None or self.flow_reader is None:
                flow = np.zeros(img1.shape[:2] + (2,), np.float32)
                valid = np.zeros(img1.shape[:2], bool)
            else:
                flow, valid = self.flow_reader(rec.flow)
                flow = np.asarray(flow, np.float32)[..., :2]
                raw = None if valid is None else np.asarray(valid)
                valid = dense_valid(flow) if raw is None else raw > 0.5
                valid &= np.isfinite(flow).all(-1)
                flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
                if raw is not None and raw.dtype.kind == "f" and np.any((raw > 0) & (raw < 1)):
                    extra["valid_resize"] = valid & (raw >= 1)  # fractional: see augment
        except (OSError, ValueError, EOFError) as err:
            files = ", ".join(p for p in (rec.image1, rec.image2, rec.flow) if p)
            raise CorruptSampleError(f"{self.name} sample {index} [{files}]: {err}") from err
        if img1.shape != img2.shape or flow.shape[:2] != img1.shape[:2]:
            raise CorruptSampleError(
                f"{self.name} sample {index}: shapes differ: {rec.image1} {img1.shape}, "
                f"{rec.image2} {img2.shape}, {rec.flow} {flow.shape}"
            )
        meta = dict(dataset=self.name, scene=rec.scene, frame=rec.frame, path=rec.image1,
                    has_gt=rec.flow is not None)
        return dict(image1=img1, image2=img2, flow=flow, valid=valid, meta=meta, **extra)

    def scenes(self) -> dict[str, list[int]]:
        """Sample indices per scene, in frame order (video tools reset state between scenes)."""
        out: dict[str, list[int]] = {}
        for i, rec in enumerate(self.records):
            out.setdefault(rec.scene, []).append(i)
        return out


def require_dir(path: str, dataset: str, root: str, layout: str) -> str:
    """`path` if it is a directory, else a `DatasetError` with the expected layout."""
    if not os.path.isdir(path):
        raise missing_layout_error(dataset, root, f"folder {path!r} not found", layout)
    return path


def sorted_glob(pattern: str) -> list[str]:
    """`sorted(glob(pattern))`."""
    return sorted(glob.glob(pattern))


def read_flo_dense(path: str) -> tuple[np.ndarray, None]:
    from jflow import io as jio

    return jio.read_flo(path), None


def read_pfm_dense(path: str) -> tuple[np.ndarray, None]:
    from jflow import io as jio

    data = np.asarray(jio.read_pfm(path))
    if data.ndim != 3 or data.shape[-1] < 2:
        raise ValueError(f"{path}: expected a 2- or 3-channel flow PFM, got shape {data.shape}")
    return data[..., :2], None


def read_sparse_png(path: str) -> tuple[np.ndarray, np.ndarray]:
    from jflow import io as jio

    flow, valid = jio.read_kitti_flow(path)
    return flow, valid
