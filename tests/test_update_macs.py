"""experiments/update_macs.py: the per-step multiply-add count behind the speed-up bound."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))

import update_macs  # noqa: E402


def test_raft_step_macs_match_the_architecture_layer_by_layer():
    r = update_macs.step_macs(os.path.join(REPO, "configs", "raft.py"))
    # motion encoder: convc1 1x1 324->256, convc2 3x3 256->192, convf1 7x7 2->128,
    # convf2 3x3 128->64, conv 3x3 (192+64)->126
    motion = 324 * 256 + 9 * 256 * 192 + 49 * 2 * 128 + 9 * 128 * 64 + 9 * 256 * 126
    # SepConvGRU: 1x5 and 5x1, z/r/q each over (hidden 128, context 128, motion 128) -> 128
    gru_ctx = 2 * 3 * 5 * 128 * 128
    gru = 2 * 3 * 5 * 384 * 128
    head = 9 * 128 * 256 + 9 * 256 * 2
    mask = 9 * 128 * 256 + 256 * 576
    assert r["gru_context_mac_per_px"] == gru_ctx
    assert r["mask_head_mac_per_px"] == mask
    assert r["official_mac_per_px"] == motion + gru + head + mask
    assert r["jflow_mac_per_px"] == motion + gru - gru_ctx + head


def test_gma_is_refused_rather_than_miscounted():
    with pytest.raises(ValueError, match="GMA"):
        update_macs.step_macs(os.path.join(REPO, "configs", "gma.py"))
