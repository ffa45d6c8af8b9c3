"""Training losses: RAFT's sequence loss and DEQ-Flow's fixed-point correction loss.

Both supervise a sequence of flow predictions ``(N, B, H, W, 2)`` with
``sum_i w_i * mean(valid * |pred_i - gt|_1)``, the mean taken over all ``B*H*W*2`` entries (invalid
pixels stay in the denominator, as in RAFT), ``valid = (valid >= 0.5) & (|gt|_2 < max_flow)``.
RAFT weights its ``N`` iterations ``gamma**(N-1-i)``; DEQ-Flow weights its ``n_states`` decoded
fixed-point estimates with torchdeq's ``fp_correction`` weights (exp, linear or const).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp

Array = Any

MAX_FLOW = 400.0


def exp_weights(n: int, gamma: float) -> Array:
    """``gamma**(n-1-i)`` for ``i = 0..n-1`` (the last prediction has weight 1)."""
    return gamma ** jnp.arange(n - 1, -1, -1, dtype=jnp.float32)


def valid_mask(flow_gt: Array, valid: Array, max_flow: float = MAX_FLOW) -> Array:
    """``(valid >= 0.5) & (|gt| < max_flow)`` as float32, shape (B, H, W)."""
    mag = jnp.sqrt(jnp.sum(jnp.square(flow_gt.astype(jnp.float32)), axis=-1))
    return ((valid.astype(jnp.float32) >= 0.5) & (mag < max_flow)).astype(jnp.float32)


def weighted_sequence_loss(
    predictions: Array,
    flow_gt: Array,
    valid: Array,
    weights: Array | Sequence[float],
    *,
    max_flow: float = MAX_FLOW,
) -> tuple[Array, dict[str, Array]]:
    """``sum_i weights[i] * mean(valid * |predictions[i] - gt|_1)`` and metrics of the last one.

    ``predictions`` (N, B, H, W, 2); ``flow_gt`` (B, H, W, 2); ``valid`` (B, H, W); ``weights`` (N,).
    Returns ``(loss, metrics)`` with ``epe``, ``1px``, ``3px``, ``5px`` of the final prediction
    over the valid pixels (RAFT's training metrics).
    """
    predictions = jnp.asarray(predictions).astype(jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if predictions.ndim != 5 or predictions.shape[1:] != flow_gt.shape:
        raise ValueError(f"weighted_sequence_loss: predictions must be (N, *flow_gt.shape) = "
                         f"(N, {', '.join(map(str, flow_gt.shape))}), got {predictions.shape}")
    if weights.shape != predictions.shape[:1]:
        raise ValueError(f"weighted_sequence_loss: weights shape {weights.shape} does not match "
                         f"{predictions.shape[0]} predictions")
    gt = flow_gt.astype(jnp.float32)
    mask = valid_mask(gt, valid, max_flow)[None, ..., None]
    per_pred = jnp.mean(mask * jnp.abs(predictions - gt[None]), axis=(1, 2, 3, 4))
    loss = jnp.sum(weights * per_pred)

    epe = jnp.sqrt(jnp.sum(jnp.square(predictions[-1] - gt), axis=-1))
    m = mask[0, ..., 0]
    count = jnp.maximum(jnp.sum(m), 1.0)
    metrics = {"epe": jnp.sum(epe * m) / count}
    for t in (1, 3, 5):
        metrics[f"{t}px"] = jnp.sum((epe < t) * m) / count
    return loss, metrics


def sequence_loss(
    predictions: Array,
    flow_gt: Array,
    valid: Array,
    gamma: float = 0.8,
    *,
    max_flow: float = MAX_FLOW,
) -> tuple[Array, dict[str, Array]]:
    """RAFT's sequence loss: ``weighted_sequence_loss`` with weights ``gamma**(N-1-i)``."""
    n = jnp.shape(predictions)[0]
    return weighted_sequence_loss(predictions, flow_gt, valid, exp_weights(n, gamma),
                                  max_flow=max_flow)


def correction_weights(n: int, mode: str = "exp", gamma: float = 0.8) -> Array:
    """torchdeq ``fp_correction`` weights of ``n`` states (``jflow.deq.correction_weights``):
    exp ``gamma**(n-1-i)``, linear ``(i+1)/n`` or const 1."""
    from jflow.deq import correction_weights as deq_correction_weights
    return jnp.asarray(deq_correction_weights(n, gamma=gamma, kind=mode), jnp.float32)


def fixed_point_correction_loss(
    predictions: Array,
    flow_gt: Array,
    valid: Array,
    gamma: float = 0.8,
    *,
    mode: str = "exp",
    max_flow: float = MAX_FLOW,
) -> tuple[Array, dict[str, Array]]:
    """DEQ-Flow's fixed-point correction loss over the decoded states ``(n_states, B, H, W, 2)``."""
    n = jnp.shape(predictions)[0]
    return weighted_sequence_loss(predictions, flow_gt, valid, correction_weights(n, mode, gamma),
                                  max_flow=max_flow)
