"""KITTI-2015 scene flow benchmark (sparse flow PNGs with a valid channel)."""
from __future__ import annotations

import os

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, read_sparse_png, require_dir, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/KITTI/
  training/image_2/000000_10.png, 000000_11.png, ...   (200 pairs)
  training/flow_occ/000000_10.png, ...                  (16-bit PNG: u, v, valid)
  testing/image_2/000000_10.png, 000000_11.png, ...    (200 pairs, no flow)"""

SPLITS = {"train": "training", "training": "training", "val": "training", "test": "testing",
          "testing": "testing"}


class Kitti(FlowDataset):
    """KITTI-15 pairs `N_10.png -> N_11.png`; RAFT trains and validates on all 200 training
    pairs. Test samples carry zero flow, `valid` all False and `meta["has_gt"] = False`;
    `meta["scene"]` is the frame id `N` (submission file name `N_10.png`)."""

    name = "kitti"

    def __init__(self, root: str, split: str = "train", *,
                 augment_params: P.AugmentParams = P.KITTI, skip_corrupt: bool = False):
        if split not in SPLITS:
            raise ValueError(f"Kitti: split must be train|val|test, got {split!r}")
        part = os.path.join(root, SPLITS[split])
        img_dir = require_dir(os.path.join(part, "image_2"), "KITTI", root, LAYOUT)
        images1 = sorted_glob(os.path.join(img_dir, "*_10.png"))
        images2 = sorted_glob(os.path.join(img_dir, "*_11.png"))
        if not images1 or len(images1) != len(images2):
            raise missing_layout_error(
                "KITTI", root, f"{img_dir!r} has {len(images1)} *_10.png and {len(images2)} "
                "*_11.png images", LAYOUT)
        flows: list[str | None] = [None] * len(images1)
        if SPLITS[split] == "training":
            flow_dir = require_dir(os.path.join(part, "flow_occ"), "KITTI", root, LAYOUT)
            flows = sorted_glob(os.path.join(flow_dir, "*_10.png"))
            if len(flows) != len(images1):
                raise missing_layout_error(
                    "KITTI", root, f"{len(flows)} flow files for {len(images1)} pairs", LAYOUT)
        records = [
            PairRecord(a, b, f, scene=os.path.basename(a)[: -len("_10.png")], frame=0)
            for a, b, f in zip(images1, images2, flows)
        ]
        super().__init__(records, flow_reader=read_sparse_png, augment_params=augment_params,
                         skip_corrupt=skip_corrupt)
