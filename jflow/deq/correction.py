"""Fixed-point correction: which intermediate states are supervised, and with what weights.

Both deq-flow semantics, for a step budget T and N correction terms:

- ``"sliced"`` (deq-flow v2 / torchdeq default): T is split into N segments of T/N steps. Each
  segment solves (no gradient) from the previous segment's output, then the gradient steps
  (phantom, or IFT for the last term) produce the supervised state, which also starts the next
  segment; no gradient crosses segments, and Anderson/Broyden histories restart per segment.
  f evaluations: T + N*k.
- ``"indexing"`` (deq-flow v1 default): one solve of T steps captures the states at steps
  ``(i+1)*T/N``; gradient steps are applied to each captured state, which is not fed back.

Worked example, T = 24, N = 2, k = 1: sliced solves 12 steps from z0 -> z_a, supervises
``s1 = f(z_a)``, solves 12 more from s1 -> z_b, supervises ``s2 = f(z_b)`` (26 f calls).
Indexing solves 24 steps from z0 once, capturing z_12 and z_24, and supervises ``f(z_12)`` and
``f(z_24)`` (26 f calls). Same lengths on paper (torchdeq #6), different states.

Loss weights per term i = 0..N-1 (the last term is the final fixed point):
``exp``: gamma^(N-1-i) (as the sequence loss); ``linear``: (i+1)/N; ``const``: 1.
"""
from __future__ import annotations

import numpy as np

WEIGHT_KINDS = ("exp", "linear", "const")


def segment_lengths(total: int, n: int) -> list[int]:
    """Sliced core: ``n`` segment lengths summing to ``total`` (the remainder goes to the last)."""
    _check(total, n)
    base, extra = divmod(total, n)
    return [base + (1 if i >= n - extra else 0) for i in range(n)]


def indexing_positions(total: int, n: int) -> list[int]:
    """Indexing core: 1-based steps ``(i+1)*total//n`` at which states are captured (last = total)."""
    _check(total, n)
    return [(i + 1) * total // n for i in range(n)]


def correction_weights(n: int, gamma: float = 0.8, kind: str = "exp") -> np.ndarray:
    """Loss weights of ``n`` correction terms (float32 array, last term weight 1)."""
    if n < 1:
        raise ValueError(f"jflow.deq.correction_weights: n must be >= 1, got {n}")
    i = np.arange(n, dtype=np.float64)
    if kind == "exp":
        w = float(gamma) ** (n - 1 - i)
    elif kind == "linear":
        w = (i + 1) / n
    elif kind == "const":
        w = np.ones(n)
    else:
        raise ValueError(f"jflow.deq.correction_weights: kind must be one of {WEIGHT_KINDS}, got {kind!r}")
    return w.astype(np.float32)


def _check(total: int, n: int) -> None:
    if n < 1 or total < n:
        raise ValueError(f"jflow.deq.correction: need 1 <= n_states <= steps, got n={n}, steps={total}")
