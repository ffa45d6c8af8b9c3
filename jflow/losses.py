"""Training losses: RAFT's sequence loss and DEQ-Flow's fixed-point correction loss.

Both supervise a sequence of flow predictions ``(N, B, H, W, 2)`` with
``sum_i w_i * mean(valid * |pred_i - gt|_1)``, the mean taken over all ``B*H*W*2`` entries (invalid
pixels stay in the denominator, as in RAFT), ``valid = (valid >= 0.5) & (|gt|_2 < max_flow)``.
RAFT weights its ``N`` iterations ``gamma**(N-1-i)``; DEQ-Flow weights its ``n_states`` decoded
fixed-point estimates with torchdeq's ``fp_correction`` weights (exp, linear or const).
LiteFlowNet2 trains with :func:`multilevel_loss` (per-level L2 or generalised Charbonnier on
scaled flow); SEA-RAFT with :func:`mixture_laplace_loss` (mixture-of-Laplace negative
log-likelihood of its flow and mixture parameters).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
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


# ------------------------------------------------------------------- multi-level (LiteFlowNet2)

# LiteFlowNet / FlowNet level weights L6, L5, L4, L3 (and L2 for a model predicting it), and the
# weight of the full-resolution term (mmflow's LiteFlowNet2 configs).
LFN_LEVEL_WEIGHTS = (0.32, 0.08, 0.02, 0.01)
LFN_L2_WEIGHT = 0.005
LFN_FULL_RES_WEIGHT = 6.25e-4
MULTILEVEL_KINDS = ("l2", "charbonnier")


def _robust_norm(diff: Array) -> Array:
    """Per-pixel L2 norm over the last axis, with a zero (not NaN) gradient at 0."""
    s = jnp.sum(jnp.square(diff), axis=-1)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def _pixel_loss(pred: Array, gt: Array, kind: str, q: float, eps: float) -> Array:
    if kind == "l2":
        return _robust_norm(pred - gt)
    if kind == "charbonnier":
        return (jnp.sum(jnp.square(pred - gt), axis=-1) + eps) ** q
    raise ValueError(f"multilevel loss kind must be one of {MULTILEVEL_KINDS}, got {kind!r}")


def _block_mean(x: Array, fh: int, fw: int) -> Array:
    b, h, w = x.shape[:3]
    return jnp.mean(x.reshape(b, h // fh, fh, w // fw, fw, *x.shape[3:]), axis=(2, 4))


def _block_max(x: Array, fh: int, fw: int) -> Array:
    b, h, w = x.shape[:3]
    return jnp.max(x.reshape(b, h // fh, fh, w // fw, fw, *x.shape[3:]), axis=(2, 4))


def multilevel_loss(
    pyramid: Sequence[Array],
    flow: Array,
    flow_gt: Array,
    valid: Array,
    level_weights: Sequence[float] = LFN_LEVEL_WEIGHTS,
    full_res_weight: float = LFN_FULL_RES_WEIGHT,
    *,
    kind: str = "l2",
    q: float = 0.2,
    eps: float = 0.01,
    div_flow: float = 20.0,
    resize: str = "downsample",
    max_flow: float = MAX_FLOW,
) -> tuple[Array, dict[str, Array]]:
    """LiteFlowNet's multi-level loss on scaled flow (pixel flow / ``div_flow``).

    ``pyramid``: per-level predictions (B, h_l, w_l, 2) in scaled units, coarse to fine, weighted
    by ``level_weights``; ``flow`` (B, H, W, 2) the full-resolution prediction in pixels, weighted
    by ``full_res_weight`` (0 drops it). Per pixel ``kind`` "l2" is the end-point error and
    "charbonnier" the generalised Charbonnier ``(|d|^2 + eps)^q`` (q 0.2, eps 0.01 when
    fine-tuning). Each level's loss is the sum over valid pixels divided by the batch size (Caffe /
    mmflow ``reduction='sum'``). ``resize="downsample"`` compares with the ground truth block-
    averaged to the level (valid = any valid pixel in the block; dense data), ``"upsample"`` with
    the prediction bilinearly upsampled to full resolution (sparse data such as KITTI); a level
    whose size does not divide the ground truth's is always upsampled. Returns ``(loss,
    metrics)`` with ``epe``, ``1px``, ``3px``, ``5px`` of ``flow`` over the valid pixels.
    """
    if resize not in ("downsample", "upsample"):
        raise ValueError(f"multilevel_loss: resize must be 'downsample' or 'upsample', got "
                         f"{resize!r}")
    if len(level_weights) != len(pyramid):
        raise ValueError(f"multilevel_loss: {len(level_weights)} level weights for "
                         f"{len(pyramid)} pyramid levels")
    gt = flow_gt.astype(jnp.float32)
    b, h, w = gt.shape[:3]
    mask = valid_mask(gt, valid, max_flow)
    gt_s = gt / div_flow
    loss = jnp.zeros((), jnp.float32)
    for pred, weight in zip(pyramid, level_weights):
        pred = pred.astype(jnp.float32)
        ph, pw = pred.shape[1:3]
        if resize == "downsample" and h % ph == 0 and w % pw == 0:
            fh, fw = h // ph, w // pw
            target, m = _block_mean(gt_s, fh, fw), _block_max(mask, fh, fw)
        else:
            from jflow.models.liteflownet2 import resize_bilinear
            pred, target, m = resize_bilinear(pred, (h, w)), gt_s, mask
        loss = loss + weight * jnp.sum(_pixel_loss(pred, target, kind, q, eps) * m) / b
    flow = flow.astype(jnp.float32)
    if full_res_weight:
        loss = loss + full_res_weight * jnp.sum(
            _pixel_loss(flow / div_flow, gt_s, kind, q, eps) * mask) / b
    epe = jnp.sqrt(jnp.sum(jnp.square(flow - gt), axis=-1))
    count = jnp.maximum(jnp.sum(mask), 1.0)
    metrics = {"epe": jnp.sum(epe * mask) / count}
    for t in (1, 3, 5):
        metrics[f"{t}px"] = jnp.sum((epe < t) * mask) / count
    return loss, metrics


# ----------------------------------------------------------------- mixture of Laplace (SEA-RAFT)

def mixture_laplace_nll(pred: Array, info: Array, flow_gt: Array, *, var_min: float = 0.0,
                        var_max: float = 10.0) -> Array:
    """SEA-RAFT's per-coordinate negative log-likelihood (B, H, W, 2) of ``flow_gt`` under the
    2-component Laplace mixture predicted with ``pred`` (B, H, W, 2) and ``info`` (B, H, W, 4):
    mixture logits ``info[..., :2]`` (shared by x and y), raw log-scales ``info[..., 2:]`` clamped
    to ``log b_1 in [0, var_max]``, ``log b_2 in [var_min, 0]`` (official ``core/raft.py``):
    ``-log sum_m pi_m exp(-|d| / b_m) / (2 b_m)``, computed with log-sum-exp."""
    info = info.astype(jnp.float32)
    logits = info[..., 0:2]
    log_b = jnp.stack([jnp.clip(info[..., 2], 0.0, var_max),
                       jnp.clip(info[..., 3], var_min, 0.0)], axis=-1)  # (B, H, W, m)
    diff = jnp.abs(flow_gt.astype(jnp.float32) - pred.astype(jnp.float32))  # (B, H, W, 2)
    term2 = diff[..., :, None] * jnp.exp(-log_b)[..., None, :]  # (B, H, W, 2, m)
    term1 = logits - jnp.log(2.0) - log_b  # (B, H, W, m)
    return (jax.nn.logsumexp(logits, axis=-1)[..., None]
            - jax.nn.logsumexp(term1[..., None, :] - term2, axis=-1))


def mixture_laplace_loss(
    predictions: Array,
    info_predictions: Array,
    flow_gt: Array,
    valid: Array,
    weights: Array | Sequence[float],
    *,
    max_flow: float = MAX_FLOW,
    var_min: float = 0.0,
    var_max: float = 10.0,
) -> tuple[Array, dict[str, Array]]:
    """SEA-RAFT's sequence loss: ``sum_i weights[i] * mean_masked(NLL_i)``.

    ``predictions`` (N, B, H, W, 2), ``info_predictions`` (N, B, H, W, 4) (the model's outputs
    when training: initial flow + one per iteration); ``weights`` (N,) (``gamma**(N-1-i)``). The
    mean runs over the (pixel, coordinate) entries with ``valid >= 0.5``, ``|gt| < max_flow`` and
    a finite NLL (official ``core/loss.py``; a batch with no such entry contributes 0, where the
    official code divides by zero). Metrics as :func:`weighted_sequence_loss` (last prediction).
    """
    predictions = jnp.asarray(predictions)
    info_predictions = jnp.asarray(info_predictions)
    weights = jnp.asarray(weights, jnp.float32)
    n = predictions.shape[0]
    if predictions.ndim != 5 or predictions.shape[1:] != flow_gt.shape:
        raise ValueError(f"mixture_laplace_loss: predictions must be (N, *flow_gt.shape), got "
                         f"{predictions.shape} for flow_gt {flow_gt.shape}")
    if info_predictions.shape != predictions.shape[:-1] + (4,):
        raise ValueError(f"mixture_laplace_loss: info_predictions must be "
                         f"{predictions.shape[:-1] + (4,)}, got {info_predictions.shape}")
    if weights.shape != (n,):
        raise ValueError(f"mixture_laplace_loss: weights shape {weights.shape} does not match "
                         f"{n} predictions")
    gt = flow_gt.astype(jnp.float32)
    mask = valid_mask(gt, valid, max_flow)[..., None] > 0  # (B, H, W, 1)
    loss = jnp.zeros((), jnp.float32)
    for i in range(n):
        nll = mixture_laplace_nll(predictions[i], info_predictions[i], gt, var_min=var_min,
                                  var_max=var_max)
        m = mask & jnp.isfinite(jax.lax.stop_gradient(nll))
        total = jnp.sum(jnp.where(m, nll, 0.0))
        loss = loss + weights[i] * total / jnp.maximum(jnp.sum(m), 1)
    epe = jnp.sqrt(jnp.sum(jnp.square(predictions[-1].astype(jnp.float32) - gt), axis=-1))
    mv = mask[..., 0].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mv), 1.0)
    metrics = {"epe": jnp.sum(epe * mv) / count}
    for t in (1, 3, 5):
        metrics[f"{t}px"] = jnp.sum((epe < t) * mv) / count
    return loss, metrics
