"""jflow.io: round trips, OpenCV compatibility both ways, and every bad input."""
import os
import struct
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from jflow import io as jio
from jflow.io import FlowFileError


@pytest.fixture
def flow():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(7, 9, 2)) * 20).astype(np.float32)


# ----------------------------------------------------------------------------- .flo

def test_flo_round_trip_and_cv2_compat(tmp_path, flow):
    ours, theirs = tmp_path / "a.flo", tmp_path / "b.flo"
    jio.write_flo(ours, flow)
    assert cv2.writeOpticalFlow(str(theirs), flow)
    assert ours.read_bytes() == theirs.read_bytes()
    np.testing.assert_array_equal(jio.read_flo(ours), flow)
    np.testing.assert_array_equal(cv2.readOpticalFlow(str(ours)), flow)
    np.testing.assert_array_equal(jio.read_flo(theirs), flow)
    got, valid = jio.read_flow(ours)
    assert valid is None and got.dtype == np.float32
    jio.write_flo(ours, flow.astype(np.float64) + 1)  # overwrite, float64 accepted
    np.testing.assert_allclose(jio.read_flo(ours), flow + 1)


def test_flo_bad_inputs(tmp_path, flow):
    good = tmp_path / "good.flo"
    jio.write_flo(good, flow)
    data = good.read_bytes()
    cases = {
        "magic": b"XXXX" + data[4:],
        "truncated": data[:-5],
        "trailing": data + b"\0" * 8,
        "dimensions": b"PIEH" + struct.pack("<ii", 200_000, 2) + data[12:],
        "dimensions ": b"PIEH" + struct.pack("<ii", 30_000, 30_000) + data[12:],
        "negative": b"PIEH" + struct.pack("<ii", -3, 2) + data[12:],
        "header": b"PIE",
    }
    for what, blob in cases.items():
        p = tmp_path / f"bad_{len(blob)}.flo"
        p.write_bytes(blob)
        with pytest.raises(FlowFileError) as e:
            jio.read_flo(p)
        assert str(p) in str(e.value), what
    with pytest.raises(FlowFileError, match="absurd"):
        p = tmp_path / "huge.flo"
        p.write_bytes(cases["dimensions "])
        jio.read_flo(p)
    with pytest.raises(FlowFileError, match="no such file"):
        jio.read_flo(tmp_path / "missing.flo")
    with pytest.raises(FlowFileError, match="directory"):
        jio.read_flo(tmp_path)


# ----------------------------------------------------------------------------- writes

@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 5, 3), np.float32), "shape"),
    (np.zeros((4, 5), np.float32), "shape"),
    (np.zeros((4, 5, 2), np.int32), "dtype"),
])
def test_write_refuses_bad_arrays(tmp_path, bad, match):
    for name in ("x.flo", "x.png", "x.pfm"):
        with pytest.raises(FlowFileError, match=match):
            jio.write_flow(tmp_path / name, bad)
    assert os.listdir(tmp_path) == []


def test_write_nonfinite(tmp_path, flow):
    flow[1, 2, 0] = np.nan
    flow[3, 3, 1] = np.inf
    for name in ("x.flo", "x.png", "x.pfm"):
        with pytest.raises(FlowFileError, match="2 NaN/inf"):
            jio.write_flow(tmp_path / name, flow)
    assert os.listdir(tmp_path) == []
    jio.write_flo(tmp_path / "x.flo", flow, allow_nonfinite=True)
    back = jio.read_flo(tmp_path / "x.flo")
    assert np.isnan(back[1, 2, 0]) and np.isinf(back[3, 3, 1])
    jio.write_kitti_flow(tmp_path / "x.png", flow, allow_nonfinite=True)
    _, valid = jio.read_kitti_flow(tmp_path / "x.png")
    assert not valid[1, 2] and not valid[3, 3] and valid.sum() == valid.size - 2


def test_failed_write_leaves_nothing(tmp_path, flow):
    target = tmp_path / "occupied.flo"
    target.mkdir()  # os.replace onto a directory fails after the temp file was written
    with pytest.raises(FlowFileError, match="cannot write"):
        jio.write_flo(target, flow)
    assert os.listdir(tmp_path) == ["occupied.flo"] and os.listdir(target) == []
    with pytest.raises(FlowFileError, match="does not exist"):
        jio.write_flo(tmp_path / "nodir" / "x.flo", flow)
    with pytest.raises(FlowFileError, match="extension"):
        jio.write_flow(tmp_path / "x.txt", flow)
    assert os.listdir(tmp_path) == ["occupied.flo"]


# ----------------------------------------------------------------------------- .pfm

@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_round_trip(tmp_path, flow, little_endian):
    p = tmp_path / "f.pfm"
    jio.write_pfm(p, flow, little_endian=little_endian)
    three = jio.read_pfm(p)
    assert three.shape == (7, 9, 3) and np.all(three[..., 2] == 0)
    np.testing.assert_array_equal(three[..., :2], flow)
    got, valid = jio.read_flow(p)
    np.testing.assert_array_equal(got, flow)
    assert valid is None
    jio.write_pfm(p, flow[..., 0], little_endian=little_endian)
    np.testing.assert_array_equal(jio.read_pfm(p), flow[..., 0])
    with pytest.raises(FlowFileError, match="single-channel"):
        jio.read_flow(p)


def test_pfm_hand_made_file(tmp_path):
    # 2x3, rows stored bottom-up, big-endian (positive scale)
    top, bottom = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    p = tmp_path / "d.pfm"
    p.write_bytes(b"Pf\n3 2\n1.0\n" + np.array(bottom + top, ">f4").tobytes())
    np.testing.assert_array_equal(jio.read_pfm(p), [top, bottom])
    p.write_bytes(b"Pf\n3 2\n-1.0\n" + np.array(bottom + top, "<f4").tobytes())
    np.testing.assert_array_equal(jio.read_pfm(p), [top, bottom])


def test_pfm_bad_inputs(tmp_path):
    p = tmp_path / "bad.pfm"
    for blob, match in [(b"P6\n3 2\n255\n", "not a PFM"),
                        (b"PF\n3 2\n-1.0\n" + b"\0" * 20, "truncated"),
                        (b"PF\n300000 2\n-1.0\n", "absurd"),
                        (b"Pf\n3 2\nabc\n" + b"\0" * 24, "not a number")]:
        p.write_bytes(blob)
        with pytest.raises(FlowFileError, match=match):
            jio.read_pfm(p)


# ----------------------------------------------------------------------------- KITTI

def expected_kitti_rgb(flow, valid):
    enc = np.floor(np.clip(64.0 * flow.astype(np.float64) + 32768, 0, 65535))
    rgb = np.zeros(flow.shape[:2] + (3,), np.uint16)
    rgb[..., :2] = np.where(valid[..., None], enc, 0)
    rgb[..., 2] = valid
    return rgb


def test_kitti_round_trip_and_cv2(tmp_path):
    rng = np.random.default_rng(1)
    flow = (np.round(rng.normal(size=(6, 10, 2)) * 64 * 30) / 64).astype(np.float32)
    flow[0, 0] = [600.0, -600.0]  # clipped to the 16-bit range
    flow[0, 1] = [0.01, -0.01]  # truncated like the KITTI devkit
    valid = rng.uniform(size=(6, 10)) > 0.3
    p = tmp_path / "k.png"
    jio.write_kitti_flow(p, flow, valid)
    want_rgb = expected_kitti_rgb(flow, valid)
    bgr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.uint16
    np.testing.assert_array_equal(bgr[..., ::-1], want_rgb)
    got, got_valid = jio.read_kitti_flow(p)
    np.testing.assert_array_equal(got_valid, valid)
    want = np.where(valid[..., None], (want_rgb[..., :2].astype(np.float32) - 32768) / 64, 0)
    np.testing.assert_array_equal(got, want)
    if valid[0, 0]:
        np.testing.assert_allclose(got[0, 0], [(65535 - 32768) / 64, -512.0])
    inner = valid & (np.abs(flow).max(-1) < 500)
    inner[0, 1] = False
    np.testing.assert_array_equal(got[inner], flow[inner])
    # a file written by OpenCV reads back the same
    theirs = tmp_path / "cv.png"
    cv2.imwrite(str(theirs), want_rgb[..., ::-1].copy())
    got2, valid2 = jio.read_flow(theirs)
    np.testing.assert_array_equal(got2, got)
    np.testing.assert_array_equal(valid2, valid)


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4])
def test_png_codec_filters(tmp_path, filter_type):
    rng = np.random.default_rng(filter_type)
    rgb = rng.integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    rgb[2:4] = rgb[1]  # repeated rows and smooth bits make every filter matter
    rgb[:, 3] = 32768
    data = jio.encode_png16(rgb, filter_type)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., ::-1], rgb)
    np.testing.assert_array_equal(jio.decode_png("mem.png", data), rgb)


def test_pure_python_decoder_on_opencv_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    smooth = np.cumsum(rng.integers(0, 50, size=(16, 20, 3)), axis=1).astype(np.uint16) + 30000
    smooth[..., 2] = 1
    p = tmp_path / "cv.png"
    cv2.imwrite(str(p), smooth[..., ::-1].copy())  # libpng picks its own filters
    np.testing.assert_array_equal(jio.decode_png(p, p.read_bytes()), smooth)
    fast = jio.read_kitti_flow(p)
    monkeypatch.setitem(sys.modules, "cv2", None)  # the fallback when OpenCV is not installed
    slow = jio.read_kitti_flow(p)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def test_kitti_bad_inputs(tmp_path):
    p8 = tmp_path / "eight.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(p8)
    with pytest.raises(FlowFileError, match="16-bit RGB"):
        jio.read_kitti_flow(p8)
    good = tmp_path / "good.png"
    jio.write_kitti_flow(good, np.zeros((4, 5, 2), np.float32))
    data = good.read_bytes()
    bad = tmp_path / "bad.png"
    for blob, match in [(b"hello world", "not a PNG"), (data[:20], "truncated"),
                        (data[:40], "truncated|corrupt")]:
        bad.write_bytes(blob)
        with pytest.raises(FlowFileError, match=match):
            jio.read_kitti_flow(bad)
        with pytest.raises(FlowFileError, match=match):
            jio.decode_png(bad, blob)
    with pytest.raises(FlowFileError, match="valid must have shape"):
        jio.write_kitti_flow(good, np.zeros((4, 5, 2), np.float32), np.ones((5, 4)))


# ----------------------------------------------------------------------------- images

def test_image_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    for ext in (".png", ".ppm", ".bmp"):
        jio.write_image(tmp_path / f"a{ext}", rgb)
        np.testing.assert_array_equal(jio.read_image(tmp_path / f"a{ext}"), rgb)
    # OpenCV reads ours (BGR)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"))[..., ::-1], rgb)
    smooth = np.broadcast_to(np.linspace(0, 255, 8).astype(np.uint8)[None, :, None], (6, 8, 3))
    jio.write_image(tmp_path / "a.jpg", np.ascontiguousarray(smooth))
    got = jio.read_image(tmp_path / "a.jpg")
    assert got.shape == (6, 8, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - smooth).max() <= 8


def test_read_image_modes(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray).save(tmp_path / "g.png")
    got = jio.read_image(tmp_path / "g.png")
    assert got.shape == (4, 5, 3) and all(np.array_equal(got[..., c], gray) for c in range(3))
    rgba = np.dstack([np.full((4, 5, 3), 200, np.uint8), np.zeros((4, 5), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    # alpha dropped, not composited
    np.testing.assert_array_equal(jio.read_image(tmp_path / "a.png"), rgba[..., :3])
    cv2.imwrite(str(tmp_path / "sixteen.png"), np.zeros((4, 5, 3), np.uint16))
    with pytest.raises(FlowFileError, match="16-bit"):
        jio.read_image(tmp_path / "sixteen.png")
    Image.fromarray(np.zeros((4, 5), np.uint16)).save(tmp_path / "i16.tif")
    with pytest.raises(FlowFileError, match="16-bit"):
        jio.read_image(tmp_path / "i16.tif")


def test_image_bad_inputs(tmp_path):
    with pytest.raises(FlowFileError, match="no such file"):
        jio.read_image(tmp_path / "missing.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(FlowFileError, match="cannot decode"):
        jio.read_image(tmp_path / "junk.jpg")
    jio.write_image(tmp_path / "ok.png", np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(FlowFileError, match="cut.png"):
        jio.read_image(tmp_path / "cut.png")
    for arr, match in [(np.zeros((4, 5, 3), np.float32), "uint8"),
                       (np.zeros((4, 5, 4), np.uint8), "shape|\\(H, W"),
                       (np.zeros((4,), np.uint8), "\\(H, W")]:
        with pytest.raises(FlowFileError, match=match):
            jio.write_image(tmp_path / "w.png", arr)
    with pytest.raises(FlowFileError, match="extension"):
        jio.write_image(tmp_path / "w.gif", np.zeros((4, 5, 3), np.uint8))
    assert not (tmp_path / "w.png").exists()
