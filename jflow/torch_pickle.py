"""Read and write PyTorch ``.pth`` state dicts without torch and without running pickled code.

A PyTorch >= 1.6 checkpoint is a zip archive ``<name>/data.pkl`` + ``<name>/data/<key>`` (raw
little-endian storages); older ones are a sequence of pickles followed by the raw storages (the
"legacy" format). The pickle only needs a handful of globals (``collections.OrderedDict``, the
tensor rebuild functions and the storage type names); :class:`RestrictedUnpickler` allows exactly
those and refuses everything else with a :class:`ValueError` naming the file and the global, so a
crafted checkpoint cannot execute code (``os.system``, ``builtins.eval``, ...).

:func:`save_torch_state_dict` writes the zip format for ``dict[str, np.ndarray]``, loadable by
``torch.load(weights_only=True)``; tests use it to build checkpoints in the official key layout.
"""
from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, Mapping

import ml_dtypes
import numpy as np

from jflow.errors import UserError

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_DTYPE_STORAGES = {dtype: name for name, dtype in _STORAGE_DTYPES.items()}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointFileError(UserError):
    """A ``.pth`` file that cannot be read as a checkpoint; the message names the file."""


class _StorageType:
    """Stands in for ``torch.<X>Storage`` inside the pickle: only carries the numpy dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> np.ndarray:
    """numpy version of ``torch._utils._rebuild_tensor_v2``: a strided view of the storage (callers
    copy it once the storages are filled)."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, np.ndarray):
        raise CheckpointFileError("tensor storage must be a persistent storage, got "
                         f"{type(storage).__name__}")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise CheckpointFileError(f"tensor size {size} and stride {stride} differ in length")
    if any(s < 0 for s in size + stride) or storage_offset < 0:
        raise CheckpointFileError(f"negative tensor size/stride/offset {size} {stride} "
                                  f"{storage_offset}")
    if size and all(s > 0 for s in size):
        # Only non-overlapping layouts: no stride 0 (expanded) or overlapping strides, so a tensor
        # never has more elements than its storage and copying it allocates no more than the
        # file holds.
        reach = 0
        for n, st in sorted(((n, st) for n, st in zip(size, stride) if n > 1),
                            key=lambda t: t[1]):
            if st <= reach:
                raise CheckpointFileError(f"tensor of size {size} has overlapping or zero strides "
                                          f"{stride}: refused")
            reach += (n - 1) * st
        if storage_offset + reach >= storage.size:
            raise CheckpointFileError(f"tensor of size {size} stride {stride} runs past its "
                                      f"storage ({storage.size} elements)")
    base = storage[storage_offset:]
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(base, size, tuple(s * item for s in stride),
                                           writeable=False)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    return data


def _fresh(fn: Callable) -> Callable[[], Callable]:
    # A new wrapper per reference, so that a pickle BUILD on it cannot alter shared state.
    return lambda: (lambda *args, **kwargs: fn(*args, **kwargs))


# (module, name) -> factory of the object the pickle gets for that global.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _fresh(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor"): _fresh(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _fresh(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _fresh(_rebuild_parameter),
    **{("torch", name): (lambda n=name: _StorageType(n)) for name in _STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a state_dict needs; ``load_storage`` maps a
    persistent storage id ``(key, dtype, numel)`` to a 1-D numpy array."""

    def __init__(self, file: BinaryIO, *, source: str,
                 load_storage: Callable[[str, np.dtype, int], np.ndarray] | None = None):
        super().__init__(file)
        self._source = source
        self._load_storage = load_storage
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]()
        except KeyError:
            raise CheckpointFileError(
                f"{self._source}: refusing to load the global '{module}.{name}': a state_dict "
                "never needs it (the checkpoint may be malicious, or it is not a plain "
                "state_dict of tensors)") from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or self._load_storage is None):
            raise CheckpointFileError(f"{self._source}: unsupported persistent id {pid!r:.200}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy format: (view_key, offset, size) into the root storage
            _, offset, size = view
            return self._storages[key][int(offset): int(offset) + int(size)]
        return self._storages[key]


def _read_zip(path: str, zf: zipfile.ZipFile) -> Any:
    pkl_names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl_names) != 1:
        raise CheckpointFileError(f"{path}: not a PyTorch zip checkpoint (expected one '<name>/data.pkl', "
                         f"found {pkl_names or 'none'})")
    prefix = pkl_names[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in zf.namelist():
        byteorder = zf.read(prefix + "byteorder").decode().strip()

    archive_bytes = os.path.getsize(path)

    def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{prefix}data/{key}"
        try:
            info = zf.getinfo(name)
        except KeyError:
            raise CheckpointFileError(f"{path}: storage '{name}' is missing from the "
                                      "archive") from None
        nbytes = int(numel) * dtype.itemsize
        # Checked before anything is allocated: the entry must hold the declared bytes, and an
        # entry cannot hold more than the archive (stored) or than deflate can expand to.
        limit = (archive_bytes if info.compress_type == zipfile.ZIP_STORED
                 else 1032 * info.compress_size)
        if numel < 0 or nbytes > info.file_size or info.file_size > limit:
            raise CheckpointFileError(f"{path}: storage '{name}' declares {nbytes} bytes but the "
                                      f"archive entry holds {info.file_size} (archive "
                                      f"{archive_bytes} bytes): damaged or forged")
        with zf.open(info) as fh:
            raw = fh.read(nbytes)
        if len(raw) < nbytes:
            raise CheckpointFileError(f"{path}: storage '{name}' holds {len(raw)} bytes, "
                                      f"expected {nbytes}")
        order = "<" if byteorder == "little" else ">"
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype,
                            count=numel)
        return arr.astype(dtype, copy=True)

    with zf.open(pkl_names[0]) as f:
        return RestrictedUnpickler(f, source=path, load_storage=load_storage).load()


def _read_legacy(path: str, f: BinaryIO) -> Any:
    def plain() -> Any:
        return RestrictedUnpickler(f, source=path).load()

    try:
        magic = plain()
    except CheckpointFileError:
        raise
    except Exception as e:  # noqa: BLE001 - anything unparsable is "not a checkpoint"
        raise CheckpointFileError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if magic != _LEGACY_MAGIC:
        raise CheckpointFileError(f"{path}: not a PyTorch checkpoint (bad magic number {magic!r:.50})")
    plain()  # protocol version
    plain()  # sys info
    storages: dict[str, np.ndarray] = {}
    file_bytes = os.fstat(f.fileno()).st_size
    declared = [0]

    def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        # The storages follow the pickle in the file: together they cannot exceed its size.
        declared[0] += int(numel) * dtype.itemsize
        if numel < 0 or declared[0] > file_bytes:
            raise CheckpointFileError(f"{path}: the tensors declare {declared[0]} bytes but the "
                                      f"file has {file_bytes}: damaged or forged")
        storages[key] = np.zeros(numel, dtype)  # filled in place below, after the key list
        return storages[key]

    result = RestrictedUnpickler(f, source=path, load_storage=load_storage).load()
    for key in plain():
        if str(key) not in storages:
            raise CheckpointFileError(f"{path}: storage {key} is listed but never used")
        storage = storages[str(key)]
        header = f.read(8)
        count = struct.unpack("<q", header)[0] if len(header) == 8 else -1
        raw = f.read(storage.nbytes)
        if count != storage.size or len(raw) != storage.nbytes:
            raise CheckpointFileError(f"{path}: storage {key} is truncated or has the wrong size")
        storage[:] = np.frombuffer(raw, storage.dtype)
    return result


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``.pth`` file into ``{key: np.ndarray}`` without torch and without running code.

    Accepts a bare state_dict or a dict holding one under ``state_dict`` / ``model``. Raises
    :class:`CheckpointFileError` (a ``ValueError`` naming ``path``) for anything else, including any pickled global that is not
    needed for tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{path}: checkpoint file not found")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                obj = _read_zip(path, zf)
        else:
            with open(path, "rb") as f:
                obj = _read_legacy(path, f)
    except CheckpointFileError as e:
        if str(e).startswith(path):
            raise
        raise CheckpointFileError(f"{path}: {e}") from None  # name the file
    except (zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, ValueError,
            TypeError, KeyError, IndexError, AttributeError, zlib.error) as e:
        # A damaged archive or pickle: say which file and what broke, no traceback.
        raise CheckpointFileError(f"{path}: damaged or truncated checkpoint "
                                  f"({type(e).__name__}: {e})") from None
    return _as_state_dict(path, obj)


def _as_state_dict(path: str, obj: Any) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointFileError(f"{path}: expected a state_dict (a dict of tensors), got "
                         f"{type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointFileError(f"{path}: entry '{key}' is a {type(value).__name__}, not a tensor")
        out[str(key)] = np.array(value, copy=True)  # detach from the storage buffers
    return out


# ----------------------------------------------------------------------------------------- writer

def _op_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _op_int(i: int) -> bytes:
    if 0 <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    b = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def _op_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def save_torch_state_dict(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes ``{key: array}`` as a PyTorch zip checkpoint, as ``torch.save(state_dict)`` does.

    Values may also be nested dicts, ``str``, ``int``, ``float``, ``bool`` or None, so that a
    Lightning-style checkpoint (``{'epoch': 3, 'state_dict': {...}, ...}``) can be written."""
    path = os.fspath(path)
    prefix = os.path.splitext(os.path.basename(path))[0] or "archive"
    ordered_dict = b"ccollections\nOrderedDict\n"
    blobs: dict[str, bytes] = {}

    def tensor(key: str, value: Any) -> bytes:
        arr = np.array(value, order="C", copy=True)  # (ascontiguousarray makes 0-d 1-d)
        if arr.dtype not in _DTYPE_STORAGES:
            raise CheckpointFileError(f"{path}: entry '{key}' has unsupported dtype {arr.dtype}")
        i = len(blobs)
        storage = _DTYPE_STORAGES[arr.dtype]
        strides = [s // arr.itemsize for s in arr.strides] if arr.size else [1] * arr.ndim
        pid = _op_tuple([_op_str("storage"), f"ctorch\n{storage}\n".encode(), _op_str(str(i)),
                         _op_str("cpu"), _op_int(arr.size)]) + b"Q"
        args = _op_tuple([pid, _op_int(0), _op_tuple([_op_int(s) for s in arr.shape]),
                          _op_tuple([_op_int(s) for s in strides]), b"\x89",
                          ordered_dict + b")R"])
        blobs[str(i)] = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"

    def value_op(key: str, value: Any) -> bytes:
        if isinstance(value, Mapping):
            return b"}(" + b"".join(_op_str(str(k)) + value_op(str(k), v)
                                    for k, v in value.items()) + b"u"
        if value is None:
            return b"N"
        if isinstance(value, bool):
            return b"\x88" if value else b"\x89"
        if isinstance(value, int):
            return _op_int(value)
        if isinstance(value, float):
            return b"G" + struct.pack(">d", value)
        if isinstance(value, str):
            return _op_str(value)
        return tensor(key, value)

    pkl = [b"\x80\x02", ordered_dict, b")R", b"("]
    for key, value in state.items():
        pkl += [_op_str(key), value_op(key, value)]
    pkl += [b"u."]
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", b"".join(pkl))
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, blob in blobs.items():
            zf.writestr(f"{prefix}/data/{key}", blob)
        zf.writestr(f"{prefix}/version", "3\n")
    os.replace(tmp, path)
