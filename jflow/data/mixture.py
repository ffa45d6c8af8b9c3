"""Weighted concatenation of datasets, like RAFT's `100*sintel_clean + 200*kitti + things`."""
from __future__ import annotations

import bisect
from typing import Any, Sequence

from jflow.data.params import AugmentParams


class Mixture:
    """`weight * dataset` repeats a dataset `weight` times; parts are concatenated in order.

    Random access like its parts; `augment_params_at(i)` and `meta["dataset"]` tell which part
    sample `i` came from, so the loader applies that part's augmentation.
    """

    def __init__(self, parts: Sequence[tuple[int, Any]]):
        if not parts:
            raise ValueError("Mixture: needs at least one (weight, dataset) part")
        for weight, ds in parts:
            if int(weight) != weight or weight < 1:
                raise ValueError(f"Mixture: weights must be positive integers, got {weight}")
            if len(ds) == 0:
                raise ValueError(f"Mixture: part {getattr(ds, 'name', ds)!r} is empty")
        self.parts = [(int(w), ds) for w, ds in parts]
        self.offsets = [0]
        for w, ds in self.parts:
            self.offsets.append(self.offsets[-1] + w * len(ds))
        self.name = "+".join(f"{w}*{getattr(ds, 'name', 'data')}" for w, ds in self.parts)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[Any, int]:
        """(dataset, index inside it) of mixture sample `index`."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"Mixture {self.name}: index {index} out of range for {n} samples")
        index %= n
        k = bisect.bisect_right(self.offsets, index) - 1
        ds = self.parts[k][1]
        return ds, (index - self.offsets[k]) % len(ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ds, j = self.locate(index)
        return ds[j]

    def augment_params_at(self, index: int) -> AugmentParams:
        ds, j = self.locate(index)
        return ds.augment_params_at(j)
