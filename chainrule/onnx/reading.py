"""ONNX files in: read with size limits, walk the graph as a linear chain of layers (with the
IMPORTERS table), and build the checked architecture; `describe_onnx` for `chainrule info`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from chainrule import nn
from chainrule.architecture import (
    MAX_LAYERS,
    MAX_SIZE,
    ArchitectureError,
    build,
    expected_tensors,
    leaves,
    parse_node,
)
from chainrule.onnx.exporters import MAX_FILE_BYTES, MAX_OPSET, METADATA_KEY
from chainrule.onnx.image_importers import IMAGE_IMPORTERS
from chainrule.onnx.importers import IMPORTERS, LOADABLE, MAX_RANK, OnnxImportError, _Chain, shown
from chainrule.safetensors_format import ModelFileError, parse_json

MIN_IMPORT_OPSET = 13  # Softmax over one axis (before 13 it flattened to 2-D first)
_IMPORTERS = {**IMPORTERS, **IMAGE_IMPORTERS}  # the image layers' BatchNormalization reads both
_LOADABLE = f"{LOADABLE}; Conv, MaxPool, AveragePool, GlobalAveragePool over images"
_DTYPES = {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8")}


def _read_proto(path: str | os.PathLike) -> onnx.ModelProto:
    name = os.fspath(path)
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise OnnxImportError(name, f"{size:,} bytes is over the {MAX_FILE_BYTES:,} limit")
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OnnxImportError(name, f"the file is over the {MAX_FILE_BYTES:,}-byte limit")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError, or its nesting limit
        raise OnnxImportError(name, f"not an ONNX model ({type(error).__name__})") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise OnnxImportError(name, "not an ONNX model (no graph or no opset)")
    return proto


def _walk(proto: onnx.ModelProto, path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The checked architecture and state_dict of the graph's chain of layers."""

    def fail(defect: str) -> OnnxImportError:
        return OnnxImportError(path, defect)

    versions = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    version = versions.get("ai.onnx")
    if version is None or not MIN_IMPORT_OPSET <= version <= MAX_OPSET:
        raise fail(
            f"opset {version} of the standard operations; chainrule loads {MIN_IMPORT_OPSET} to "
            f"{MAX_OPSET} (onnx.version_converter can convert a model)"
        )
    graph = proto.graph
    if len(graph.node) > MAX_LAYERS or len(graph.initializer) > MAX_LAYERS:
        raise fail(f"more than {MAX_LAYERS} nodes or initializers")
    if len(graph.sparse_initializer):
        raise fail("sparse initializers are not supported")
    constants: dict[str, onnx.TensorProto] = {}

    def define_constant(name: str, tensor: onnx.TensorProto) -> None:
        if not name or name in constants:
            raise fail(f"the constant {name[:80]!r} is defined twice or has no name")
        constants[name] = tensor

    for tensor in graph.initializer:
        define_constant(tensor.name, tensor)
    nodes = []
    for node in graph.node:
        standard = node.domain in ("", "ai.onnx")
        if (
            standard
            and node.op_type == "Identity"
            and len(node.input) == 1
            and node.input[0] in constants
        ):
            # torch.onnx writes Identity(initializer) where two layers hold equal tensors.
            if len(node.output) != 1 or node.attribute:
                raise fail(f"node '{shown(node.name)}' (Identity) must have one output")
            define_constant(node.output[0], constants[node.input[0]])
            continue
        if node.op_type != "Constant" or not standard:
            nodes.append(node)
            continue
        value = node.attribute[0] if len(node.attribute) == 1 else None
        if len(node.output) != 1 or value is None or value.type != AttributeProto.TENSOR:
            raise fail(f"node '{shown(node.name)}' (Constant): chainrule reads tensors only")
        define_constant(node.output[0], value.t)

    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise fail(
            f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs; chainrule loads "
            "one input and one output"
        )
    value = inputs[0]
    tensor_type = value.type.tensor_type
    dtype = _DTYPES.get(tensor_type.elem_type)
    if dtype is None:
        raise fail(f"the input {value.name[:80]!r} is not float32 or float64")
    dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else []
    if not 2 <= len(dims) <= MAX_RANK:
        raise fail(f"the input must declare a shape (batch, features...), of rank 2 to {MAX_RANK}")
    if any(d.HasField("dim_value") and not 1 <= d.dim_value <= MAX_SIZE for d in dims):
        raise fail(f"the input declares sizes {[d.dim_value for d in dims]}")
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])

    uses = Counter(name for node in nodes for name in node.input if name)
    uses[graph.output[0].name] += 1
    defined = {*constants, value.name}
    chain = _Chain(path, dtype.newbyteorder("="), constants, value.name, shape)
    layers: list[dict] = []
    state: dict[str, np.ndarray] = {}
    i = 0
    while i < len(nodes):
        node = nodes[i]
        importer = _IMPORTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if importer is None:
            domain = f"{shown(node.domain)}." if node.domain else ""
            raise chain.fail(
                node,
                f"{domain}{shown(node.op_type)} is not an operation chainrule has; it loads "
                f"{_LOADABLE}",
            )
        layer, tensors, used, shape = importer(chain, nodes, i)
        group = nodes[i : i + used]
        read = Counter(name for member in group for name in member.input if name)
        for member in group:
            if not member.output or not member.output[0]:
                raise chain.fail(member, "has no output")
            for name in member.output:
                if name in defined:
                    raise chain.fail(member, f"defines {name[:80]!r} a second time")
                defined.add(name)
            if any(uses[name] for name in member.output[1:] if name):
                raise chain.fail(
                    member, "its extra outputs are read; chainrule loads inference graphs"
                )
        for name in [chain.x, *(member.output[0] for member in group[:-1])]:
            if uses[name] != read[name]:
                raise chain.fail(
                    group[-1],
                    f"{name[:80]!r} is also read elsewhere; chainrule loads a linear chain",
                )
        state.update({f"{len(layers)}.{key}": array for key, array in tensors.items()})
        layers.append(layer)
        chain.x, chain.shape = group[-1].output[0], shape
        i += used
    if chain.x != graph.output[0].name or uses[chain.x] != 1:
        raise fail(
            f"the output {graph.output[0].name[:80]!r} is not the end of the chain of layers "
            f"({chain.x[:80]!r}); chainrule loads a linear chain"
        )
    try:
        architecture = parse_node({"type": "Sequential", "layers": layers}, "model", 0, [0])
    except ArchitectureError as error:
        raise fail(f"the layers do not make a chainrule model: {error}") from None
    expected = {name: spec[:2] for name, spec in expected_tensors(architecture).items()}
    actual = {name: (array.shape, array.dtype.name) for name, array in state.items()}
    if actual != expected:  # the importers above build both; a mismatch is a bug here
        raise fail(f"internal error: tensors {actual} do not match the layers {expected}")
    return architecture, state


def _metadata(proto: onnx.ModelProto, path: str) -> dict:
    texts = [entry.value for entry in proto.metadata_props if entry.key == METADATA_KEY]
    if not texts:
        return {}
    try:
        metadata = parse_json(texts[-1], path, f"metadata_props {METADATA_KEY!r}")
    except ModelFileError as error:
        raise OnnxImportError(path, error.defect) from None
    if len(texts) > 1 or not isinstance(metadata, dict):
        raise OnnxImportError(path, f"metadata_props {METADATA_KEY!r} must be one JSON object")
    return metadata


def load_with_metadata(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    """(model, metadata) from an ONNX file: the metadata `export` kept, or {} for other files."""
    name = os.fspath(path)
    proto = _read_proto(path)
    architecture, state = _walk(proto, name)
    metadata = _metadata(proto, name)
    model = build(architecture)
    model.load_state_dict(state)
    return model.eval(), metadata


def load(path: str | os.PathLike) -> nn.Sequential:
    """The network in an ONNX file as an `nn.Sequential` in eval mode: it trains, saves, explains.

    The graph must be a linear chain, from its one input to its one output, of operations chainrule
    has: Gemm, MatMul (+Add), Relu, Sigmoid, Tanh, LeakyRelu, PRelu with one slope, Gelu (or the
    nodes opsets before 20 write for it), Softplus, Softmax, Flatten, Reshape to (batch, features),
    BatchNormalization and LayerNormalization (read as affine layers), Identity, Dropout; over
    images Conv (1-D, 2-D), MaxPool, AveragePool, GlobalAveragePool and BatchNormalization. Anything
    else, and any malformed or hostile file (sizes that disagree with the data, external data,
    files over MAX_FILE_BYTES), raises OnnxImportError naming the node or defect.
    """
    return load_with_metadata(path)[0]


def _value_text(value: onnx.ValueInfoProto) -> str:
    tensor_type = value.type.tensor_type
    element = {**_DTYPES, TensorProto.UNDEFINED: "?"}.get(tensor_type.elem_type)
    element = f"type {tensor_type.elem_type}" if element is None else str(element)
    dims = [
        str(d.dim_value) if d.HasField("dim_value") else shown(d.dim_param or "?")
        for d in tensor_type.shape.dim[: MAX_RANK + 1]
    ]
    return f"{shown(value.name)}: {element} [{', '.join(dims)}]"


def describe_onnx(path: str | os.PathLike) -> str:
    """What `chainrule info` shows for an ONNX file: its inputs, operations and parameter count,
    and the chainrule layers it loads as (or why it does not load). Builds no model."""
    name = os.fspath(path)
    proto = _read_proto(path)
    graph = proto.graph
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    producer = shown(f"{proto.producer_name} {proto.producer_version}".strip()) or "unknown"
    lines = [f"{name}: ONNX model, IR version {proto.ir_version}, opset {opsets}, from {producer}"]
    lines += [f"  input  {_value_text(v)}" for v in graph.input[:10]]
    lines += [f"  output {_value_text(v)}" for v in graph.output[:10]]
    operations = Counter(node.op_type for node in graph.node)
    counted = ", ".join(f"{shown(op)} x{n}" for op, n in operations.most_common(20))
    values = sum(math.prod(t.dims) for t in graph.initializer if min(t.dims, default=0) >= 0)
    lines.append(f"  {len(graph.node)} nodes ({counted}); {values:,} values in initializers")
    try:
        architecture, _ = _walk(proto, name)
    except OnnxImportError as error:
        lines.append(f"  chainrule cannot load it: {error.defect}")
    else:
        lines.append("  loads as a chainrule Sequential of:")
        for row in leaves(architecture):
            arguments = ", ".join(f"{key}={value!r}" for key, value in row["arguments"].items())
            lines.append(
                f"  {row['name']:<8} {row['type']}({arguments})  {row['parameters']:,} parameters"
            )
    try:
        metadata = _metadata(proto, name)
    except OnnxImportError as error:
        metadata = {"(unreadable)": error.defect}
    lines += [
        f"  metadata {shown(key)}: {json.dumps(value)[:200]}" for key, value in metadata.items()
    ]
    return "\n".join(lines)
