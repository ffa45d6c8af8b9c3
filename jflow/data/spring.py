"""Spring (Mehl et al., CVPR 2023): 1080p stereo video, forward and backward flow per camera in
HDF5 ``.flo5`` files at twice the image resolution, subsampled ``[::2, ::2]`` as SEA-RAFT does."""
from __future__ import annotations

import os

import numpy as np

from jflow.data import params as P
from jflow.data.base import FlowDataset, PairRecord, require_dir, sorted_glob
from jflow.data.errors import DatasetError, missing_layout_error

LAYOUT = """\
<root>/spring/
  train/<scene>/frame_left/frame_left_0001.png ...    (and frame_right/frame_right_0001.png)
  train/<scene>/flow_FW_left/flow_FW_left_0001.flo5 ...   (frame i -> i+1; HDF5 "flow",
  train/<scene>/flow_BW_left/flow_BW_left_0002.flo5 ...    2H x 2W x 2)  (frame i -> i-1)
  (the same for _right)
  val/...  (optional, same layout; without it val = train)
  test/<scene>/frame_left/..., frame_right/...        (no flow)"""

CAMERAS = ("left", "right")


def read_flo5(path: str) -> np.ndarray:
    """The ``flow`` dataset of a Spring ``.flo5`` (HDF5) file, (2H, 2W, 2) float32."""
    try:
        import h5py
    except ImportError:
        raise DatasetError("reading Spring .flo5 files needs h5py (pip install h5py)") from None
    try:
        with h5py.File(path, "r") as f:
            if "flow" not in f:
                raise ValueError(f"{path}: no 'flow' dataset in this HDF5 file (keys: "
                                 f"{sorted(f.keys())}); not a Spring .flo5 file")
            flow = np.asarray(f["flow"][()], np.float32)
    except OSError as e:
        raise OSError(f"{path}: not a readable HDF5 .flo5 file ({e})") from None
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"{path}: expected a (H, W, 2) flow, got shape {flow.shape}")
    return flow


def read_spring_flow(path: str) -> tuple[np.ndarray, None]:
    """Spring ground truth at image resolution: every second pixel (SEA-RAFT's
    ``subsample_groundtruth``); NaN (no ground truth) becomes invalid."""
    return read_flo5(path)[::2, ::2], None


class Spring(FlowDataset):
    """Per scene and camera (left, right): forward pairs (i -> i+1, i = 1..N-1) then backward
    pairs (i -> i-1, i = N..2), SEA-RAFT's ``SpringFlowDataset`` order. ``meta["scene"]`` is
    ``<scene>/<cam>/<FW|BW>`` (one video each); ``meta["frame"]`` the 1-based frame number of
    image 1. ``val`` reads ``<root>/val`` when it exists, else the training set (zero-shot
    evaluation); ``test`` has no flow."""

    name = "spring"

    def __init__(self, root: str, split: str = "train", *,
                 augment_params: P.AugmentParams = P.SPRING, skip_corrupt: bool = False):
        if split not in ("train", "training", "val", "test"):
            raise ValueError(f"Spring: split must be train|val|test, got {split!r}")
        part = {"training": "train"}.get(split, split)
        if part == "val" and not os.path.isdir(os.path.join(root, "val")):
            part = "train"
        seq_root = require_dir(os.path.join(root, part), "Spring", root, LAYOUT)
        records = []
        for scene in sorted(os.listdir(seq_root)):
            if not os.path.isdir(os.path.join(seq_root, scene)):
                continue
            for cam in CAMERAS:
                frames = sorted_glob(os.path.join(seq_root, scene, f"frame_{cam}", "*.png"))
                n = len(frames)
                image = lambda k: os.path.join(  # noqa: E731
                    seq_root, scene, f"frame_{cam}", f"frame_{cam}_{k:04d}.png")
                pairs = ([(k, k + 1, "FW") for k in range(1, n)]
                         + [(k, k - 1, "BW") for k in range(n, 1, -1)])
                for k, k2, direction in pairs:
                    flow = None
                    if part != "test":
                        flow = os.path.join(seq_root, scene, f"flow_{direction}_{cam}",
                                            f"flow_{direction}_{cam}_{k:04d}.flo5")
                        if not os.path.isfile(flow):
                            raise missing_layout_error(
                                "Spring", root, f"scene {scene}: {n} {cam} frames but no "
                                f"{os.path.relpath(flow, root)}", LAYOUT)
                    records.append(PairRecord(image(k), image(k2), flow,
                                              scene=f"{scene}/{cam}/{direction}", frame=k))
        if not records:
            raise missing_layout_error("Spring", root, f"no frames under {seq_root!r}", LAYOUT)
        super().__init__(records, flow_reader=read_spring_flow, augment_params=augment_params,
                         skip_corrupt=skip_corrupt)
