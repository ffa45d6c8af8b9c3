"""Learning-rate schedules.

RAFT and DEQ-Flow train with PyTorch's ``OneCycleLR(max_lr, total_steps=num_steps + 100,
pct_start=0.05, cycle_momentum=False, anneal_strategy='linear')`` and its defaults
``div_factor=25``, ``final_div_factor=1e4``: the learning rate rises linearly from
``max_lr / 25`` at step 0 to ``max_lr`` at step ``pct_start * T - 1`` and falls linearly to
``max_lr / (25 * 1e4)`` at step ``T - 1``. Training stops 100 steps early.
"""
from __future__ import annotations

import optax


def onecycle_schedule(
    peak_lr: float,
    num_steps: int,
    *,
    pct_start: float = 0.05,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    extra_steps: int = 100,
) -> optax.Schedule:
    """PyTorch ``OneCycleLR`` (linear annealing, no momentum cycling) as an optax schedule.

    ``T = num_steps + extra_steps``. The warm-up ends at step ``pct_start * T - 1`` (PyTorch's
    own boundary, which may be fractional); optax's ``linear_schedule`` needs integer lengths, so
    the warm-up is joined to the decay at ``floor`` of that boundary with the decay starting
    from the value PyTorch has there, which reproduces PyTorch at every integer step.
    """
    if num_steps < 1 or peak_lr <= 0:
        raise ValueError(f"onecycle_schedule: need num_steps >= 1 and peak_lr > 0, got "
                         f"num_steps={num_steps}, peak_lr={peak_lr}")
    total = num_steps + extra_steps
    initial_lr = peak_lr / div_factor
    final_lr = initial_lr / final_div_factor
    warm_end = float(pct_start * total) - 1.0  # PyTorch's phase boundary
    if warm_end <= 0:
        raise ValueError(f"onecycle_schedule: warm-up boundary pct_start*T-1={warm_end} must be > 0 "
                         f"(T={total}, pct_start={pct_start})")
    decay_len = (total - 1) - warm_end

    def warm(step: float) -> float:
        return initial_lr + (peak_lr - initial_lr) * step / warm_end

    def decay(step: float) -> float:
        return peak_lr + (final_lr - peak_lr) * (step - warm_end) / decay_len

    boundary = int(warm_end)  # last integer step of the warm-up
    up = optax.linear_schedule(initial_lr, warm(boundary), max(boundary, 1))
    down_start = decay(boundary + 1)
    down = optax.linear_schedule(down_start, final_lr, total - 1 - (boundary + 1))
    return optax.join_schedules([up, down], [boundary + 1])
