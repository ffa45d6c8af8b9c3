"""MPI Sintel (clean or final pass; training with flow, test without), scene-aware."""
from __future__ import annotations

import os

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, read_flo_dense, require_dir, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/Sintel/
  training/clean/<scene>/frame_0001.png ...
  training/final/<scene>/frame_0001.png ...
  training/flow/<scene>/frame_0001.flo ...      (one fewer than the frames)
  test/clean/<scene>/frame_0001.png ...
  test/final/<scene>/frame_0001.png ..."""

SPLITS = {"train": "training", "training": "training", "val": "training", "test": "test"}


class MpiSintel(FlowDataset):
    """Consecutive pairs per scene. RAFT trains and validates on all of `training` (there is no
    separate validation split); `test` samples have zero flow, `valid` all False and
    `meta["has_gt"] = False`. `meta["scene"]`/`meta["frame"]` (0-based index of image 1) tell
    where scenes change; `scenes()` groups the indices."""

    name = "sintel"

    def __init__(self, root: str, dstype: str = "clean", split: str = "train", *,
                 augment_params: P.AugmentParams = P.SINTEL, skip_corrupt: bool = False):
        if dstype not in ("clean", "final") or split not in SPLITS:
            raise ValueError(f"MpiSintel: dstype must be clean|final and split train|val|test, "
                             f"got {dstype!r}, {split!r}")
        part = SPLITS[split]
        img_root = require_dir(os.path.join(root, part, dstype), "MpiSintel", root, LAYOUT)
        flow_root = None
        if part == "training":
            flow_root = require_dir(os.path.join(root, part, "flow"), "MpiSintel", root, LAYOUT)
        records = []
        for scene in sorted(os.listdir(img_root)):
            images = sorted_glob(os.path.join(img_root, scene, "*.png"))
            flows = [None] * max(len(images) - 1, 0)
            if flow_root is not None:
                flows = sorted_glob(os.path.join(flow_root, scene, "*.flo"))
                if len(flows) != len(images) - 1:
                    raise missing_layout_error(
                        "MpiSintel", root,
                        f"scene {scene}: {len(images)} frames but {len(flows)} flow files "
                        f"(expected {len(images) - 1})", LAYOUT)
            for i in range(len(images) - 1):
                records.append(PairRecord(images[i], images[i + 1], flows[i], scene=scene,
                                          frame=i))
        if not records:
            raise missing_layout_error("MpiSintel", root, f"no frames under {img_root!r}",
                                       LAYOUT)
        super().__init__(records, flow_reader=read_flo_dense, augment_params=augment_params,
                         skip_corrupt=skip_corrupt, name=f"sintel_{dstype}")
