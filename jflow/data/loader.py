"""Deterministic, resumable, sharded batch loader with optional worker processes.

Order: global batch `t` holds the sample positions `g = t * B * P + p * B + j` (B = per-process
batch, P processes, process p, slot j); position `g` is sample `perm_e[g mod N]` of epoch
`e = g // N`, with `perm_e` a permutation drawn from `(seed, e)` (identity without `shuffle`).
Processes therefore see disjoint samples, and the augmentation of position `g` draws from
`(seed, g)`, so batch `t` is a pure function of `(seed, t, p, P)`: a loader started at
`start_step=k` yields exactly the batches `k, k+1, ...` of a fresh one, whatever the number of
workers. Each batch is a dict of stacked numpy arrays (`image1`, `image2` uint8, `flow` float32,
`valid` bool) ready for `jax.device_put`, plus `meta` (a list of per-sample dicts).
Workers are spawned processes (each receives the loader once and computes whole batches);
`Loader.dataset()` exposes the same batches as a grain `MapDataset`.
"""
from __future__ import annotations

import collections
import functools
import itertools
import multiprocessing
import sys
from typing import Any, Iterator

import numpy as np

from jflow.data.augment import make_augmentor
from jflow.data.params import AugmentParams

ARRAY_KEYS = ("image1", "image2", "flow", "valid")


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def center_crop(sample: dict, crop: tuple[int, int]) -> dict:
    """Central `crop` = (H, W) window of every array in `sample` (error if it does not fit)."""
    h, w = sample["image1"].shape[:2]
    ch, cw = crop
    if ch > h or cw > w:
        raise ValueError(f"crop {crop} is larger than the sample ({h}, {w}) from "
                         f"{sample.get('meta', {}).get('path', '?')}")
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out = dict(sample)
    for key in ARRAY_KEYS:
        out[key] = np.ascontiguousarray(sample[key][y0:y0 + ch, x0:x0 + cw])
    return out


class _MakeBatch:
    """Picklable `step -> batch` function for `Loader.dataset()`."""

    def __init__(self, loader: "Loader"):
        self.loader = loader

    def __call__(self, step: int) -> dict[str, Any]:
        return self.loader.batch(int(step))


class Loader:
    """Iterate over batches of `source` (random access: `len`, `[i]`).

    `augment`: RAFT augmentation with each sample's `source.augment_params_at(i)` (or
    `AugmentParams()` for sources without it), cropping to `crop` = (H, W); without `augment`
    samples are centre-cropped to `crop` when given. `num_workers > 0` computes batches in
    that many spawned worker processes. `num_steps` bounds the iteration (default: endless).
    `drop_meta` leaves `meta` out of the batches.
    """

    def __init__(self, source, batch_size: int, *, seed: int = 0, augment: bool = True,
                 crop: tuple[int, int] | None = None, shuffle: bool = True,
                 num_workers: int = 0, process_index: int = 0, process_count: int = 1,
                 start_step: int = 0, num_steps: int | None = None, drop_meta: bool = False):
        if len(source) == 0:
            raise ValueError("Loader: the source is empty")
        if batch_size < 1:
            raise ValueError(f"Loader: batch_size must be >= 1, got {batch_size}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"Loader: process_index {process_index} not in [0, {process_count})")
        if augment and crop is None:
            raise ValueError("Loader: augment=True needs a crop size (RAFT always crops)")
        if start_step < 0:
            raise ValueError(f"Loader: start_step must be >= 0, got {start_step}")
        self.source = source
        self.batch_size = batch_size
        self.seed = int(seed)
        self.augment = bool(augment)
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.shuffle = shuffle
        self.num_workers = int(num_workers)
        self.process_index, self.process_count = process_index, process_count
        self.start_step = int(start_step)
        self.num_steps = num_steps
        self.drop_meta = drop_meta

    # -- pure functions of (seed, step) ------------------------------------------------------
    def positions(self, step: int) -> np.ndarray:
        """Global sample positions of this process's share of batch `step`."""
        base = (step * self.process_count + self.process_index) * self.batch_size
        return base + np.arange(self.batch_size, dtype=np.int64)

    def index(self, position: int) -> int:
        """Source index at global sample position `position`."""
        n = len(self.source)
        epoch, pos = divmod(int(position), n)
        return int(_permutation(self.seed, epoch, n)[pos]) if self.shuffle else pos

    def sample(self, position: int) -> dict[str, Any]:
        """The (augmented, cropped) sample at global position `position`."""
        i = self.index(position)
        sample = self.source[i]
        if self.augment:
            params_at = getattr(self.source, "augment_params_at", None)
            params = params_at(i) if params_at is not None else AugmentParams()
            rng = np.random.default_rng([self.seed, int(position), 0xA06])
            sample = make_augmentor(params, self.crop)(sample, rng)
        elif self.crop is not None:
            sample = center_crop(sample, self.crop)
        return sample

    def batch(self, step: int) -> dict[str, Any]:
        """Batch `step` of this process."""
        samples = [self.sample(g) for g in self.positions(step)]
        out = {}
        for key in ARRAY_KEYS:
            shapes = {s[key].shape for s in samples}
            if len(shapes) > 1:
                raise ValueError(f"Loader: samples of different shapes {sorted(shapes)} in one "
                                 "batch; set a crop size")
            out[key] = np.stack([s[key] for s in samples])
        if not self.drop_meta:
            out["meta"] = [s.get("meta", {}) for s in samples]
        return out

    # -- iteration ---------------------------------------------------------------------------
    def dataset(self):
        """The same batches as a grain `MapDataset` (index k = step `start_step + k`), for
        grain pipelines (`.to_iter_dataset().mp_prefetch(...)` needs parsed absl flags)."""
        import grain

        steps = self.steps()
        return grain.MapDataset.range(steps.start, steps.stop).map(_MakeBatch(self))

    def steps(self) -> range:
        """The steps this loader yields."""
        stop = sys.maxsize if self.num_steps is None else max(self.num_steps, self.start_step)
        return range(self.start_step, stop)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.num_workers <= 0:
            return (self.batch(step) for step in self.steps())
        return self._parallel()

    def _parallel(self) -> Iterator[dict[str, Any]]:
        """Batches computed by `num_workers` spawned processes, in order, 2 per worker ahead."""
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe once JAX runs threads
        pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=(self,))
        try:
            pending: collections.deque = collections.deque()
            steps = iter(self.steps())
            for step in itertools.islice(steps, 2 * self.num_workers):
                pending.append(pool.apply_async(_worker_batch, (step,)))
            while pending:
                batch = pending.popleft().get()
                for step in itertools.islice(steps, 1):
                    pending.append(pool.apply_async(_worker_batch, (step,)))
                yield batch
        finally:
            pool.terminate()
            pool.join()


_WORKER_LOADER: Loader | None = None


def _init_worker(loader: Loader) -> None:
    global _WORKER_LOADER
    _WORKER_LOADER = loader


def _worker_batch(step: int) -> dict[str, Any]:
    assert _WORKER_LOADER is not None, "worker not initialised"
    return _WORKER_LOADER.batch(step)
