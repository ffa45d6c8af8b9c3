"""Augmentation parameters per dataset and training stage (RAFT's `aug_params`)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """What the augmentor does to one dataset's samples.

    `sparse` selects RAFT's SparseFlowAugmentor (KITTI, HD1K) instead of FlowAugmentor.
    The scale is `2^U(min_scale, max_scale)`; `do_flip` enables the flips. `pad_to_crop`
    (sparse only): SEA-RAFT's SparseFlowAugmentor first zero-pads an image smaller than the crop
    at the bottom/right (flow 0, invalid) instead of scaling it up (KITTI at a 432-high crop).
    """

    sparse: bool = False
    min_scale: float = -0.2
    max_scale: float = 0.5
    do_flip: bool = True
    pad_to_crop: bool = False


# RAFT `train.py` / `datasets.fetch_dataloader`, one entry per (dataset, stage) pair.
CHAIRS = AugmentParams(False, -0.1, 1.0, True)
THINGS = AugmentParams(False, -0.4, 0.8, True)
SINTEL = AugmentParams(False, -0.2, 0.6, True)
KITTI = AugmentParams(True, -0.2, 0.4, False)
KITTI_IN_SINTEL_MIX = AugmentParams(True, -0.3, 0.5, True)
HD1K_IN_SINTEL_MIX = AugmentParams(True, -0.5, 0.2, True)
SYNTHETIC = AugmentParams(False, -0.2, 0.4, True)
# SEA-RAFT (core/datasets.py fetch_dataloader): TartanAir sparse (its flow masks), scale 0 + (-0.2,
# 0.4); Spring dense at scale -1 + (0, 0.2): 1080p frames trained at about 540p.
TARTANAIR = AugmentParams(True, -0.2, 0.4, True)
SPRING = AugmentParams(False, -1.0, -0.8, True)
