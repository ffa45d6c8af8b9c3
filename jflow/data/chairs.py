"""FlyingChairs (RAFT layout and the official train/validation split file)."""
from __future__ import annotations

import os

import numpy as np

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, read_flo_dense, require_dir, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/FlyingChairs_release/
  data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo, ... (22,872 triplets)
  chairs_split.txt      one integer per pair: 1 = train, 2 = validation
                        (RAFT ships it; also looked for in data/ and <root>/)"""

SPLIT_IDS = {"train": 1, "training": 1, "val": 2, "validation": 2}


def find_split_file(chairs_root: str) -> str | None:
    """The first existing chairs_split.txt next to, inside, or above the release folder."""
    for path in (
        os.path.join(chairs_root, "chairs_split.txt"),
        os.path.join(chairs_root, "data", "chairs_split.txt"),
        os.path.join(os.path.dirname(os.path.abspath(chairs_root)), "chairs_split.txt"),
    ):
        if os.path.isfile(path):
            return path
    return None


class FlyingChairs(FlowDataset):
    """FlyingChairs pairs of `split` ("train" or "val"; "all" ignores the split file)."""

    name = "chairs"

    def __init__(self, root: str, split: str = "train", *, split_file: str | None = None,
                 augment_params: P.AugmentParams = P.CHAIRS, skip_corrupt: bool = False):
        if split not in SPLIT_IDS and split != "all":
            raise ValueError(f"FlyingChairs: split must be train, val or all, got {split!r}")
        data = require_dir(os.path.join(root, "data"), "FlyingChairs", root, LAYOUT)
        images = sorted_glob(os.path.join(data, "*.ppm"))
        flows = sorted_glob(os.path.join(data, "*.flo"))
        if not flows or len(images) != 2 * len(flows):
            raise missing_layout_error(
                "FlyingChairs", root,
                f"found {len(images)} .ppm images and {len(flows)} .flo files in {data!r} "
                "(need two images per flow, at least one)", LAYOUT)
        if split == "all":
            keep = np.ones(len(flows), bool)
        else:
            split_file = split_file or find_split_file(root)
            if split_file is None:
                raise missing_layout_error("FlyingChairs", root, "chairs_split.txt not found",
                                           LAYOUT)
            ids = np.loadtxt(split_file, dtype=np.int32).reshape(-1)
            if len(ids) != len(flows):
                raise missing_layout_error(
                    "FlyingChairs", root,
                    f"{split_file} has {len(ids)} entries for {len(flows)} flow files", LAYOUT)
            keep = ids == SPLIT_IDS[split]
        records = [
            PairRecord(images[2 * i], images[2 * i + 1], flows[i],
                       scene=os.path.basename(flows[i]).split("_")[0], frame=0)
            for i in np.flatnonzero(keep)
        ]
        super().__init__(records, flow_reader=read_flo_dense, augment_params=augment_params,
                         skip_corrupt=skip_corrupt)
