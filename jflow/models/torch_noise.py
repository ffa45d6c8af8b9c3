"""Bit-exact ``torch.manual_seed(seed); torch.rand(*shape)`` (CPU generator, float32), no torch.

torch's CPU generator is MT19937 seeded with ``init_genrand(seed)``; ``torch.rand`` on float32
turns each 32-bit draw ``x`` into ``(x & 0xFFFFFF) * 2**-24`` and fills the tensor in C order.
numpy's legacy ``RandomState(seed)`` is the same MT19937 with the same seeding, and
``randint(0, 2**32, n, dtype=uint32)`` returns its raw 32-bit outputs, one per value, so the
stream is reproduced exactly (checked against values recorded from torch, tests/test_torch_noise).
DIP's evaluation noise is ``torch_rand(20, (N, 2, H, W))`` (NCHW order, transposed by the caller).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np


@functools.lru_cache(maxsize=32)
def _torch_rand_cached(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    bits = np.random.RandomState(seed).randint(0, 2**32, n, dtype=np.uint32)
    out = ((bits & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)
    out.setflags(write=False)
    return out


def torch_rand(seed: int, shape: Sequence[int]) -> np.ndarray:
    """``torch.manual_seed(seed); torch.rand(*shape)`` as a float32 numpy array (read-only)."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"torch_rand: negative size in {shape}")
    return _torch_rand_cached(int(seed), shape)
