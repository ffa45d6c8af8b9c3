"""Flow and image files: Middlebury .flo, .pfm, KITTI 16-bit PNG flow, 8-bit images.

Readers check headers against the file size before allocating and raise ``FlowFileError`` (a
``ValueError``) naming the path and the problem. Writers validate first, then write to a temporary
file in the target directory and ``os.replace`` it, so a failed write leaves nothing behind.
Arrays: flow (H, W, 2) float32 (u, v); valid (H, W) bool; images (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import contextlib
import io as _io
import os
import re
import secrets
import struct
import zlib
from typing import Any, Optional, Union

import numpy as np
from PIL import Image

from jflow.errors import UserError

PathLike = Union[str, os.PathLike]
MAX_SIDE = 100_000
MAX_PIXELS = 2 ** 28
FLO_MAGIC = b"PIEH"  # float32 202021.25, little-endian
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> channels (palette not supported)


class FlowFileError(UserError):
    """A flow or image file (or an array to be written) is missing, malformed or unsupported."""


# --------------------------------------------------------------------------- helpers

def _fail(path: PathLike, problem: str) -> FlowFileError:
    return FlowFileError(f"{os.fspath(path)}: {problem}")


@contextlib.contextmanager
def _opened(path: PathLike):
    """Yield (binary file, size in bytes); FlowFileError for missing or unreadable files."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a file") from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    with f:
        yield f, os.fstat(f.fileno()).st_size


def _read_bytes(path: PathLike) -> bytes:
    with _opened(path) as (f, _):
        return f.read()


def _check_dims(path: PathLike, w: int, h: int) -> None:
    if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise _fail(path, f"absurd dimensions in header: width {w}, height {h}")


def _check_size(path: PathLike, actual: int, expected: int, exact: bool = True) -> None:
    if actual < expected:
        raise _fail(path, f"truncated: header needs {expected} bytes, file has {actual}")
    if exact and actual > expected:
        raise _fail(path, f"{actual - expected} unexpected trailing bytes after the data")


def _atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _fail(path, f"directory {directory} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise _fail(path, f"cannot write ({e.strerror or e})") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _as_flow(path: PathLike, flow: Any, allow_nonfinite: bool) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise _fail(path, f"flow to write must have shape (H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise _fail(path, f"flow to write must be a float array, got dtype {flow.dtype}")
    _check_dims(path, flow.shape[1], flow.shape[0])
    if not allow_nonfinite and not np.all(np.isfinite(flow)):
        raise _fail(path, f"flow has {np.count_nonzero(~np.isfinite(flow))} NaN/inf values "
                          "(pass allow_nonfinite=True to write them anyway)")
    return flow


# --------------------------------------------------------------------------- .flo

def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury .flo file -> (H, W, 2) float32."""
    with _opened(path) as (f, size):
        header = f.read(12)
        if len(header) < 12:
            raise _fail(path, f"truncated: {size} bytes, a .flo header needs 12")
        if header[:4] != FLO_MAGIC:
            raise _fail(path, f"not a .flo file (magic {header[:4]!r}, expected {FLO_MAGIC!r})")
        w, h = struct.unpack("<ii", header[4:12])
        _check_dims(path, w, h)
        _check_size(path, size, 12 + 8 * w * h)
        data = f.read()
    return np.frombuffer(data, "<f4").reshape(h, w, 2).astype(np.float32)


def write_flo(path: PathLike, flow: Any, *, allow_nonfinite: bool = False) -> None:
    """Write (H, W, 2) flow as .flo, byte-identical to ``cv2.writeOpticalFlow``."""
    flow = _as_flow(path, flow, allow_nonfinite)
    h, w, _ = flow.shape
    _atomic_write(path, FLO_MAGIC + struct.pack("<ii", w, h) + flow.astype("<f4").tobytes())


# --------------------------------------------------------------------------- .pfm

_PFM_HEADER = re.compile(rb"\A(P[Ff])\s+(\d+)\s+(\d+)\s+(\S+?)(?:\r\n|\s)")


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a .pfm file -> (H, W, 3) (``PF``) or (H, W) (``Pf``) float32, top row first."""
    with _opened(path) as (f, size):
        head = f.read(256)
        m = _PFM_HEADER.match(head)
        if m is None:
            raise _fail(path, "not a PFM file (expected 'PF' or 'Pf', width, height, scale)")
        kind, w, h, scale = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        _check_dims(path, w, h)
        try:
            scale = float(scale)
        except ValueError:
            raise _fail(path, f"PFM scale {scale!r} is not a number") from None
        if not np.isfinite(scale):
            raise _fail(path, f"PFM scale {scale} is not finite")
        channels = 3 if kind == b"PF" else 1
        _check_size(path, size, m.end() + 4 * channels * w * h, exact=False)
        f.seek(m.end())
        data = f.read(4 * channels * w * h)
    dtype = "<f4" if scale < 0 else ">f4"
    arr = np.frombuffer(data, dtype).reshape(h, w, channels)[::-1].astype(np.float32)
    return arr if channels == 3 else arr[..., 0]


def write_pfm(path: PathLike, array: Any, *, little_endian: bool = True) -> None:
    """Write (H, W), (H, W, 1), (H, W, 2) (zero third channel, like FlyingThings3D) or (H, W, 3)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:
        arr = np.concatenate([arr, np.zeros_like(arr[..., :1])], axis=-1)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise _fail(path, f"PFM array must be (H, W) or (H, W, 1|2|3), got {np.shape(array)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise _fail(path, f"PFM array must be float, got dtype {arr.dtype}")
    _check_dims(path, arr.shape[1], arr.shape[0])
    kind = "PF" if arr.ndim == 3 else "Pf"
    header = f"{kind}\n{arr.shape[1]} {arr.shape[0]}\n{-1.0 if little_endian else 1.0:f}\n"
    body = np.ascontiguousarray(arr[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
    _atomic_write(path, header.encode("ascii") + body)


# --------------------------------------------------------------------------- PNG codec

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def encode_png16(rgb: np.ndarray, filter_type: int = 2) -> bytes:
    """Encode (H, W, C) uint16 (C = 1, 3 or 4) as a 16-bit PNG with one filter for every row."""
    h, w, c = rgb.shape
    colour = {1: 0, 3: 2, 4: 6}[c]
    bpp = 2 * c
    raw = rgb.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    left = np.pad(raw, ((0, 0), (bpp, 0)))[:, :-bpp]
    up = np.pad(raw, ((1, 0), (0, 0)))[:-1]
    upleft = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
    predictor = {0: 0, 1: left, 2: up, 3: (left + up) // 2, 4: _paeth(left, up, upleft)}
    filtered = ((raw - predictor[filter_type]) % 256).astype(np.uint8)
    rows = np.concatenate([np.full((h, 1), filter_type, np.uint8), filtered], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def _png_header(path: PathLike, data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from the IHDR chunk."""
    if data[:8] != PNG_SIGNATURE:
        raise _fail(path, "not a PNG file (bad signature)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _fail(path, "truncated or malformed PNG header")
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    _check_dims(path, w, h)
    return w, h, depth, colour, interlace


def _unfilter_row(ftype: int, row: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    if ftype == 0:
        return row
    if ftype == 1:
        return np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if ftype == 2:
        return row + prev  # uint8 wraps mod 256
    out = bytearray(row.tobytes())
    up = prev.tobytes()
    for i in range(len(out)):
        a = out[i - bpp] if i >= bpp else 0
        b = up[i]
        if ftype == 3:
            out[i] = (out[i] + ((a + b) >> 1)) & 0xFF
        else:
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[i] = (out[i] + pred) & 0xFF
    return np.frombuffer(bytes(out), np.uint8)


def decode_png(path: PathLike, data: bytes) -> np.ndarray:
    """Pure-python PNG decoder (8/16-bit grey/RGB/RGBA, not interlaced) -> (H, W, C) array."""
    w, h, depth, colour, interlace = _png_header(path, data)
    if depth not in (8, 16) or colour not in _PNG_CHANNELS or interlace:
        raise _fail(path, f"unsupported PNG (bit depth {depth}, colour type {colour}, "
                          f"interlace {interlace})")
    channels = _PNG_CHANNELS[colour]
    bpp = channels * depth // 8
    stride = w * bpp
    expected = h * (stride + 1)
    idat, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            raise _fail(path, f"truncated PNG chunk {kind!r}")
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    try:
        dec = zlib.decompressobj()
        raw = dec.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise _fail(path, f"corrupt PNG image data ({e})") from None
    if len(raw) != expected:
        raise _fail(path, f"PNG image data has {len(raw)} bytes, expected {expected} (truncated?)")
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride + 1)
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        ftype = int(rows[y, 0])
        if ftype > 4:
            raise _fail(path, f"corrupt PNG: unknown filter {ftype} in row {y}")
        prev = out[y] = _unfilter_row(ftype, rows[y, 1:], prev, bpp)
    dtype = ">u2" if depth == 16 else np.uint8
    return out.view(dtype).reshape(h, w, channels).astype(np.uint16 if depth == 16 else np.uint8)


def _decode_png16_rgb(path: PathLike) -> np.ndarray:
    """(H, W, 3) uint16 RGB from a 16-bit RGB PNG; uses OpenCV when installed (fast)."""
    data = _read_bytes(path)
    w, h, depth, colour, _ = _png_header(path, data)
    if depth != 16 or colour != 2:
        raise _fail(path, f"not a KITTI flow PNG: expected 16-bit RGB, got bit depth {depth}, "
                          f"{_PNG_CHANNELS.get(colour, '?')} channel(s) (colour type {colour})")
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if bgr is None or bgr.shape != (h, w, 3) or bgr.dtype != np.uint16:
            raise _fail(path, "corrupt or truncated PNG")
        return bgr[..., ::-1]
    return decode_png(path, data)


# --------------------------------------------------------------------------- KITTI flow

def read_kitti_flow(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """KITTI 16-bit PNG -> flow (H, W, 2) float32 ``(uint16 - 2^15) / 64``, valid (H, W) bool.

    Flow at invalid pixels is set to 0.
    """
    rgb = _decode_png16_rgb(path)
    valid = rgb[..., 2] > 0
    flow = (rgb[..., :2].astype(np.float32) - 2.0 ** 15) / 64.0
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow(path: PathLike, flow: Any, valid: Optional[Any] = None, *,
                     allow_nonfinite: bool = False) -> None:
    """Write KITTI 16-bit PNG flow: ``clip(64*flow + 2^15, 0, 65535)`` truncated (devkit rule).

    ``valid`` defaults to all pixels; invalid pixels are written as (0, 0, 0). With
    ``allow_nonfinite`` NaN/inf pixels are written as invalid.
    """
    flow = _as_flow(path, flow, allow_nonfinite)
    if valid is None:
        valid = np.ones(flow.shape[:2], bool)
    valid = np.asarray(valid)
    if valid.shape != flow.shape[:2]:
        raise _fail(path, f"valid must have shape {flow.shape[:2]}, got {valid.shape}")
    valid = (valid > 0) & np.all(np.isfinite(flow), axis=-1)
    safe = np.where(valid[..., None], flow, 0).astype(np.float64)
    enc = np.clip(64.0 * safe + 2.0 ** 15, 0, 65535)
    rgb = np.zeros(flow.shape[:2] + (3,), np.uint16)
    rgb[..., :2] = np.where(valid[..., None], np.floor(enc), 0).astype(np.uint16)
    rgb[..., 2] = valid
    _atomic_write(path, encode_png16(rgb))


# --------------------------------------------------------------------------- dispatch

def read_flow(path: PathLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read .flo, .pfm or KITTI .png flow -> (flow (H, W, 2) float32, valid (H, W) bool or None).

    ``valid`` is None for dense formats (.flo, .pfm); a 3-channel PFM keeps its first 2 channels.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".flo":
        return read_flo(path), None
    if ext == ".pfm":
        arr = read_pfm(path)
        if arr.ndim != 3:
            raise _fail(path, "single-channel PFM (disparity?) is not a flow field")
        return np.ascontiguousarray(arr[..., :2]), None
    if ext == ".png":
        return read_kitti_flow(path)
    raise _fail(path, f"unknown flow file extension {ext!r} (expected .flo, .pfm or .png)")


def write_flow(path: PathLike, flow: Any, valid: Optional[Any] = None, *,
               allow_nonfinite: bool = False) -> None:
    """Write flow by extension: .flo, .png (KITTI, uses ``valid``) or .pfm."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".flo":
        write_flo(path, flow, allow_nonfinite=allow_nonfinite)
    elif ext == ".png":
        write_kitti_flow(path, flow, valid, allow_nonfinite=allow_nonfinite)
    elif ext == ".pfm":
        _as_flow(path, flow, allow_nonfinite)
        write_pfm(path, flow)
    else:
        raise _fail(path, f"unknown flow file extension {ext!r} (expected .flo, .pfm or .png)")


# --------------------------------------------------------------------------- images

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".ppm": "PPM", ".bmp": "BMP"}


def read_image(path: PathLike) -> np.ndarray:
    """Read an 8-bit PNG/JPEG/PPM image -> (H, W, 3) uint8 RGB.

    Grayscale is tiled to 3 channels; an alpha channel is dropped (not composited); 16-bit and
    floating-point images are refused.
    """
    data = _read_bytes(path)
    if data[:8] == PNG_SIGNATURE:
        depth = _png_header(path, data)[2]
        if depth == 16:
            raise _fail(path, "16-bit PNG: read_image reads 8-bit images "
                              "(KITTI flow: use read_kitti_flow)")
    try:
        im = Image.open(_io.BytesIO(data))
        _check_dims(path, *im.size)
        if im.mode.startswith("I") or im.mode == "F":
            raise _fail(path, f"{im.mode} image (16-bit or float): read_image reads 8-bit images")
        im.load()
    except FlowFileError:
        raise
    except Exception as e:  # PIL raises many types for corrupt/truncated/unknown files
        raise _fail(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    if im.mode in ("1", "L", "LA", "La"):
        im = im.convert("L")  # alpha dropped
    elif im.mode != "RGB":
        im = im.convert("RGB")  # RGBA/P/CMYK/...: alpha dropped, not composited
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)


def write_image(path: PathLike, array: Any) -> None:
    """Write (H, W, 3) or (H, W) uint8 as PNG, JPEG (quality 95), PPM or BMP by extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _IMAGE_FORMATS:
        raise _fail(path, f"unknown image extension {ext!r} (expected one of "
                          f"{sorted(_IMAGE_FORMATS)})")
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise _fail(path, f"image to write must be uint8, got dtype {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3))):
        raise _fail(path, f"image to write must be (H, W, 3) or (H, W), got {arr.shape}")
    _check_dims(path, arr.shape[1], arr.shape[0])
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = _io.BytesIO()
    fmt = _IMAGE_FORMATS[ext]
    Image.fromarray(np.ascontiguousarray(arr)).save(
        buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    _atomic_write(path, buf.getvalue())
