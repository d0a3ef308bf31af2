"""Save and load chainrule.nn models as safetensors files that cannot run code.

A model file is a plain safetensors file (it opens with `safetensors.numpy.load_file`): its tensors
are the model's `state_dict()` (parameters and buffers, dtypes kept) and `__metadata__["chainrule"]`
holds a JSON description:
    {"format": "chainrule.model", "format_version": 1, "library_version": "0.1.0",
     "architecture": {"type": "Sequential", "layers": [{"type": "Linear", "in_features": 4, ...}]},
     "metadata": {...user data...}, "sha256": "..."}
Layer types come from the fixed table `chainrule.architecture.LAYER_TYPES`; every argument is
checked for type and range, and no name read from a file is ever imported, looked up with getattr,
or evaluated.

`sha256` guards against corruption (it is not a signature; anyone can recompute it). It is the
SHA-256 over, each item preceded by its length as a little-endian u64:
    the description without "sha256" as JSON (keys sorted, separators "," and ":", UTF-8), then
    for each tensor, names sorted by code point: JSON [name, dtype code, shape], then its raw bytes.
Files are written with `atomic_write`, so a crash mid-save leaves the previous file intact.

User metadata is free-form JSON here; the keys predictions compute with (mean, std, class_names)
are checked against the model by `chainrule.predictor.Predictor`, which reads them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainrule import nn
from chainrule.architecture import (
    LAYER_TYPES,
    ArchitectureError,
    build,
    describe_model,
    expected_tensors,
    input_shape,
    leaves,
    output_shapes,
    parse_node,
)
from chainrule.atomic import atomic_write
from chainrule.safetensors_format import (
    DTYPES,
    MAX_JSON_DEPTH,
    ModelFileError,
    dtype_code,
    load_file,
    parse_json,
    printable,
    shown,
    write,
)
from chainrule.validation import is_int
from chainrule.version import __version__

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LAYER_TYPES",
    "ModelFileError",
    "ModelInfo",
    "describe_model",
    "inspect",
    "load",
    "load_with_metadata",
    "save",
]

FORMAT_NAME = "chainrule.model"
FORMAT_VERSION = 1
METADATA_KEY = "chainrule"
# The metadata entry that makes a model file a fitted chainrule.sklearn estimator.
ESTIMATOR_KEY = "chainrule.sklearn"
_DESCRIPTION_KEYS = frozenset(
    ["format", "format_version", "library_version", "architecture", "metadata", "sha256"]
)
# Any layer width; what is built must also match tensors that fit in the file, checked first.


# ---- checksum -----------------------------------------------------------------------------------
def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _checksum(description: dict, tensors: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()

    def update(chunk: bytes | memoryview) -> None:
        digest.update(struct.pack("<Q", memoryview(chunk).nbytes))
        digest.update(chunk)

    update(_canonical({key: value for key, value in description.items() if key != "sha256"}))
    for name in sorted(tensors):
        array = tensors[name]
        code = dtype_code(array.dtype)
        update(_canonical([name, code, list(array.shape)]))
        update(np.ascontiguousarray(array, dtype=DTYPES[code]).reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


# ---- save ---------------------------------------------------------------------------------------
def json_metadata(value: Any, where: str = "metadata", depth: int = 0) -> Any:
    """User metadata as plain JSON: str keys, finite numbers; arrays and tuples become lists."""
    # The description wraps metadata two levels deep; a reader refuses anything deeper in all.
    if depth > MAX_JSON_DEPTH - 2:
        raise ValueError(f"{where[:80]}...: metadata is nested more than {MAX_JSON_DEPTH - 2} deep")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, got {key!r}")
        return {
            key: json_metadata(item, f"{where}[{key!r}]", depth + 1) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [json_metadata(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}; metadata numbers must be finite")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(
        f"{where} is a {type(value).__name__}; metadata holds str, numbers, bool, None, "
        "lists and dicts"
    )


def save(
    model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write `model` (a Sequential of built-in layers) and JSON `metadata` to a safetensors file.

    Refuses NaN/Inf weights. Atomic: on any failure the previous file at `path` is untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save expects a chainrule.nn.Module, got {type(model).__name__}")
    architecture = describe_model(model)
    state = model.state_dict()
    expected = expected_tensors(architecture)
    actual = {name: (array.shape, array.dtype.name) for name, array in state.items()}
    if actual != {name: (shape, dtype) for name, (shape, dtype, _) in expected.items()}:
        raise ValueError(
            f"cannot save: the model's tensors {actual} do not match what its layers describe "
            f"{ {name: spec[:2] for name, spec in expected.items()} }"
        )
    bad = [name for name, array in state.items() if not np.isfinite(array).all()]
    if bad:
        raise ValueError(
            f"cannot save: tensors {bad} contain NaN or infinite values; {path} left unchanged"
        )
    plain_metadata = json_metadata({} if metadata is None else dict(metadata))
    description = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "architecture": architecture,
        "metadata": plain_metadata,
    }
    description["sha256"] = _checksum(description, state)
    header_metadata = {METADATA_KEY: _canonical(description).decode()}
    atomic_write(path, lambda file: write(file, state, header_metadata))


# ---- load ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What a model file holds, checked in full but without building the model."""

    path: str
    format_version: int
    library_version: str
    architecture: dict
    layers: list[dict]  # leaf layers: {"name", "type", "arguments", "parameters"}
    num_parameters: int
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape)
    metadata: dict
    sha256: str

    def __str__(self) -> str:
        # Strings from the file are escaped: a model file must not drive the user's terminal.
        title = (
            f"chainrule model, format {self.format_version}, "
            f"chainrule {printable(self.library_version)[:40]}"
        )
        lines = [f"{self.path}: {title}"]
        shape = input_shape(self.architecture, self.metadata)
        shapes = output_shapes(self.architecture, shape) if shape else [None] * len(self.layers)
        if shape:
            lines.append(f"  input    {shape}")
        for row, output in zip(self.layers, shapes):
            arguments = ", ".join(f"{key}={value!r}" for key, value in row["arguments"].items())
            lines.append(
                f"  {row['name']:<8} {row['type']}({arguments})  {row['parameters']:,} parameters"
                + (f"  -> {output}" if output else "")
            )
        lines.append(f"  {self.num_parameters:,} parameters in all; sha256 {self.sha256}")
        lines += [  # json.dumps escapes control characters (ensure_ascii)
            f"  metadata {shown(key, 40)[1:-1]}: {json.dumps(value)[:200]}"
            for key, value in self.metadata.items()
        ]
        return "\n".join(lines)


def _read(path: str | os.PathLike) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """Every check a load makes, in order: layout, format, version, checksum, layers, tensors,
    the metadata predictions use. Any other ValueError or RecursionError a hostile file might
    still provoke is reported as a ModelFileError too: one short line naming the file."""
    name = str(os.fspath(path))
    try:
        return _read_checked(name)
    except ModelFileError:
        raise
    except (ValueError, OverflowError, RecursionError) as error:
        defect = f"unreadable ({type(error).__name__}: {shown(str(error))})"
        raise ModelFileError(name, defect) from None


def _read_checked(name: str) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    tensors, header_metadata = load_file(name)

    def fail(defect: str) -> ModelFileError:
        return ModelFileError(name, defect)

    if set(header_metadata) != {METADATA_KEY}:
        raise fail(
            f"not a chainrule model file: __metadata__ has keys {shown(sorted(header_metadata))}, "
            f"expected only {METADATA_KEY!r}"
        )
    description = parse_json(header_metadata[METADATA_KEY], name, "the chainrule description")
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        found = description.get("format") if isinstance(description, dict) else description
        raise fail(f"not a chainrule model file: format {shown(found)}, expected {FORMAT_NAME!r}")
    version = description.get("format_version")
    if not is_int(version) or version < 1:
        raise fail(f"format_version must be a positive integer, got {shown(version)}")
    if version > FORMAT_VERSION:
        raise fail(
            f"format version {version} is newer than version {FORMAT_VERSION}, the newest this "
            f"chainrule reads (the file was written by chainrule "
            f"{shown(description.get('library_version'), 40)}); upgrade chainrule to load it"
        )
    if set(description) != _DESCRIPTION_KEYS:
        raise fail(
            f"the description has keys {shown(sorted(description), 200)}, "
            f"expected {sorted(_DESCRIPTION_KEYS)}"
        )
    sha256 = description["sha256"]
    actual = _checksum(description, tensors)
    if sha256 != actual:
        raise fail(
            f"checksum mismatch: the file was changed or corrupted after saving "
            f"(recorded sha256 {shown(sha256, 70)}, computed {actual})"
        )
    library_version, metadata = description["library_version"], description["metadata"]
    if not isinstance(library_version, str) or not isinstance(metadata, dict):
        raise fail("library_version must be a string and metadata an object")
    try:
        architecture = parse_node(description["architecture"], "model", 0, [0])
    except ArchitectureError as error:
        raise fail(f"invalid architecture: {error}") from None
    _check_tensors(fail, expected_tensors(architecture), tensors)
    layers = leaves(architecture)
    info = ModelInfo(
        path=name,
        format_version=version,
        library_version=library_version,
        architecture=architecture,
        layers=layers,
        num_parameters=sum(row["parameters"] for row in layers),
        tensors={key: (array.dtype.name, array.shape) for key, array in tensors.items()},
        metadata=metadata,
        sha256=sha256,
    )
    return info, tensors


def _check_tensors(
    fail: Callable[[str], ModelFileError], expected: dict, tensors: dict[str, np.ndarray]
) -> None:
    missing = [key for key in expected if key not in tensors]
    extra = [key for key in tensors if key not in expected]
    if missing or extra:
        raise fail(
            f"tensors do not match the architecture: missing {shown(missing, 300)}, "
            f"extra {shown(extra, 300)}"
        )
    for key, (shape, dtype, _) in expected.items():
        array = tensors[key]
        if array.shape != shape:
            raise fail(f"tensor {key!r} has shape {array.shape} but the architecture needs {shape}")
        if array.dtype.name != dtype:
            raise fail(
                f"tensor {key!r} is {array.dtype.name} but the architecture declares {dtype}"
            )
        if not np.isfinite(array).all():
            raise fail(f"tensor {key!r} contains NaN or infinite values")


def inspect(path: str | os.PathLike) -> ModelInfo:
    """Architecture, parameter count and metadata of a model file: fully checked, nothing built."""
    return _read(path)[0]


def load_with_metadata(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """(model, user metadata) from a file written by `save`; the model is in eval mode."""
    info, tensors = _read(path)
    model = build(info.architecture)
    model.load_state_dict(tensors)
    return model.eval(), info.metadata


def load(path: str | os.PathLike) -> nn.Module:
    """The model saved at `path`, in eval mode (call `.train()` to train on).

    Malformed, corrupt, truncated or foreign files raise ModelFileError naming the file and defect.
    """
    return load_with_metadata(path)[0]
