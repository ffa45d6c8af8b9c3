"""Tiny dataset folders in the real file formats, for the data tests.

Each writer creates the RAFT layout under a root folder and returns the arrays it wrote so
tests can compare what the readers give back. Images are random uint8, flows random float32.
"""
from __future__ import annotations

import os

import numpy as np
from scipy.ndimage import map_coordinates

from jflow import io as jio

H, W = 12, 16


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(rng, h=H, w=W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _flow(rng, h=H, w=W) -> np.ndarray:
    return rng.uniform(-8, 8, (h, w, 2)).astype(np.float32)


def _mk(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def write_chairs(root: str, split_ids=(1, 1, 2), seed: int = 0) -> list[dict]:
    """`root/FlyingChairs_release/{data/NNNNN_img1.ppm, _img2.ppm, _flow.flo, chairs_split.txt}`."""
    rng = _rng(seed)
    base = os.path.join(root, "FlyingChairs_release")
    out = []
    for i, _ in enumerate(split_ids, start=1):
        s = dict(image1=_image(rng), image2=_image(rng), flow=_flow(rng))
        jio.write_image(_mk(os.path.join(base, "data", f"{i:05d}_img1.ppm")), s["image1"])
        jio.write_image(os.path.join(base, "data", f"{i:05d}_img2.ppm"), s["image2"])
        jio.write_flo(os.path.join(base, "data", f"{i:05d}_flow.flo"), s["flow"])
        out.append(s)
    np.savetxt(os.path.join(base, "chairs_split.txt"), np.array(split_ids), fmt="%d")
    return out


def write_things(root: str, frames: int = 3, seed: int = 1) -> dict:
    """One scene `TRAIN/A/0000`, `frames` frames, both passes, both flow directions (.pfm)."""
    rng = _rng(seed)
    base = os.path.join(root, "FlyingThings3D")
    data = {"clean": [], "final": [], "into_future": [], "into_past": []}
    for k in range(frames):
        num = 6 + k
        for dstype in ("clean", "final"):
            img = _image(rng)
            jio.write_image(_mk(os.path.join(base, f"frames_{dstype}pass", "TRAIN", "A", "0000",
                                             "left", f"{num:04d}.png")), img)
            data[dstype].append(img)
        for direction, tag in (("into_future", "IntoFuture"), ("into_past", "IntoPast")):
            flow = _flow(rng)
            pfm = np.concatenate([flow, np.zeros(flow.shape[:2] + (1,), np.float32)], -1)
            jio.write_pfm(_mk(os.path.join(base, "optical_flow", "TRAIN", "A", "0000", direction,
                                           "left", f"OpticalFlow{tag}_{num:04d}_L.pfm")), pfm)
            data[direction].append(flow)
    return data


def write_sintel(root: str, scenes=(("alley_1", 3), ("bamboo_2", 2)), seed: int = 2) -> dict:
    """`Sintel/{training,test}/{clean,final}/<scene>/frame_NNNN.png`, `training/flow/...flo`."""
    rng = _rng(seed)
    base = os.path.join(root, "Sintel")
    data: dict = {}
    for part in ("training", "test"):
        for scene, n in scenes:
            name = scene if part == "training" else f"{scene}_test"
            for dstype in ("clean", "final"):
                for k in range(1, n + 1):
                    img = _image(rng)
                    jio.write_image(_mk(os.path.join(base, part, dstype, name,
                                                     f"frame_{k:04d}.png")), img)
                    data[(part, dstype, name, k)] = img
            if part == "training":
                for k in range(1, n):
                    flow = _flow(rng)
                    jio.write_flo(_mk(os.path.join(base, part, "flow", name,
                                                   f"frame_{k:04d}.flo")), flow)
                    data[("flow", name, k)] = flow
    return data


def _sparse(rng, h=H, w=W) -> tuple[np.ndarray, np.ndarray]:
    flow = np.round(_flow(rng, h, w) * 64) / 64  # exactly representable in the PNG encoding
    valid = rng.random((h, w)) < 0.6
    return np.where(valid[..., None], flow, 0).astype(np.float32), valid


def write_kitti(root: str, n_train: int = 2, n_test: int = 1, seed: int = 3) -> list[dict]:
    """`KITTI/{training,testing}/image_2/N_{10,11}.png`, `training/flow_occ/N_10.png`."""
    rng = _rng(seed)
    base = os.path.join(root, "KITTI")
    out = []
    for part, n in (("training", n_train), ("testing", n_test)):
        for i in range(n):
            s = dict(image1=_image(rng), image2=_image(rng))
            jio.write_image(_mk(os.path.join(base, part, "image_2", f"{i:06d}_10.png")),
                            s["image1"])
            jio.write_image(os.path.join(base, part, "image_2", f"{i:06d}_11.png"), s["image2"])
            if part == "training":
                s["flow"], s["valid"] = _sparse(rng)
                jio.write_kitti_flow(_mk(os.path.join(base, part, "flow_occ", f"{i:06d}_10.png")),
                                     s["flow"], s["valid"])
                out.append(s)
    return out


def write_hd1k(root: str, sequences=(3, 2), seed: int = 4) -> dict:
    """`HD1K/hd1k_input/image_2/SSSSSS_FFFF.png`, `hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png`."""
    rng = _rng(seed)
    base = os.path.join(root, "HD1K")
    data = {}
    for seq, n in enumerate(sequences):
        for k in range(n):
            img = _image(rng)
            jio.write_image(_mk(os.path.join(base, "hd1k_input", "image_2",
                                             f"{seq:06d}_{k:04d}.png")), img)
            flow, valid = _sparse(rng)
            jio.write_kitti_flow(_mk(os.path.join(base, "hd1k_flow_gt", "flow_occ",
                                                  f"{seq:06d}_{k:04d}.png")), flow, valid)
            data[(seq, k)] = (img, flow, valid)
    return data


def write_tartanair(root: str, trajectories=(3, 2), seed: int = 5) -> dict:
    """`tartanair/<env>/Easy/<env>/<env>/Easy/P00N/{image_left/NNNNNN_left.png,
    flow/NNNNNN_MMMMMM_{flow,mask}.npy}` (tartanair_tools unzip layout); masks 0/1/10/100."""
    rng = _rng(seed)
    data = {}
    for t, n in enumerate(trajectories):
        env = "abandonedfactory" if t == 0 else "amusement"
        scene = os.path.join(root, "tartanair", env, "Easy", env, env, "Easy", f"P{t:03d}")
        for k in range(n):
            img = _image(rng)
            jio.write_image(_mk(os.path.join(scene, "image_left", f"{k:06d}_left.png")), img)
            data[(t, "image", k)] = img
        for k in range(n - 1):
            flow = _flow(rng)
            mask = rng.choice(np.array([0, 1, 10, 100], np.uint8), (H, W))
            np.save(_mk(os.path.join(scene, "flow", f"{k:06d}_{k + 1:06d}_flow.npy")), flow)
            np.save(os.path.join(scene, "flow", f"{k:06d}_{k + 1:06d}_mask.npy"), mask)
            data[(t, "flow", k)] = (flow, mask)
    return data


def write_spring(root: str, frames: int = 3, seed: int = 6) -> dict:
    """`spring/{train,test}/0001/frame_{left,right}/frame_<cam>_NNNN.png`, and for train
    `flow_{FW,BW}_<cam>/flow_<dir>_<cam>_NNNN.flo5` (HDF5 "flow", 2H x 2W x 2, some NaN)."""
    import h5py

    rng = _rng(seed)
    base = os.path.join(root, "spring")
    data = {}
    for part in ("train", "test"):
        for cam in ("left", "right"):
            for k in range(1, frames + 1):
                img = _image(rng)
                jio.write_image(_mk(os.path.join(base, part, "0001", f"frame_{cam}",
                                                 f"frame_{cam}_{k:04d}.png")), img)
                data[(part, cam, k)] = img
            if part == "test":
                continue
            for direction, ks in (("FW", range(1, frames)), ("BW", range(2, frames + 1))):
                for k in ks:
                    flow = _flow(rng, 2 * H, 2 * W)
                    flow[0, 0] = np.nan  # no ground truth there
                    path = _mk(os.path.join(base, part, "0001", f"flow_{direction}_{cam}",
                                            f"flow_{direction}_{cam}_{k:04d}.flo5"))
                    with h5py.File(path, "w") as f:  # as Spring's writeFlo5File
                        f.create_dataset("flow", data=flow, compression="gzip",
                                         compression_opts=5)
                    data[(direction, cam, k)] = flow
    return data


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Reference backward warp: `image` sampled bilinearly at `x + flow(x)` (float64)."""
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = [yy + flow[..., 1], xx + flow[..., 0]]
    return np.stack([map_coordinates(image[..., c].astype(np.float64), coords, order=1,
                                     mode="nearest") for c in range(image.shape[-1])], -1)
