"""HD1K benchmark (sparse flow PNGs in KITTI encoding), consecutive pairs per sequence."""
from __future__ import annotations

import os

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, read_sparse_png, require_dir, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/HD1K/
  hd1k_input/image_2/000000_0000.png, 000000_0001.png, ...   (%06d sequence, %04d frame)
  hd1k_flow_gt/flow_occ/000000_0000.png, ...                 (one per frame)"""


class HD1K(FlowDataset):
    """HD1K pairs: sequences numbered from 0 until one is missing; pair i uses frames
    (i, i+1) and flow i, and the last flow of each sequence is unused (RAFT)."""

    name = "hd1k"

    def __init__(self, root: str, split: str = "train", *,
                 augment_params: P.AugmentParams = P.HD1K_IN_SINTEL_MIX,
                 skip_corrupt: bool = False):
        if split not in ("train", "training"):
            raise ValueError(f"HD1K: only the training split exists, got {split!r}")
        img_dir = require_dir(os.path.join(root, "hd1k_input", "image_2"), "HD1K", root, LAYOUT)
        flow_dir = require_dir(os.path.join(root, "hd1k_flow_gt", "flow_occ"), "HD1K", root,
                               LAYOUT)
        records = []
        seq = 0
        while True:
            flows = sorted_glob(os.path.join(flow_dir, f"{seq:06d}_*.png"))
            images = sorted_glob(os.path.join(img_dir, f"{seq:06d}_*.png"))
            if not flows:
                break
            if len(images) < len(flows):
                raise missing_layout_error(
                    "HD1K", root, f"sequence {seq:06d}: {len(images)} images for {len(flows)} "
                    "flow files", LAYOUT)
            for i in range(len(flows) - 1):
                records.append(PairRecord(images[i], images[i + 1], flows[i],
                                          scene=f"{seq:06d}", frame=i))
            seq += 1
        if not records:
            raise missing_layout_error("HD1K", root, f"no flow files in {flow_dir!r}", LAYOUT)
        super().__init__(records, flow_reader=read_sparse_png, augment_params=augment_params,
                         skip_corrupt=skip_corrupt)
