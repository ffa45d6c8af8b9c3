"""experiments/vs_torch.py: achieved rates and the speed-up bound at the measured peak."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))

import vs_torch  # noqa: E402  (imports neither torch nor jax at module level)


def test_bound_is_torch_time_over_jflow_work_at_the_peak():
    row = dict(jflow_conv_gflop=180.0, jflow_dot_gflop=20.0, torch_conv_gflop=240.0,
               torch_matmul_gflop=10.0, jflow_ms=1000.0, torch_ms=1500.0)
    out = vs_torch.rates_and_bound(row, peak_gflops=400.0)
    assert out["jflow_gflops_per_s"] == pytest.approx(200.0)
    assert out["torch_gflops_per_s"] == pytest.approx(250.0 / 1.5)
    # jflow's 200 GFLOP at 400 GFLOP/s take 500 ms at best: torch's 1500 ms is 3x that
    assert out["speedup_bound"] == pytest.approx(3.0)
    assert out["peak_gflops"] == 400.0
    # the bound caps the measured speed-up whenever jflow runs below the peak
    assert out["speedup_bound"] >= row["torch_ms"] / row["jflow_ms"]
