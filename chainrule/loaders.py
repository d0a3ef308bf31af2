"""Data from files: CSV (header optional, label column by index or name), NPZ (never pickled) and
MNIST's IDX format (raw or gzip), each checked for NaN/Inf and with errors that name the file, the
line and the column. Built-in datasets and the registry are in `chainrule.datasets`.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainrule.validation import float_dtype

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class LoadedData:
    """A data set and what a model needs to know about it; unpacks as `X, y = data`.

    `classes[i]` is the original label of class index i when labels were text or negative
    integers (e.g. ('setosa', 'versicolor', 'virginica')); None when y holds the labels as given.
    """

    X: np.ndarray  # (samples, features)
    y: np.ndarray  # (samples,) int64 class indices, or (samples, targets) floats for regression
    task: str  # 'classification' or 'regression'
    n_classes: int | None  # None for regression
    classes: tuple | None = None
    name: str = ""

    def __iter__(self):
        return iter((self.X, self.y))

    @property
    def n_samples(self) -> int:
        return len(self.X)

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


# ---- CSV ---------------------------------------------------------------------------------------


def load_csv(
    path: str | os.PathLike,
    label_column: int | str | None = -1,
    header: bool | str = "auto",
    delimiter: str = ",",
    dtype: Any = np.float32,
    max_bytes: int | None = None,
) -> LoadedData:
    """Features and one label column from a CSV file (plain or gzip-compressed).

    label_column: index (negative counts from the end) or header name; None reads features only
    (y is then None), as for rows to predict. header: 'auto' takes the
    first row as a header when any of its cells is not a number. Labels that are all integers
    become int64 classes; other numbers a regression target (samples, 1); text labels become class
    indices in sorted order, with `classes` holding the text. Parsed by the standard library's
    `csv` module: quoted fields may hold the delimiter, quotes ("") and line breaks; a UTF-8 BOM
    and CRLF line ends are accepted; blank lines are skipped. A gzip file may decompress to at
    most `max_bytes` (default 2 GiB, or the CHAINRULE_MAX_DECOMPRESSED_BYTES environment variable).
    """
    path, dtype = os.fspath(path), float_dtype(dtype)
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
        raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
    rows = _csv_rows(path, _read_text(path, _byte_limit(max_bytes)), delimiter)
    first_line, first = next(rows, (0, None))
    if first is None:
        raise ValueError(f"{path}: the file is empty")
    has_header = header is True or (header == "auto" and not all(map(is_number, first)))
    names = [name.strip() for name in first] if has_header else None
    n_columns = len(first)
    if n_columns < 2 and label_column is not None:
        raise ValueError(f"{path}: needs at least 2 columns (features and a label), found 1")
    label = None if label_column is None else _label_index(path, label_column, names, n_columns)
    features = [column for column in range(n_columns) if column != label]
    lines: list[int] = []  # the line each data row starts on, for error messages
    texts: list[str] = []  # label cells
    blocks: list[np.ndarray] = []
    cell = _cell_namer(path, lines, names)
    chunk: list[list[str]] = []
    for number, cells in rows if has_header else itertools.chain([(first_line, first)], rows):
        if len(cells) != n_columns:
            raise ValueError(
                f"{path}: line {number} has {len(cells)} columns, expected "
                f"{n_columns} (as on line {first_line})"
            )
        lines.append(number)
        if label is not None:
            texts.append(cells[label].strip())
        chunk.append(cells)
        if len(chunk) == _CSV_CHUNK:  # converted as it goes: no table of strings in memory
            blocks.append(_csv_numbers(chunk, features, len(lines) - len(chunk), cell))
            chunk = []
    if chunk or not blocks:
        blocks.append(_csv_numbers(chunk, features, len(lines) - len(chunk), cell))
    if not lines:
        raise ValueError(f"{path}: no data rows after the header")
    X = _cast_finite(np.concatenate(blocks), dtype, lambda row, k: cell(row, features[k]))
    if label is None:
        return LoadedData(X, None, "unlabelled", None, None, path)
    y, task, n_classes, classes = _csv_labels(texts, label, cell, dtype, path)
    return LoadedData(X, y, task, n_classes, classes, path)


_CSV_CHUNK = 4096  # rows parsed to floats at a time


def _csv_rows(path: str, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number where the row starts, cells) for each non-blank row. Cells keep surrounding
    spaces (float() ignores them; header names and labels are stripped where they are used)."""
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True
    )
    start = 1
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as error:  # a stray quote, a field past csv's size limit
            raise ValueError(f"{path}: line {start}: {error}") from None
        if cells is None:
            return
        if len(cells) > 1 or (cells and cells[0].strip()):
            yield start, cells
        start = reader.line_num + 1


def _csv_numbers(
    chunk: list[list[str]], features: list[int], offset: int, cell: Callable
) -> np.ndarray:
    """The feature cells of `chunk` as float64 (rows, features); a bad cell is named."""
    if not chunk:
        return np.empty((0, len(features)))
    if len(features) == len(chunk[0]):
        table = chunk
    else:
        table = [[cells[column] for column in features] for cells in chunk]
    try:
        return np.array(table, dtype=np.float64).reshape(len(chunk), len(features))
    except ValueError:
        for row, cells in enumerate(chunk):
            for column in features:
                if not is_number(cells[column]):
                    raise ValueError(
                        f"{cell(offset + row, column)}: {_not_a_number(cells[column])}"
                    ) from None
        raise


def _cast_finite(values: np.ndarray, dtype: np.dtype, where: Callable) -> np.ndarray:
    """`values` (float64) cast to `dtype`, refusing NaN, infinity, and numbers the cast makes
    infinite (1e39 is finite in float64 but not in float32): `where(row, column)` names a cell."""
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    bad = np.argwhere(~np.isfinite(cast))
    if len(bad):
        row, k = (int(i) for i in bad[0])
        value = values[row, k]
        if np.isfinite(value):
            raise ValueError(
                f"{where(row, k)}: {value:g} is beyond the range of {dtype.name} "
                f"(largest {np.finfo(dtype).max:.4g}); use dtype float64 or rescale the data"
            )
        raise ValueError(f"{where(row, k)}: {value} is not a finite number")
    return cast


DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_BYTES_VARIABLE = "CHAINRULE_MAX_DECOMPRESSED_BYTES"


def _byte_limit(max_bytes: int | None) -> int:
    """The most bytes compressed data may expand to: `max_bytes`, else the environment, else
    2 GiB. Generous for real data sets, and it stops a small archive from filling memory."""
    where = "max_bytes"
    if max_bytes is None:
        text = os.environ.get(MAX_BYTES_VARIABLE)
        if text is None:
            return DEFAULT_MAX_BYTES
        where, max_bytes = MAX_BYTES_VARIABLE, text
        try:
            max_bytes = int(text)
        except ValueError:
            raise ValueError(f"{where}={text!r} is not a whole number of bytes") from None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise ValueError(f"{where} must be a positive number of bytes, got {max_bytes!r}")
    return int(max_bytes)


def _too_large(path: str, what: str, limit: int) -> ValueError:
    return ValueError(
        f"{path}: {what} more than {limit} bytes, the limit for decompressed data; if the file is "
        f"genuine, raise it with max_bytes= or the {MAX_BYTES_VARIABLE} environment variable"
    )


def check_data_file(path: str) -> None:
    """A missing path raises FileNotFoundError; a directory, FIFO or device is named as such
    (a FIFO would block the read forever)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kinds = [
            (stat.S_ISDIR, "a directory"),
            (stat.S_ISFIFO, "a FIFO (named pipe)"),
            (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"),
        ]
        kind = next((name for test, name in kinds if test(mode)), "not a regular file")
        raise ValueError(f"{path}: is {kind}, not a data file")


def _read_text(path: str, limit: int = DEFAULT_MAX_BYTES) -> str:
    check_data_file(path)
    with open(path, "rb") as file:
        compressed = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        content = _decompressed(path, file, limit) if compressed else file.read()
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start} cannot be decoded)") from None


def _decompressed(path: str, file: Any, limit: int) -> bytes:
    chunks, total = [], 0
    try:
        with gzip.GzipFile(fileobj=file) as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
                if total > limit:
                    raise _too_large(path, "decompresses to", limit)
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from None
    return b"".join(chunks)


def _label_index(
    path: str, label_column: int | str, names: list[str] | None, n_columns: int
) -> int:
    if isinstance(label_column, str):
        if names is None:
            raise ValueError(
                f"{path}: label_column={label_column!r} needs a header row, and the file has none; "
                "give the column's index instead"
            )
        if label_column not in names:
            raise ValueError(
                f"{path}: no column named {label_column!r}; columns: {', '.join(names)}"
            )
        return names.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer)):
        raise TypeError(f"label_column must be an int or a column name, got {label_column!r}")
    if not -n_columns <= label_column < n_columns:
        raise ValueError(
            f"{path}: label_column={label_column} is out of range for {n_columns} columns"
        )
    return int(label_column) % n_columns


def _cell_namer(path: str, lines: list[int], names: list[str] | None) -> Callable:
    """Where a cell is, for error messages: 'data.csv: line 7, column 3 (petal_width)'."""

    def cell(row: int, column: int) -> str:
        name = f" ({names[column]})" if names else ""
        return f"{path}: line {lines[row]}, column {column + 1}{name}"

    return cell


def _not_a_number(text: str) -> str:
    return "the cell is empty" if not text.strip() else f"{text.strip()!r} is not a number"


def _csv_labels(texts: list[str], label: int, cell: Callable, dtype: Any, path: str) -> tuple:
    numeric = [is_number(text) for text in texts]
    if all(numeric):
        values = np.array(texts, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(f"{cell(bad[0], label)}: label {texts[bad[0]]} is not a finite number")
        if np.all(values == np.round(values)) and np.abs(values).max() < 2**53:
            return _refuse_sparse_labels(_integer_labels(values.astype(np.int64)), path)
        y = _cast_finite(values.reshape(-1, 1), float_dtype(dtype), lambda row, k: cell(row, label))
        return y, "regression", None, None
    for row, text in enumerate(texts):
        if not text:
            raise ValueError(f"{cell(row, label)}: the label is empty")
    if any(numeric):  # a mix: point at the first label of the minority kind
        odd = sum(numeric) >= len(numeric) / 2
        row = numeric.index(not odd)
        kind = (
            "is not a number, but most labels are"
            if odd
            else "is a number, but most labels are text"
        )
        raise ValueError(f"{cell(row, label)}: label {texts[row]!r} {kind}")
    classes, y = np.unique(np.array(texts), return_inverse=True)
    return y.astype(np.int64), "classification", len(classes), tuple(classes.tolist())


# Integer labels are class indices, so the largest one sets the width of the output layer. Labels
# far beyond the number of distinct ones (100000000 alone asked for an 11.9 GiB layer) are refused
# rather than silently renumbered: the user should see that the labels are ids, not indices.
_SPARSE_LABELS_ALLOWED = 1000


def _refuse_sparse_labels(labels: tuple, where: str) -> tuple:
    """`labels` (from _integer_labels) unless the classes they ask for are mostly unused.

    (IDX files are exempt: their int32 labels are kept as given, a format convention.)
    """
    y, _, n_classes, classes = labels
    if classes is None and n_classes is not None and n_classes > _SPARSE_LABELS_ALLOWED:
        distinct = len(np.unique(y))
        if n_classes > 10 * distinct:
            raise ValueError(
                f"{where}: integer label {n_classes - 1} would need {n_classes} output classes "
                f"for {distinct} distinct labels; renumber the labels 0..{distinct - 1} "
                "(or write them as text, which becomes class names)"
            )
    return labels


def _integer_labels(y: np.ndarray) -> tuple:
    """Non-negative integers are class indices as given; negative ones are renumbered in order."""
    if y.min() >= 0:
        return y, "classification", int(y.max()) + 1, None
    classes, indices = np.unique(y, return_inverse=True)
    return indices.astype(np.int64), "classification", len(classes), tuple(classes.tolist())


# ---- NPZ ---------------------------------------------------------------------------------------

_NPZ_KEYS = (("X", "y"), ("x", "y"), ("data", "labels"), ("features", "targets"))


def load_npz(
    path: str | os.PathLike, dtype: Any = np.float32, max_bytes: int | None = None
) -> LoadedData:
    """X and y from a NumPy .npz archive, never unpickling (object arrays are refused).

    Arrays may be named X/y, x/y, data/labels or features/targets. X with more than 2 dimensions
    is flattened per sample; values are kept (not scaled). Integer or boolean y are classes, float
    y a regression target (samples, targets), text y class names. The two arrays may expand to at
    most `max_bytes` together (default 2 GiB, or CHAINRULE_MAX_DECOMPRESSED_BYTES): checked from
    the archive's directory and each array's header before anything is decompressed.
    """
    path = os.fspath(path)
    limit = _byte_limit(max_bytes)
    check_data_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(  # noqa: TRY004 (the file's content is wrong, not the argument's type)
            f"{path}: expected an .npz archive of named arrays, found a single array"
        )
    with archive:
        keys = next(
            ((x, y) for x, y in _NPZ_KEYS if x in archive.files and y in archive.files), None
        )
        if keys is None:
            raise ValueError(
                f"{path}: expected arrays named X and y (or x/y, data/labels, features/targets); "
                f"found {', '.join(archive.files) or 'none'}"
            )
        _check_npz_sizes(path, archive, keys, limit)
        try:
            X, y = archive[keys[0]], archive[keys[1]]
        except ValueError:
            raise ValueError(
                f"{path}: holds object arrays, which only pickle can read; refused because "
                "unpickling a file can run arbitrary code (save plain numeric arrays)"
            ) from None
    if X.dtype.kind not in "biuf" or X.ndim == 0:
        raise ValueError(
            f"{path}: X must be a numeric array (samples, ...), got {X.dtype} {X.shape}"
        )
    if y.ndim == 0 or len(y) != len(X):
        raise ValueError(f"{path}: X has {len(X)} samples but y has shape {y.shape}")
    if len(X) == 0:
        raise ValueError(f"{path}: the arrays hold no samples")
    X = _finite(_cast(X.reshape(len(X), -1), dtype), f"{path}: X")
    labels = _refuse_sparse_labels(_array_labels(y, f"{path}: y", dtype), f"{path}: y")
    return LoadedData(X, *labels, name=path)


# (NumPy writes version 3.0 only for UTF-8 field names; its size is then checked from the zip.)
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _check_npz_sizes(path: str, archive: Any, keys: tuple[str, str], limit: int) -> None:
    """Refuse a zip bomb before inflating it: the sizes the zip directory declares (which zipfile
    enforces while reading) and the shapes the .npy headers declare must stay within `limit`."""
    total = 0
    for key in keys:
        member = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
        declared = archive.zip.getinfo(member).file_size
        try:
            with archive.zip.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = _NPY_HEADER_READERS.get(version)
                shape, _, dtype = read_header(stream) if read_header else ((), False, np.uint8)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path}: array {key!r} is not a readable .npy ({error})") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > declared:
            raise ValueError(
                f"{path}: array {key!r} declares shape {shape} ({nbytes} bytes) but its archive "
                f"member holds {declared} bytes; the file is corrupt"
            )
        total += declared
        if total > limit:
            raise _too_large(path, "its arrays X and y expand to", limit)


def _array_labels(y: np.ndarray, where: str, dtype: Any) -> tuple:
    """(y, task, n_classes, classes) for labels stored with their own dtype (NPZ, IDX)."""
    if y.dtype.kind in "biu":
        if y.ndim != 1 and y.shape[1:] != (1,):
            raise ValueError(f"{where}: class labels must have shape (samples,), got {y.shape}")
        return _integer_labels(y.reshape(-1).astype(np.int64))
    if y.dtype.kind == "f":
        y = _finite(_cast(y.reshape(len(y), -1), dtype), where)
        return y, "regression", None, None
    if y.dtype.kind == "U" and y.ndim == 1:
        classes, indices = np.unique(y, return_inverse=True)
        return indices.astype(np.int64), "classification", len(classes), tuple(classes.tolist())
    raise ValueError(f"{where}: labels must be integers, floats or text, got {y.dtype} {y.shape}")


# ---- MNIST IDX ---------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data by more than this, so larger claims are lies


def load_idx(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    dtype: Any = np.float32,
    max_bytes: int | None = None,
    images: bool = False,
) -> LoadedData:
    """MNIST-style IDX images and labels, raw or gzip-compressed (detected by content).

    Images (samples, rows, cols) are flattened to (samples, rows·cols), or with images=True kept as
    (samples, 1, rows, cols) for convolutional networks; uint8 pixels are scaled to
    [0, 1] by dividing by 255, other types are kept. Without labels_path the labels file is found
    beside the images by MNIST naming: train-images-idx3-ubyte[.gz] -> train-labels-idx1-ubyte[.gz].
    A gzip file may expand to at most `max_bytes` (default 2 GiB, or
    CHAINRULE_MAX_DECOMPRESSED_BYTES).
    """
    images_path = os.fspath(images_path)
    pixels = read_idx(images_path, max_bytes)
    if pixels.ndim < 2:
        raise ValueError(
            f"{images_path}: holds a 1-D array of shape {pixels.shape} (a labels file?); "
            "expected images (samples, rows, cols)"
        )
    labels_path = _find_idx_labels(images_path) if labels_path is None else os.fspath(labels_path)
    labels = read_idx(labels_path, max_bytes)
    if labels.ndim != 1 or len(labels) != len(pixels):
        raise ValueError(
            f"{labels_path}: labels of shape {labels.shape} do not match {len(pixels)} images "
            f"in {images_path}"
        )
    if len(pixels) == 0:
        raise ValueError(f"{images_path}: holds no images")
    dtype = float_dtype(dtype)
    shape = (1, *pixels.shape[1:]) if images and pixels.ndim == 3 else (-1,)
    X = _cast(pixels.reshape(len(pixels), *shape), dtype)
    if pixels.dtype == np.uint8:
        X /= dtype.type(255)
    X = _finite(X, images_path)
    return LoadedData(X, *_array_labels(labels, labels_path, dtype), name=images_path)


def read_idx(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """The array in one IDX file (native byte order), checking the header against the data size."""
    path = os.fspath(path)
    limit = _byte_limit(max_bytes)
    check_data_file(path)
    with open(path, "rb") as file:
        compressed = file.read(2) == b"\x1f\x8b"
    file_size = os.path.getsize(path)
    try:
        with (gzip.open if compressed else open)(path, "rb") as file:
            return _read_idx_stream(path, file, file_size, compressed, limit)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({error})") from None


def _read_idx_stream(
    path: str, file: Any, file_size: int, compressed: bool, limit: int
) -> np.ndarray:
    magic = file.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: not an IDX file (the magic number must start with two zero bytes)"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02X} (valid: {valid})")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions")
    dims_bytes = file.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    item = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(shape) * item.itemsize
    if math.prod(max(n, 1) for n in shape) * item.itemsize > 2**62:  # NumPy's "array is too big"
        raise ValueError(f"{path}: the header declares shape {shape}, larger than any array")
    if compressed and expected > _DEFLATE_MAX_RATIO * file_size:
        raise ValueError(
            f"{path}: the header declares shape {shape} ({expected} bytes), more than a "
            f"{file_size}-byte gzip file can hold; the file is corrupt"
        )
    if compressed and expected > limit:
        raise _too_large(path, f"the header declares shape {shape}, {expected} bytes:", limit)
    if not compressed and expected != file_size - 4 - 4 * ndim:
        defect = "truncated" if expected > file_size - 4 - 4 * ndim else "longer than declared"
        raise ValueError(
            f"{path}: {defect}: the header declares shape {shape} ({expected} bytes of data) but "
            f"{file_size - 4 - 4 * ndim} bytes follow it"
        )
    buffer = np.empty(expected, dtype=np.uint8)
    view, filled = memoryview(buffer), 0
    while filled < expected:  # chunked: a lying header cannot make us allocate twice
        count = file.readinto(view[filled : filled + (1 << 24)])
        if not count:
            raise ValueError(
                f"{path}: truncated: the header declares shape {shape} ({expected} bytes of data) "
                f"but only {filled} bytes follow it"
            )
        filled += count
    if compressed and file.read(1):
        raise ValueError(f"{path}: longer than declared: data continues after shape {shape}")
    return buffer.view(item).reshape(shape).astype(item.newbyteorder("="))


def _find_idx_labels(images_path: str) -> str:
    directory, base = os.path.split(images_path)
    if "images" not in base:
        raise ValueError(
            f"{images_path}: cannot guess the labels file (MNIST names images "
            "'*-images-idx3-ubyte' and labels '*-labels-idx1-ubyte'); pass labels_path"
        )
    stem = base.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    tried = [os.path.join(directory, stem + suffix) for suffix in ("", ".gz")]
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{images_path}: no labels file beside it (tried {', '.join(tried)})")


def _cast(array: np.ndarray, dtype: Any) -> np.ndarray:
    """`array` as the float dtype; values beyond its range become inf, which _finite refuses."""
    with np.errstate(over="ignore"):
        return array.astype(float_dtype(dtype))


def _finite(array: np.ndarray, where: str) -> np.ndarray:
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{where}: value {array[index]} at index {index} is not finite (NaN or infinity, or "
            f"beyond the range of {array.dtype.name} once cast)"
        )
    return array


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
