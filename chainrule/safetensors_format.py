"""The safetensors file format, read and written with NumPy, json and struct alone.

Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header, then the data buffer:
    {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}}
Offsets count from the buffer's start; the tensors tile the buffer exactly (no gaps, no overlap, no
trailing bytes). The reader checks every declared size against the bytes actually present before it
allocates anything (from a file: the header is read and checked against the file's size before the
data), bounds the header's JSON (values, nesting, tensors), and every defect raises ModelFileError
naming the file, in one short printable line. Nothing here unpickles,
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
# Parsing JSON costs far more memory than its text (a 70 MB header of 1.2 M empty tensors took
# 1.4 GB), so the values are counted before parsing: 2 M values stay within a few hundred MB.
MAX_JSON_VALUES = 2_000_000
# Deep enough for the 32 nested Sequentials the architecture allows (two levels each), shallow
# enough that json.dumps (the checksum) and every other recursive walk stay far from the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 100
MAX_TENSORS = 100_000
# No NumPy array holds more bytes than this (np.intp); a shape beyond it is refused by name.
_MAX_ARRAY_BYTES = 2**62

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
    The defect is one line of printable text, at most MAX_DEFECT characters: whatever a hostile
    file echoes into it cannot flood or drive the terminal that shows it.
    """

    MAX_DEFECT = 1000

    def __init__(self, path: str, defect: str) -> None:
        defect = printable(str(defect))
        if len(defect) > self.MAX_DEFECT:
            defect = defect[: self.MAX_DEFECT] + f"... ({len(defect)} characters)"
        super().__init__(f"{path}: {defect}")
        self.path = path
        self.defect = defect

    def __reduce__(self):  # pickled across processes with both arguments, not just the message
        return type(self), (self.path, self.defect)


def printable(text: str) -> str:
    """`text` with every character a terminal might act on (ESC, other controls, bidi overrides,
    line breaks) written as its Python escape, as repr() would: safe to print from a hostile file.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: Any, limit: int = 80) -> str:
    """A short printable rendering of a value read from a file, for error messages.

    Long lists show their first items and their length; integers too long for str() (Python
    refuses more than 4300 digits) show their size; everything is cut to `limit` characters.
    """
    if isinstance(value, list) and len(value) > 8:
        text = repr(value[:8])[:-1] + f", ... ({len(value)} items)]"
    elif isinstance(value, int) and value.bit_length() > 256:
        text = f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    else:
        try:
            text = repr(value)
        except ValueError:  # a nested integer past the digit limit
            text = f"<a {type(value).__name__} too large to show>"
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _count_values(text: str | bytes) -> int:
    """An upper bound on the number of JSON values in `text`, found without parsing: every value
    but the first follows a ',', ':' or '[' (those inside strings only raise the bound)."""
    if isinstance(text, str):
        return 1 + text.count(",") + text.count(":") + text.count("[")
    return 1 + text.count(b",") + text.count(b":") + text.count(b"[")


def _check_value_count(text: str | bytes, path: str, what: str) -> None:
    values = _count_values(text)
    if values > MAX_JSON_VALUES:
        raise ModelFileError(
            path,
            f"{what} holds up to {values} JSON values, more than the {MAX_JSON_VALUES} "
            "a model file may hold",
        )


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is depth 0), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            stack.extend(
                (child, level + 1) for child in children if isinstance(child, (dict, list))
            )
    return depth


def parse_json(text: str | bytes, path: str, what: str) -> Any:
    """Strict JSON: duplicate keys, NaN/Infinity, absurd nesting or size and huge numbers are
    defects. Nesting is limited to MAX_JSON_DEPTH, so no later recursive walk (json.dumps in the
    checksum, printing) can exhaust the stack."""
    _check_value_count(text, path, what)
    value = _parse_json(text, path, what)
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ModelFileError(path, f"{what} is nested too deeply (more than {MAX_JSON_DEPTH})")
    return value


def _parse_json(text: str | bytes, path: str, what: str) -> Any:
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
        raise fail(f"unknown or unsupported dtype {shown(code)} (supported: {', '.join(DTYPES)})")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMENSIONS
        or not all(_is_int(n) and n >= 0 for n in shape)
    ):
        raise fail(
            f"shape {shown(shape)} is not a list of at most {MAX_DIMENSIONS} non-negative integers"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(n) for n in offsets):
        raise fail(f"data_offsets {shown(offsets)} is not a pair of integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise fail(f"data_offsets {shown(offsets)} are not 0 <= begin <= end")
    if end > buffer_size:
        raise fail(
            f"data_offsets {shown(offsets)} reach past the end of the "
            f"{buffer_size}-byte data buffer"
        )
    dtype = DTYPES[code]
    # Zero-length dimensions make any shape fit 0 bytes; NumPy still refuses one whose other
    # dimensions multiply past its index range ("array is too big"), so that is checked here.
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > _MAX_ARRAY_BYTES:
        raise fail(f"shape {shown(shape)} is larger than any array can be")
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


def _check_header_size(header_size: int, size: int, path: str) -> None:
    if header_size > max(size - 8, MAX_HEADER_BYTES):  # e.g. the first 8 bytes of a CSV
        raise ModelFileError(
            path,
            f"not a model file: its first 8 bytes give a header length of {header_size}, more "
            f"than the whole file ({size} bytes); a safetensors file starts with its length",
        )
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


_Entries = dict[str, tuple[np.dtype, tuple[int, ...], int, int]]


def _parse_header(raw: bytes, buffer_size: int, path: str) -> tuple[_Entries, dict[str, str]]:
    """Every check of the header against the buffer's size: nothing of the buffer is read yet."""
    _check_value_count(raw, path, "header")  # before decoding: no copy of a hostile header
    try:
        text = raw.decode("utf-8")
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
    if len(header) > MAX_TENSORS:
        raise ModelFileError(
            path, f"header declares {len(header)} tensors, more than the limit of {MAX_TENSORS}"
        )
    entries = {name: _check_entry(name, entry, buffer_size, path) for name, entry in header.items()}
    _check_tiling([(b, e, name) for name, (_, _, b, e) in entries.items()], buffer_size, path)
    return entries, dict(metadata)


def _arrays(buffer: memoryview, entries: _Entries, path: str) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, shape, begin, end) in entries.items():
        count = (end - begin) // dtype.itemsize
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=begin).reshape(shape)
        if dtype.kind == "b" and array.view(np.uint8).max(initial=0) > 1:
            raise ModelFileError(path, f"tensor {shown(name)}: BOOL bytes must be 0 or 1")
        tensors[name] = array.astype(dtype.newbyteorder("="), copy=True)
    return tensors


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
    _check_header_size(header_size, size, path)
    buffer_start = 8 + header_size
    entries, metadata = _parse_header(bytes(data[8:buffer_start]), size - buffer_start, path)
    return _arrays(data[buffer_start:], entries, path), metadata


def _open_regular(name: str) -> IO[bytes]:
    """The file opened for reading, if it is a regular file (a FIFO or device could block or
    never end); a missing file, dangling link or unreadable file becomes a ModelFileError."""
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):
            kind = "a directory, not a regular file" if os.path.isdir(name) else ""
            raise ModelFileError(name, kind or "not a regular file")
        return open(name, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as error:
        if os.path.islink(name) and not os.path.exists(name):
            defect = f"a symbolic link to {shown(os.readlink(name))}, which does not exist"
        else:
            defect = f"cannot be read ({error.strerror or error})"
        raise ModelFileError(name, defect) from None


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file, read once; only regular files (a FIFO or device could block forever)."""
    name = str(os.fspath(path))
    with _open_regular(name) as file:
        return file.read()


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) from a safetensors file, validated before anything is allocated.

    The header is read and checked against the file's size first, so a huge file with a small
    valid header (or a header that declares more than the file holds) is refused having read
    only its header: memory stays proportional to what the header validly declares.
    """
    name = str(os.fspath(path))
    try:
        with _open_regular(name) as file:
            size = os.fstat(file.fileno()).st_size
            if size < 8:
                raise ModelFileError(
                    name, f"file is {size} bytes, too short for the 8-byte header length"
                )
            (header_size,) = struct.unpack("<Q", _read_exactly(file, 8, name))
            _check_header_size(header_size, size, name)
            raw = _read_exactly(file, header_size, name)
            buffer_size = size - 8 - header_size
            entries, metadata = _parse_header(raw, buffer_size, name)
            buffer = bytearray(buffer_size)
            if file.readinto(buffer) != buffer_size:
                raise ModelFileError(name, "the file shrank while it was being read")
    except OSError as error:  # e.g. EIO, or EISDIR raced in after the check
        raise ModelFileError(name, f"cannot be read ({error.strerror or error})") from None
    return _arrays(memoryview(buffer), entries, name), metadata


def _read_exactly(file: IO[bytes], count: int, name: str) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise ModelFileError(name, "the file shrank while it was being read")
    return data
