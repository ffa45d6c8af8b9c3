"""SEA-RAFT's augmentation table: the published stages carry the official per-dataset values
(core/datasets.py fetch_dataloader) into jflow's loader, and the loader applies them."""
import dataclasses

import numpy as np
import pytest

from configs_for_tests import load_config_module
from jflow import recipes
from jflow.data import AugmentParams, Augmentor
from jflow.data.loader import Loader
from jflow.data.sources import spec_augmentation


def get_config(arg):
    return load_config_module("sea_raft").get_config(arg)


def P(sparse, lo, hi, flip, pad=False):  # noqa: N802
    return AugmentParams(sparse, lo, hi, flip, pad)


# The official fetch_dataloader, per training config (args.scale: spring -1, else 0).
OFFICIAL = {
    "tartan": ((480, 640), [(1, "tartanair", P(True, -0.2, 0.4, True, True))]),
    "chairs": ((368, 496), [(1, "chairs", P(False, -0.1, 1.0, True))]),
    "things": ((432, 960), [(1, "things_clean", P(False, -0.4, 0.8, True)),
                            (1, "things_final", P(False, -0.4, 0.8, True))]),
    "tskh": ((432, 960), [(20, "sintel_clean", P(False, -0.2, 0.6, True)),
                          (20, "sintel_final", P(False, -0.2, 0.6, True)),
                          (80, "kitti", P(True, -0.3, 0.5, True, True)),
                          (30, "hd1k", P(True, -0.5, 0.2, True, True)),
                          (1, "things_clean", P(False, -0.2, 0.6, True))]),
    "kitti": ((432, 960), [(1, "kitti", P(True, -0.2, 0.4, False, True))]),
    "spring": ((540, 960), [(1, "spring", P(False, -1.0, -0.8, True))]),
}


@pytest.mark.parametrize("stage", sorted(OFFICIAL))
def test_stages_carry_the_official_augmentation(stage):
    crop, terms = OFFICIAL[stage]
    for size in ("S", "M"):
        c = get_config(f"{size},stage={stage}")
        assert tuple(c.data.crop) == crop and c.data.augment
        got = spec_augmentation(c.data.train)
        assert [(w, n) for w, n, _ in got] == [(w, n) for w, n, _ in terms]
        for (_, name, params), (_, _, want) in zip(got, terms):
            assert params == want, (stage, name, params, want)
    # the rest of the official augmentor is jflow's Augmentor as it stands
    aug = Augmentor((64, 64))
    assert {k: getattr(aug, k) for k in recipes.SEA_RAFT_AUGMENTOR} == recipes.SEA_RAFT_AUGMENTOR


class _Source:
    """One sample, repeated, with fixed augmentation parameters."""

    def __init__(self, sample, params, n=12):
        self.sample, self.params, self.n = sample, params, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(self.sample, meta={"dataset": "fake", "frame": i})

    def augment_params_at(self, i):
        return self.params


def _loader(params, crop, sample):
    return Loader(_Source(sample, params), 1, seed=0, augment=True, crop=crop, shuffle=False,
                  num_workers=0)


def test_kitti_stage_pads_short_frames_instead_of_scaling_them():
    """KITTI frames (375 rows) at SEA-RAFT's 432x960 crop: zero rows at the bottom, invalid
    there; RAFT's KITTI augmentation (no pad) scales the frame up instead."""
    c = get_config("S,stage=kitti")
    (_, _, params), = spec_augmentation(c.data.train)
    rng = np.random.default_rng(0)
    h, w = 375, 1242
    sample = {"image1": rng.integers(1, 255, (h, w, 3), dtype=np.uint8),
              "image2": rng.integers(1, 255, (h, w, 3), dtype=np.uint8),
              "flow": np.ones((h, w, 2), np.float32), "valid": np.ones((h, w), bool)}
    for name, p in (("sea_raft", params), ("raft", dataclasses.replace(params,
                                                                       pad_to_crop=False))):
        loader = _loader(p, tuple(c.data.crop), sample)
        for pos in range(3):
            s = loader.sample(pos)
            assert s["image1"].shape == (432, 960, 3)
            bottom = s["valid"][-30:]
            if name == "sea_raft":  # >= 432 - 375 * 2^0.4 ... the pad survives the crop
                assert not bottom.any() and not s["image1"][-30:].any()
                assert s["valid"][:300].any()
            else:
                assert bottom.any() and s["image1"][-30:].any()


def test_spring_stage_scale_range_reaches_the_augmentor():
    """A constant unit flow comes out scaled by the resize factor: Spring's 2^U(-1, -0.8) (x a
    stretch of 2^U(-0.2, 0.2)) or unscaled when the resize is skipped (p = 0.2); Chairs' range
    2^U(-0.1, 1) never gives factors that small."""
    sample = {"image1": np.full((240, 360, 3), 100, np.uint8),
              "image2": np.full((240, 360, 3), 100, np.uint8),
              "flow": np.stack([np.ones((240, 360)), np.zeros((240, 360))], -1).astype(
                  np.float32),
              "valid": np.ones((240, 360), bool)}
    factors = {}
    for stage in ("spring", "chairs"):
        (_, _, params), = spec_augmentation(get_config(f"S,stage={stage}").data.train)
        loader = _loader(params, (64, 96), sample)
        factors[stage] = [float(np.median(np.abs(loader.sample(i)["flow"][..., 0])))
                          for i in range(12)]
    scaled = [f for f in factors["spring"] if abs(f - 1) > 1e-6]
    assert len(scaled) >= 6
    assert all(2 ** -1.2 - 1e-3 <= f <= 2 ** -0.6 + 1e-3 for f in scaled)
    assert all(f > 2 ** -0.3 - 1e-3 for f in factors["chairs"])
