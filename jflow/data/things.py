"""FlyingThings3D (RAFT layout: left camera, both directions, clean or final pass)."""
from __future__ import annotations

import os

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, read_pfm_dense, require_dir, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/FlyingThings3D/
  frames_cleanpass/TRAIN/{A,B,C}/NNNN/left/0006.png ...   (TEST/ for split="test")
  frames_finalpass/TRAIN/{A,B,C}/NNNN/left/0006.png ...
  optical_flow/TRAIN/{A,B,C}/NNNN/into_future/left/OpticalFlowIntoFuture_0006_L.pfm ...
  optical_flow/TRAIN/{A,B,C}/NNNN/into_past/left/OpticalFlowIntoPast_0006_L.pfm ...
  all_unused_files.txt   optional: lines naming excluded frames (e.g. A/0000/left/0006.png)"""

PASSES = {"clean": "frames_cleanpass", "final": "frames_finalpass"}
SPLITS = {"train": "TRAIN", "training": "TRAIN", "test": "TEST", "val": "TEST"}


def load_exclusions(root: str) -> set[str]:
    """Frames listed in `<root>/all_unused_files.txt` (relative 'A/0000/left/0006.png' form)."""
    path = os.path.join(root, "all_unused_files.txt")
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        return {line.strip().removeprefix("TRAIN/").removeprefix("TEST/")
                for line in f if line.strip()}


class FlyingThings3D(FlowDataset):
    """Things pairs for one pass. Each direction drops its last frame; `into_past` pairs
    `(img[i+1], img[i])` with `flow[i+1]` (RAFT). Pairs whose first frame is listed in the
    optional `all_unused_files.txt` are excluded."""

    name = "things"

    def __init__(self, root: str, dstype: str = "clean", split: str = "train", *,
                 augment_params: P.AugmentParams = P.THINGS, skip_corrupt: bool = False):
        if dstype not in PASSES or split not in SPLITS:
            raise ValueError(f"FlyingThings3D: dstype must be clean|final and split train|test, "
                             f"got {dstype!r}, {split!r}")
        part = SPLITS[split]
        img_root = require_dir(os.path.join(root, PASSES[dstype], part), "FlyingThings3D",
                               root, LAYOUT)
        flow_root = require_dir(os.path.join(root, "optical_flow", part), "FlyingThings3D",
                                root, LAYOUT)
        excluded = load_exclusions(root)
        scenes = [os.path.relpath(d, img_root) for d in sorted_glob(os.path.join(img_root, "*/*"))]
        records = []
        for direction in ("into_future", "into_past"):
            for scene in scenes:
                images = sorted_glob(os.path.join(img_root, scene, "left", "*.png"))
                flows = sorted_glob(os.path.join(flow_root, scene, direction, "left", "*.pfm"))
                if len(images) != len(flows):
                    raise missing_layout_error(
                        "FlyingThings3D", root,
                        f"scene {scene}: {len(images)} images but {len(flows)} {direction} "
                        "flow files", LAYOUT)
                for i in range(len(flows) - 1):
                    if direction == "into_future":
                        pair, flow = (images[i], images[i + 1]), flows[i]
                    else:
                        pair, flow = (images[i + 1], images[i]), flows[i + 1]
                    rel = os.path.relpath(pair[0], img_root)
                    if rel in excluded:
                        continue
                    records.append(PairRecord(pair[0], pair[1], flow,
                                              scene=f"{scene}/{direction}", frame=i))
        if not records:
            raise missing_layout_error("FlyingThings3D", root,
                                       f"no image pairs under {img_root!r}", LAYOUT)
        super().__init__(records, flow_reader=read_pfm_dense, augment_params=augment_params,
                         skip_corrupt=skip_corrupt, name=f"things_{dstype}")
