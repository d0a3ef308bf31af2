"""Save and load chainrule.nn models as safetensors files that cannot run code.

A model file is a plain safetensors file (it opens with `safetensors.numpy.load_file`): its tensors
are the model's `state_dict()` (parameters and buffers, dtypes kept) and `__metadata__["chainrule"]`
holds a JSON description:
    {"format": "chainrule.model", "format_version": 1, "library_version": "0.1.0",
     "architecture": {"type": "Sequential", "layers": [{"type": "Linear", "in_features": 4, ...}]},
     "metadata": {...user data...}, "sha256": "..."}
Layer types come from the fixed table `LAYER_TYPES` below; every constructor argument is checked for
type and range, and no name read from a file is ever imported, looked up with getattr, or evaluated.

`sha256` guards against corruption (it is not a signature; anyone can recompute it). It is the
SHA-256 over, each item preceded by its length as a little-endian u64:
    the description without "sha256" as JSON (keys sorted, separators "," and ":", UTF-8), then
    for each tensor, names sorted by code point: JSON [name, dtype code, shape], then its raw bytes.
Files are written with `atomic_write`, so a crash mid-save leaves the previous file intact.
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
from chainrule.atomic import atomic_write
from chainrule.safetensors_format import (
    DTYPES,
    ModelFileError,
    dtype_code,
    load_file,
    parse_json,
    write,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LAYER_TYPES", "ModelFileError", "ModelInfo",
           "describe_model", "inspect", "load", "load_with_metadata", "save"]  # fmt: skip

FORMAT_NAME = "chainrule.model"
FORMAT_VERSION = 1
METADATA_KEY = "chainrule"
_DESCRIPTION_KEYS = frozenset(
    ["format", "format_version", "library_version", "architecture", "metadata", "sha256"]
)
# Any layer width; what is built must also match tensors that fit in the file, checked first.
MAX_SIZE = 2**31 - 1
MAX_DEPTH = 32  # nested Sequentials
MAX_LAYERS = 100_000


class _Invalid(Exception):
    """An architecture defect; becomes ModelFileError on load and ValueError on save."""


# ---- argument checks: each returns the normalised value or raises _Invalid ----------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_SIZE:
        raise _Invalid(f"must be an integer from 1 to {MAX_SIZE}, got {value!r}")
    return value


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Invalid(f"must be a finite number, got {value!r}")
    return float(value)


def _positive(value: Any) -> float:
    if _finite(value) <= 0:
        raise _Invalid(f"must be positive, got {value!r}")
    return float(value)


def _fraction(value: Any) -> float:
    if not 0 <= _finite(value) <= 1:
        raise _Invalid(f"must be in [0, 1], got {value!r}")
    return float(value)


def _probability(value: Any) -> float:
    if not 0 <= _finite(value) < 1:
        raise _Invalid(f"must be in [0, 1), got {value!r}")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _dim(value: Any) -> int:
    if not _is_int(value) or not -64 <= value < 64:
        raise _Invalid(f"must be an integer from -64 to 63, got {value!r}")
    return value


def _shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= 8:
        raise _Invalid(f"must be a list of 1 to 8 sizes, got {value!r}")
    return [_size(n) for n in value]


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise _Invalid(f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    return check


_dtype = _choice("float32", "float64")


# ---- the layer table ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerType:
    """How one built-in layer is described, checked, built, and which tensors it owns."""

    module: type
    arguments: dict[str, Callable[[Any], Any]]
    build: Callable[[dict], nn.Module]
    describe: Callable[[Any], dict]
    # (name, shape, is_parameter) of the layer's state_dict entries, from its arguments alone
    tensors: Callable[[dict], list[tuple[str, tuple[int, ...], bool]]] = lambda a: []


def _no_arguments(module: type) -> LayerType:
    return LayerType(module, {}, lambda a: module(), lambda m: {})


def _affine(shape: tuple[int, ...], present: bool) -> list[tuple[str, tuple[int, ...], bool]]:
    return [("weight", shape, True), ("bias", shape, True)] if present else []


def _layer_norm_dtype(m: nn.LayerNorm) -> str:
    # Without affine parameters the dtype lives only in LayerNorm's private _dtype.
    return np.dtype(m.weight.dtype if m.weight is not None else m._dtype).name


LAYER_TYPES: dict[str, LayerType] = {
    "Linear": LayerType(
        nn.Linear,
        {"in_features": _size, "out_features": _size, "bias": _flag, "dtype": _dtype},
        # rng=0: the values are overwritten, and the user's default generator stays untouched.
        lambda a: nn.Linear(a["in_features"], a["out_features"], a["bias"], a["dtype"], rng=0),
        lambda m: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
            "dtype": m.weight.dtype.name,
        },
        lambda a: (
            [("weight", (a["out_features"], a["in_features"]), True)]
            + ([("bias", (a["out_features"],), True)] if a["bias"] else [])
        ),
    ),
    "Sigmoid": _no_arguments(nn.Sigmoid),
    "Tanh": _no_arguments(nn.Tanh),
    "ReLU": _no_arguments(nn.ReLU),
    "Softplus": _no_arguments(nn.Softplus),
    "Identity": _no_arguments(nn.Identity),
    "Flatten": _no_arguments(nn.Flatten),
    "LeakyReLU": LayerType(
        nn.LeakyReLU,
        {"negative_slope": _finite},
        lambda a: nn.LeakyReLU(a["negative_slope"]),
        lambda m: {"negative_slope": m.negative_slope},
    ),
    "GELU": LayerType(
        nn.GELU,
        {"approximate": _choice("none", "tanh")},
        lambda a: nn.GELU(a["approximate"]),
        lambda m: {"approximate": m.approximate},
    ),
    "Softmax": LayerType(
        nn.Softmax, {"dim": _dim}, lambda a: nn.Softmax(a["dim"]), lambda m: {"dim": m.dim}
    ),
    "Dropout": LayerType(
        nn.Dropout, {"p": _probability}, lambda a: nn.Dropout(a["p"]), lambda m: {"p": m.p}
    ),
    "BatchNorm1d": LayerType(
        nn.BatchNorm1d,
        {
            "num_features": _size,
            "eps": _positive,
            "momentum": _fraction,
            "affine": _flag,
            "dtype": _dtype,
        },
        lambda a: nn.BatchNorm1d(
            a["num_features"], a["eps"], a["momentum"], a["affine"], a["dtype"]
        ),
        lambda m: {
            "num_features": m.num_features,
            "eps": m.eps,
            "momentum": m.momentum,
            "affine": m.weight is not None,
            "dtype": np.asarray(m.running_mean).dtype.name,
        },
        lambda a: (
            _affine((a["num_features"],), a["affine"])
            + [
                ("running_mean", (a["num_features"],), False),
                ("running_var", (a["num_features"],), False),
            ]
        ),
    ),
    "LayerNorm": LayerType(
        nn.LayerNorm,
        {
            "normalized_shape": _shape,
            "eps": _positive,
            "elementwise_affine": _flag,
            "dtype": _dtype,
        },
        lambda a: nn.LayerNorm(
            tuple(a["normalized_shape"]), a["eps"], a["elementwise_affine"], a["dtype"]
        ),
        lambda m: {
            "normalized_shape": list(m.normalized_shape),
            "eps": m.eps,
            "elementwise_affine": m.weight is not None,
            "dtype": _layer_norm_dtype(m),
        },
        lambda a: _affine(tuple(a["normalized_shape"]), a["elementwise_affine"]),
    ),
}
_NAMES_BY_MODULE = {layer.module: name for name, layer in LAYER_TYPES.items()}
_KNOWN = ", ".join(["Sequential", *LAYER_TYPES])


def _plain(value: Any) -> Any:
    """NumPy scalars and tuples as the JSON types they stand for."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe_model(model: nn.Module) -> dict:
    """The JSON architecture of a model built from LAYER_TYPES and (nested) Sequentials.

    >>> describe_model(nn.Sequential(nn.Linear(2, 3), nn.Tanh()))["layers"][1]
    {'type': 'Tanh'}
    """
    node = _describe(model, "model")
    try:
        return _parse_node(node, "model", 0, [0])
    except _Invalid as error:
        raise ValueError(f"cannot describe the model: {error}") from None


def _describe(module: Any, where: str) -> dict:
    if type(module) is nn.Sequential:
        return {
            "type": "Sequential",
            "layers": [_describe(m, f"{where}.{i}") for i, m in enumerate(module)],
        }
    name = _NAMES_BY_MODULE.get(type(module))
    if name is None:
        raise TypeError(
            f"cannot save {where}: {type(module).__name__} is not a built-in layer; model files "
            f"hold Sequentials of {_KNOWN} (exact types, not subclasses)"
        )
    arguments = {key: _plain(value) for key, value in LAYER_TYPES[name].describe(module).items()}
    return {"type": name, **arguments}


def _parse_node(node: Any, where: str, depth: int, count: list[int]) -> dict:
    """Check one architecture node against LAYER_TYPES and return it normalised."""
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise _Invalid(f"more than {MAX_LAYERS} layers")
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise _Invalid(f"{where} must be an object with a string 'type', got {str(node)[:80]}")
    kind = node["type"]
    if kind == "Sequential":
        if depth >= MAX_DEPTH:
            raise _Invalid(f"{where}: Sequentials nested more than {MAX_DEPTH} deep")
        if set(node) != {"type", "layers"} or not isinstance(node["layers"], list):
            raise _Invalid(
                f"{where} (Sequential) must have exactly the keys 'type' and 'layers' (a list)"
            )
        layers = [
            _parse_node(n, f"{where}.{i}", depth + 1, count) for i, n in enumerate(node["layers"])
        ]
        return {"type": "Sequential", "layers": layers}
    layer = LAYER_TYPES.get(kind)
    if layer is None:
        raise _Invalid(f"{where} has unknown layer type {kind[:80]!r}; known types: {_KNOWN}")
    given, expected = set(node) - {"type"}, set(layer.arguments)
    if given != expected:
        raise _Invalid(
            f"{where} ({kind}) needs arguments {sorted(expected)}; "
            f"missing {sorted(expected - given)}, unknown {sorted(map(str, given - expected))[:10]}"
        )
    normalised: dict[str, Any] = {"type": kind}
    for name, check in layer.arguments.items():
        try:
            normalised[name] = check(node[name])
        except _Invalid as error:
            raise _Invalid(f"{where} ({kind}): {name} {error}") from None
    return normalised


def _expected_tensors(node: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str, bool]]:
    """name -> (shape, dtype, is_parameter), named as Module.state_dict() names them."""
    if node["type"] == "Sequential":
        result = {}
        for i, child in enumerate(node["layers"]):
            result.update(_expected_tensors(child, f"{prefix}{i}."))
        return result
    own = LAYER_TYPES[node["type"]].tensors(node)
    return {
        f"{prefix}{name}": (shape, node["dtype"], is_parameter) for name, shape, is_parameter in own
    }


def _build(node: dict) -> nn.Module:
    if node["type"] == "Sequential":
        return nn.Sequential(*(_build(child) for child in node["layers"]))
    return LAYER_TYPES[node["type"]].build(node)


def _leaves(node: dict, prefix: str = "") -> list[dict]:
    if node["type"] == "Sequential":
        return [
            row for i, child in enumerate(node["layers"]) for row in _leaves(child, f"{prefix}{i}.")
        ]
    tensors = LAYER_TYPES[node["type"]].tensors(node)
    arguments = {key: value for key, value in node.items() if key != "type"}
    parameters = sum(math.prod(shape) for _, shape, is_parameter in tensors if is_parameter)
    return [
        {
            "name": prefix.rstrip(".") or "model",
            "type": node["type"],
            "arguments": arguments,
            "parameters": parameters,
        }
    ]


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
def _json_metadata(value: Any, where: str = "metadata") -> Any:
    """User metadata as plain JSON: str keys, finite numbers; arrays and tuples become lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, got {key!r}")
        return {key: _json_metadata(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_metadata(item, f"{where}[{i}]") for i, item in enumerate(value)]
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
    import chainrule  # at call time: chainrule/__init__ may import this module

    if not isinstance(model, nn.Module):
        raise TypeError(f"save expects a chainrule.nn.Module, got {type(model).__name__}")
    architecture = describe_model(model)
    state = model.state_dict()
    expected = _expected_tensors(architecture)
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
    description = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": chainrule.__version__,
        "architecture": architecture,
        "metadata": _json_metadata({} if metadata is None else dict(metadata)),
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
        title = f"chainrule model, format {self.format_version}, chainrule {self.library_version}"
        lines = [f"{self.path}: {title}"]
        for row in self.layers:
            arguments = ", ".join(f"{key}={value!r}" for key, value in row["arguments"].items())
            lines.append(
                f"  {row['name']:<8} {row['type']}({arguments})  {row['parameters']:,} parameters"
            )
        lines.append(f"  {self.num_parameters:,} parameters in all; sha256 {self.sha256}")
        lines += [
            f"  metadata {key}: {json.dumps(value)[:200]}" for key, value in self.metadata.items()
        ]
        return "\n".join(lines)


def _read(path: str | os.PathLike) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """Every check a load makes, in order: layout, format, version, checksum, layers, tensors."""
    name = str(os.fspath(path))
    tensors, header_metadata = load_file(path)

    def fail(defect: str) -> ModelFileError:
        return ModelFileError(name, defect)

    if set(header_metadata) != {METADATA_KEY}:
        raise fail(
            f"not a chainrule model file: __metadata__ has keys {sorted(header_metadata)[:10]}, "
            f"expected only {METADATA_KEY!r}"
        )
    description = parse_json(header_metadata[METADATA_KEY], name, "the chainrule description")
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        found = description.get("format") if isinstance(description, dict) else description
        raise fail(
            f"not a chainrule model file: format {str(found)[:80]!r}, expected {FORMAT_NAME!r}"
        )
    version = description.get("format_version")
    if not _is_int(version) or version < 1:
        raise fail(f"format_version must be a positive integer, got {str(version)[:80]!r}")
    if version > FORMAT_VERSION:
        raise fail(
            f"format version {version} is newer than version {FORMAT_VERSION}, the newest this "
            f"chainrule reads (the file was written by chainrule "
            f"{str(description.get('library_version'))[:40]}); upgrade chainrule to load it"
        )
    if set(description) != _DESCRIPTION_KEYS:
        raise fail(
            f"the description has keys {sorted(description)[:20]}, "
            f"expected {sorted(_DESCRIPTION_KEYS)}"
        )
    sha256 = description["sha256"]
    actual = _checksum(description, tensors)
    if sha256 != actual:
        raise fail(
            f"checksum mismatch: the file was changed or corrupted after saving "
            f"(recorded sha256 {str(sha256)[:64]}, computed {actual})"
        )
    library_version, metadata = description["library_version"], description["metadata"]
    if not isinstance(library_version, str) or not isinstance(metadata, dict):
        raise fail("library_version must be a string and metadata an object")
    try:
        architecture = _parse_node(description["architecture"], "model", 0, [0])
    except _Invalid as error:
        raise fail(f"invalid architecture: {error}") from None
    _check_tensors(fail, _expected_tensors(architecture), tensors)
    layers = _leaves(architecture)
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
            f"tensors do not match the architecture: missing {missing[:20]}, extra {extra[:20]}"
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
    model = _build(info.architecture)
    model.load_state_dict(tensors)
    return model.eval(), info.metadata


def load(path: str | os.PathLike) -> nn.Module:
    """The model saved at `path`, in eval mode (call `.train()` to train on).

    Malformed, corrupt, truncated or foreign files raise ModelFileError naming the file and defect.
    """
    return load_with_metadata(path)[0]
