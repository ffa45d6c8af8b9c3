"""TartanAir (SEA-RAFT's pre-training set): left-camera frames, ``.npy`` flow with an ``.npy``
mask per consecutive pair; validity ``1 - mask/100`` as SEA-RAFT reads it."""
from __future__ import annotations

import os

import numpy as np

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, sorted_glob
from jflow.data.errors import missing_layout_error

LAYOUT = """\
<root>/tartanair/                         (any depth, e.g. as unzipped from tartanair_tools:
  <env>/Easy/<env>/<env>/Easy/P000/         abandonedfactory/Easy/abandonedfactory/...)
    image_left/000000_left.png, 000001_left.png, ...
    flow/000000_000001_flow.npy ...   (H, W, 2) float32, one per consecutive pair
    flow/000000_000001_mask.npy ...   (H, W) uint8: 0 valid ... 100 invalid"""


def read_tartanair_flow(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(flow, validity): ``<i>_<j>_flow.npy`` and, beside it, ``<i>_<j>_mask.npy``; validity is
    SEA-RAFT's ``1 - mask/100`` (the dataset keeps pixels with validity > 0.5: masks 0, 1 and 10;
    100 is invalid; a resizing augmentation only validity >= 1, mask 0, as SEA-RAFT's sparse
    resize). No pickles are loaded."""
    if not path.endswith("_flow.npy"):
        raise ValueError(f"{path}: expected a TartanAir <i>_<j>_flow.npy file")
    mask_path = path[: -len("_flow.npy")] + "_mask.npy"
    flow = np.load(path, allow_pickle=False)
    if flow.ndim != 3 or flow.shape[-1] < 2:
        raise ValueError(f"{path}: expected an (H, W, 2) flow array, got shape {flow.shape}")
    mask = np.load(mask_path, allow_pickle=False)
    if mask.shape != flow.shape[:2]:
        raise ValueError(f"{mask_path}: mask shape {mask.shape} does not match the flow "
                         f"{flow.shape[:2]}")
    return flow[..., :2].astype(np.float32), 1.0 - mask.astype(np.float32) / 100.0


class TartanAir(FlowDataset):
    """Every folder under ``root`` holding an ``image_left`` folder is one trajectory (scene):
    pairs (i, i+1) of its sorted frames with ``flow/<i:06d>_<i+1:06d>_flow.npy`` (SEA-RAFT's
    ``TartanAir``). Training only (no test split); sparse augmentation, as SEA-RAFT."""

    name = "tartanair"

    def __init__(self, root: str, split: str = "train", *,
                 augment_params: P.AugmentParams = P.TARTANAIR, skip_corrupt: bool = False):
        if split not in ("train", "training"):
            raise ValueError(f"TartanAir: only a training split exists, got {split!r}")
        if not os.path.isdir(root):
            raise missing_layout_error("TartanAir", root, f"folder {root!r} not found", LAYOUT)
        scenes = sorted(d for d, subdirs, _ in os.walk(root) if "image_left" in subdirs)
        records = []
        for scene in scenes:
            images = sorted_glob(os.path.join(scene, "image_left", "*.png"))
            name = os.path.relpath(scene, root)
            for i in range(len(images) - 1):
                flow = os.path.join(scene, "flow", f"{i:06d}_{i + 1:06d}_flow.npy")
                if not os.path.isfile(flow):
                    raise missing_layout_error(
                        "TartanAir", root, f"trajectory {name}: {len(images)} frames but no "
                        f"{os.path.relpath(flow, root)}", LAYOUT)
                records.append(PairRecord(images[i], images[i + 1], flow, scene=name, frame=i))
        if not records:
            raise missing_layout_error("TartanAir", root, "no image_left folder with two or "
                                       "more frames", LAYOUT)
        super().__init__(records, flow_reader=read_tartanair_flow, augment_params=augment_params,
                         skip_corrupt=skip_corrupt)
