"""The safetensors file format, read and written with NumPy, json and struct alone.

Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header, then the data buffer:
    {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}}
Offsets count from the buffer's start; the tensors tile the buffer exactly (no gaps, no overlap, no
trailing bytes). The reader checks every declared size against the bytes actually present before it
allocates anything, and every defect raises ModelFileError naming the file. Nothing here unpickles,
evaluates or imports: a file is only ever numbers and strings. Model architecture lives in io.py.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from chainrule.atomic import atomic_write

# safetensors' own cap (MAX_HEADER_SIZE in the Rust crate): a header is names and shapes only.
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_DIMENSIONS = 64

# Little-endian NumPy dtypes for the safetensors codes we read and write. BF16 and the F8 types are
# valid safetensors but have no NumPy dtype, so they are refused by name.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class ModelFileError(ValueError):
    """A model or tensor file that is malformed, corrupt, truncated or from an unknown format.

    The message starts with the file's path and names the defect; `path` and `defect` hold both.
    """

    def __init__(self, path: str, defect: str) -> None:
        super().__init__(f"{path}: {defect}")
        self.path = path
        self.defect = defect

    def __reduce__(self):  # pickled across processes with both arguments, not just the message
        return type(self), (self.path, self.defect)


def dtype_code(dtype: Any) -> str:
    """The safetensors code ('F32', 'F64', ...) of a NumPy dtype; TypeError if there is none."""
    dtype = np.dtype(dtype)
    code = _CODES.get(dtype.newbyteorder("=")) if dtype.kind in "biuf" else None
    if code is None:
        supported = ", ".join(str(d.newbyteorder("=")) for d in DTYPES.values())
        raise TypeError(f"safetensors cannot store dtype {dtype}; supported: {supported}")
    return code


# ---- writing ------------------------------------------------------------------------------------
def _header_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"safetensors metadata maps str to str, got {key!r}: {type(value).__name__}"
                )
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(
                f"tensor names must be non-empty strings other than __metadata__, got {name!r}"
            )
        if not isinstance(array, np.ndarray):
            raise TypeError(f"tensor {name!r} is a {type(array).__name__}, not a numpy ndarray")
        code = dtype_code(array.dtype)
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad with spaces (JSON whitespace) so the buffer starts 8-byte aligned, as safetensors does.
    return text + b" " * (-len(text) % 8)


def write(
    file: IO[bytes], tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Stream `tensors` (in their order) and `metadata` to a binary file object as safetensors."""
    header = _header_bytes(tensors, metadata)
    file.write(struct.pack("<Q", len(header)))
    file.write(header)
    for array in tensors.values():
        little = np.ascontiguousarray(array, dtype=DTYPES[dtype_code(array.dtype)])
        file.write(little.reshape(-1).view(np.uint8).data)


def serialize(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The safetensors bytes for `tensors` and `metadata`."""
    import io

    buffer = io.BytesIO()
    write(buffer, tensors, metadata)
    return buffer.getvalue()


def save_file(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically: a crash mid-save leaves the previous file intact."""
    _header_bytes(tensors, metadata)  # validate before touching the disk
    atomic_write(path, lambda file: write(file, tensors, metadata))


# ---- reading ------------------------------------------------------------------------------------
class _DuplicateKey(Exception):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # json reads 1e999 as inf
        raise ValueError(f"{text[:40]} overflows to infinity")
    return value


def parse_json(text: str | bytes, path: str, what: str) -> Any:
    """Strict JSON: duplicate keys, NaN/Infinity, absurd nesting and huge numbers are defects."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _DuplicateKey as duplicate:
        raise ModelFileError(path, f"{what} names {duplicate.args[0]!r} twice") from None
    except RecursionError:
        raise ModelFileError(path, f"{what} is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and int() refusing thousands of digits
        raise ModelFileError(path, f"{what} is not valid JSON ({error})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(
    name: str, entry: Any, buffer_size: int, path: str
) -> tuple[np.dtype, tuple[int, ...], int, int]:
    def fail(defect: str) -> ModelFileError:
        return ModelFileError(path, f"tensor {name!r}: {defect}")

    if not name:
        raise ModelFileError(path, "a tensor has an empty name")
    if not isinstance(entry, dict):
        raise fail(f"header entry is a {type(entry).__name__}, not an object")
    if set(entry) != _ENTRY_KEYS:
        raise fail(f"header entry has keys {sorted(entry)}, expected {sorted(_ENTRY_KEYS)}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in DTYPES:
        raise fail(f"unknown or unsupported dtype {code!r} (supported: {', '.join(DTYPES)})")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMENSIONS
        or not all(_is_int(n) and n >= 0 for n in shape)
    ):
        raise fail(
            f"shape {shape!r} is not a list of at most {MAX_DIMENSIONS} non-negative integers"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(n) for n in offsets):
        raise fail(f"data_offsets {offsets!r} is not a pair of integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise fail(f"data_offsets [{begin}, {end}] are not 0 <= begin <= end")
    if end > buffer_size:
        raise fail(
            f"data_offsets [{begin}, {end}] reach past the end of the "
            f"{buffer_size}-byte data buffer"
        )
    dtype = DTYPES[code]
    needed = math.prod(shape) * dtype.itemsize
    if end - begin != needed:
        raise fail(
            f"shape {shape} of {code} needs {needed} bytes but data_offsets "
            f"[{begin}, {end}] span {end - begin}"
        )
    return dtype, tuple(shape), begin, end


def _check_tiling(spans: list[tuple[int, int, str]], buffer_size: int, path: str) -> None:
    """The tensors must cover the buffer exactly: hidden bytes could carry anything."""
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise ModelFileError(
                path, f"tensors {previous!r} and {name!r} overlap (bytes {begin}..{position})"
            )
        if begin > position:
            raise ModelFileError(
                path, f"bytes {position}..{begin} of the data buffer belong to no tensor"
            )
        position, previous = end, name
    if position != buffer_size:
        raise ModelFileError(
            path,
            f"{buffer_size - position} trailing bytes after the last tensor belong to no tensor",
        )


def deserialize(
    data: bytes | bytearray | memoryview, path: str = "<bytes>"
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) from safetensors bytes; tensors in file order, each an owned array.

    `path` only names the source in error messages.
    """
    data = memoryview(data).cast("B")
    size = len(data)
    if size < 8:
        raise ModelFileError(path, f"file is {size} bytes, too short for the 8-byte header length")
    (header_size,) = struct.unpack_from("<Q", data, 0)
    if header_size > MAX_HEADER_BYTES:
        raise ModelFileError(
            path, f"header length {header_size} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )
    if header_size > size - 8:
        raise ModelFileError(
            path,
            f"header length {header_size} exceeds the {size - 8} bytes that follow it "
            "(truncated, or not a safetensors file)",
        )
    try:
        text = bytes(data[8 : 8 + header_size]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ModelFileError(
            path, f"header is not UTF-8 ({error.reason} at byte {8 + error.start})"
        ) from None
    header = parse_json(text, path, "header")
    if not isinstance(header, dict):
        raise ModelFileError(path, f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(path, "__metadata__ must map strings to strings")
    buffer_start = 8 + header_size
    buffer_size = size - buffer_start
    entries = {name: _check_entry(name, entry, buffer_size, path) for name, entry in header.items()}
    _check_tiling([(b, e, name) for name, (_, _, b, e) in entries.items()], buffer_size, path)
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, shape, begin, end) in entries.items():
        count = (end - begin) // dtype.itemsize
        array = np.frombuffer(data, dtype=dtype, count=count, offset=buffer_start + begin).reshape(
            shape
        )
        if dtype.kind == "b" and array.view(np.uint8).max(initial=0) > 1:
            raise ModelFileError(path, f"tensor {name!r}: BOOL bytes must be 0 or 1")
        tensors[name] = array.astype(dtype.newbyteorder("="), copy=True)
    return tensors, dict(metadata)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file, read once; only regular files (a FIFO or device could block forever)."""
    name = os.fspath(path)
    if not stat.S_ISREG(os.stat(name).st_mode):
        raise ModelFileError(str(name), "not a regular file")
    with open(name, "rb") as file:
        return file.read()


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) from a safetensors file, validated before anything is allocated."""
    return deserialize(read_bytes(path), os.fspath(path))
