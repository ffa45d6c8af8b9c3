"""The one-cycle schedule against PyTorch OneCycleLR's formula (linear, three_phase=False)."""
import numpy as np
import pytest

from jflow.schedules import onecycle_schedule


def torch_onecycle(step, max_lr, total, pct_start=0.05, div=25.0, final_div=1e4):
    """PyTorch ``OneCycleLR.get_lr`` with anneal_strategy='linear', written out by hand."""
    initial, minimum = max_lr / div, max_lr / div / final_div
    end1 = float(pct_start * total) - 1
    if step <= end1:
        return initial + (max_lr - initial) * step / end1
    return max_lr + (minimum - max_lr) * (step - end1) / (total - 1 - end1)


@pytest.mark.parametrize("num_steps", [100_000, 250, 37])
def test_matches_torch_formula(num_steps):
    lr = 4e-4
    sched = onecycle_schedule(lr, num_steps)
    total = num_steps + 100
    steps = sorted({0, 1, 2, int(0.05 * total) - 1, int(0.05 * total), total // 2, num_steps - 1,
                    total - 2, total - 1})
    got = np.array([float(sched(s)) for s in steps])
    want = np.array([torch_onecycle(s, lr, total) for s in steps])
    # float32 steps: absolute error relative to the peak (cancellation near the end)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=lr * 1e-7)


def test_landmarks():
    lr, n = 1.25e-4, 100_000
    sched = onecycle_schedule(lr, n)
    total = n + 100
    np.testing.assert_allclose(float(sched(0)), lr / 25, rtol=1e-5)
    np.testing.assert_allclose(float(sched(int(0.05 * total) - 1)), lr, rtol=1e-5)
    np.testing.assert_allclose(float(sched(total - 1)), lr / 25 / 1e4, rtol=1e-3, atol=lr * 1e-7)
    assert float(sched(int(0.05 * total) - 1)) > float(sched(int(0.05 * total)))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        onecycle_schedule(1e-4, 0)
