"""ONNX export and import through the `onnx` package (`pip install "chainrule[onnx]"`).

`export` writes a network for ONNX Runtime and other frameworks; `load` reads a linear chain of the
operations chainrule has back into an `nn.Sequential`, checking every size before it allocates.
The core never imports this module.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper
except ImportError:
    raise ImportError(
        'chainrule.onnx needs the onnx package: pip install "chainrule[onnx]"'
    ) from None

import chainrule
from chainrule import nn
from chainrule.architecture import (
    MAX_LAYERS,
    MAX_SIZE,
    _build,
    _expected_tensors,
    _Invalid,
    _leaves,
    _parse_node,
)
from chainrule.atomic import atomic_write
from chainrule.io import _json_metadata
from chainrule.safetensors_format import ModelFileError, parse_json
from chainrule.tensor import Tensor, no_grad

__all__ = [
    "EXPORTERS",
    "IMPORTERS",
    "OnnxImportError",
    "describe_onnx",
    "export",
    "infer_input_shape",
    "load",
    "load_with_metadata",
]

MIN_EXPORT_OPSET = 17  # LayerNormalization
MIN_IMPORT_OPSET = 13  # Softmax over one axis (before 13 it flattened to 2-D first)
MAX_OPSET = onnx.defs.onnx_opset_version()  # newer opsets may change what an operation means
MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit; larger models need external data, refused
MAX_RANK = 8
METADATA_KEY = "chainrule.metadata"  # metadata_props entry: the JSON metadata of a model file
_DTYPES = {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8")}
_ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


# ================================ export ========================================================
class _Graph:
    """The graph being written: its nodes and initializers, and the tensor the chain has reached."""

    def __init__(self, dtype: np.dtype, opset: int, input_name: str) -> None:
        self.dtype = dtype
        self.opset = opset
        self.x = input_name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: Any, dtype: Any = None) -> str:
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(numpy_helper.from_array(array.copy(order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], where: str, **attributes: Any) -> str:
        """Append `op` and return its output's name (the chain moves on only through `apply`)."""
        name = f"/{where}/{op}_{len(self.nodes)}" if where else f"/{op}_{len(self.nodes)}"
        output = f"{name}_output"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def apply(self, op: str, inputs: list[str], where: str, **attributes: Any) -> None:
        self.x = self.node(op, inputs, where, **attributes)


def _name(where: str, leaf: str) -> str:
    return f"{where}.{leaf}" if where else leaf


Exporter = Callable[[Any, _Graph, str], None]


def _single(op: str) -> Exporter:
    def export_layer(layer: Any, graph: _Graph, where: str) -> None:
        graph.apply(op, [graph.x], where)

    return export_layer


def _export_linear(layer: nn.Linear, graph: _Graph, where: str) -> None:
    inputs = [graph.x, graph.constant(_name(where, "weight"), layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(_name(where, "bias"), layer.bias.data))
    graph.apply("Gemm", inputs, where, transB=1)


def _export_leaky_relu(layer: nn.LeakyReLU, graph: _Graph, where: str) -> None:
    slope = layer.negative_slope
    if graph.dtype == np.float32 or float(np.float32(slope)) == slope:
        graph.apply("LeakyRelu", [graph.x], where, alpha=slope)
    else:
        # LeakyRelu's alpha is a float32 attribute; a float64 slope such as 0.01 would be off by
        # 2e-10 of x. PRelu takes its slope as a tensor, so the float64 slope stays exact.
        slope_name = graph.constant(_name(where, "negative_slope"), [slope])
        graph.apply("PRelu", [graph.x, slope_name], where)


_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _export_gelu(layer: nn.GELU, graph: _Graph, where: str) -> None:
    if graph.opset >= 20:
        graph.apply("Gelu", [graph.x], where, approximate=layer.approximate)
        return
    # NOTE: opsets 17 to 19 have no Gelu; compose it in the order chainrule computes it, so the
    # graph rounds as the model does (and `load` recognises exactly these nodes as one GELU).
    x = graph.x
    one = graph.constant(_name(where, "one"), 1.0)
    half = graph.constant(_name(where, "half"), 0.5)
    if layer.approximate == "none":  # z · 0.5·(1 + erf(z/√2))
        scaled = graph.node("Div", [x, graph.constant(_name(where, "sqrt_2"), _SQRT_2)], where)
        cdf = graph.node(
            "Mul",
            [graph.node("Add", [graph.node("Erf", [scaled], where), one], where), half],
            where,
        )
        graph.apply("Mul", [x, cdf], where)
        return
    # 0.5·z · (1 + tanh(√(2/π)·(z + 0.044715·z³)))
    cube = graph.node("Pow", [x, graph.constant(_name(where, "three"), 3.0)], where)
    inner = graph.node("Mul", [cube, graph.constant(_name(where, "coefficient"), 0.044715)], where)
    inner = graph.node("Add", [x, inner], where)
    inner = graph.node(
        "Mul", [inner, graph.constant(_name(where, "sqrt_2_over_pi"), _SQRT_2_OVER_PI)], where
    )
    t = graph.node("Add", [graph.node("Tanh", [inner], where), one], where)
    graph.apply("Mul", [graph.node("Mul", [x, half], where), t], where)


def _export_softmax(layer: nn.Softmax, graph: _Graph, where: str) -> None:
    graph.apply("Softmax", [graph.x], where, axis=layer.dim)


def _export_flatten(layer: nn.Flatten, graph: _Graph, where: str) -> None:
    graph.apply("Flatten", [graph.x], where, axis=1)


def _export_dropout(layer: nn.Dropout, graph: _Graph, where: str) -> None:
    # An identity at inference; the node keeps p, so a loaded model trains with the same dropout.
    ratio = graph.constant(_name(where, "p"), layer.p, np.float64)
    graph.apply("Dropout", [graph.x, ratio], where)


def _affine_inputs(layer: Any, graph: _Graph, where: str, shape: tuple[int, ...]) -> list[str]:
    if layer.weight is not None:
        return [
            graph.constant(_name(where, "weight"), layer.weight.data),
            graph.constant(_name(where, "bias"), layer.bias.data),
        ]
    # ONNX requires a scale (and BatchNormalization a shift): the identity ones. `load` reads
    # them back as affine parameters holding 1 and 0, the same function.
    return [
        graph.constant(_name(where, "unit_scale"), np.ones(shape)),
        graph.constant(_name(where, "zero_shift"), np.zeros(shape)),
    ]


def _export_batch_norm(layer: nn.BatchNorm1d, graph: _Graph, where: str) -> None:
    inputs = [graph.x, *_affine_inputs(layer, graph, where, (layer.num_features,))]
    inputs.append(graph.constant(_name(where, "running_mean"), layer.running_mean))
    inputs.append(graph.constant(_name(where, "running_var"), layer.running_var))
    # ONNX's momentum weighs the running value, PyTorch's (and ours) the batch value.
    graph.apply(
        "BatchNormalization", inputs, where, epsilon=layer.eps, momentum=1.0 - layer.momentum
    )


def _export_layer_norm(layer: nn.LayerNorm, graph: _Graph, where: str) -> None:
    inputs = [graph.x, *_affine_inputs(layer, graph, where, layer.normalized_shape)]
    # stash_type is the precision of the mean and variance: the model's own.
    stash = _ELEMENT_TYPES[graph.dtype]
    axis = -len(layer.normalized_shape)
    graph.apply("LayerNormalization", inputs, where, axis=axis, epsilon=layer.eps, stash_type=stash)


def _export_sequential(layer: nn.Sequential, graph: _Graph, where: str) -> None:
    for i, child in enumerate(layer):
        _export_module(child, graph, _name(where, str(i)))


# One function per layer type, keyed by the exact type; conv layers slot in here.
EXPORTERS: dict[type, Exporter] = {
    nn.Sequential: _export_sequential,
    nn.Linear: _export_linear,
    nn.Sigmoid: _single("Sigmoid"),
    nn.Tanh: _single("Tanh"),
    nn.ReLU: _single("Relu"),
    nn.Softplus: _single("Softplus"),
    nn.Identity: _single("Identity"),
    nn.LeakyReLU: _export_leaky_relu,
    nn.GELU: _export_gelu,
    nn.Softmax: _export_softmax,
    nn.Flatten: _export_flatten,
    nn.Dropout: _export_dropout,
    nn.BatchNorm1d: _export_batch_norm,
    nn.LayerNorm: _export_layer_norm,
}


def _export_module(module: nn.Module, graph: _Graph, where: str) -> None:
    exporter = EXPORTERS.get(type(module))
    if exporter is None:
        known = ", ".join(sorted(kind.__name__ for kind in EXPORTERS))
        raise TypeError(
            f"cannot export {where or 'the model'}: {type(module).__name__} has no ONNX export; "
            f"exportable layers: {known} (exact types, not subclasses)"
        )
    exporter(module, graph, where)


def _model_dtype(model: nn.Module, example: np.ndarray) -> np.dtype:
    dtypes = {parameter.dtype for parameter in model.parameters()}
    dtypes |= {np.asarray(buffer).dtype for _, buffer in model.named_buffers()}
    dtypes |= {m._dtype for m in model.modules() if type(m) is nn.LayerNorm}
    if len(dtypes) > 1:
        raise ValueError(f"cannot export a model of mixed dtypes {sorted(map(str, dtypes))}")
    dtype = np.dtype(dtypes.pop()) if dtypes else example.dtype
    if dtype not in _ELEMENT_TYPES:
        dtype = np.dtype(np.float32)
    return dtype


def _one_name(names: Sequence[str] | str, what: str) -> str:
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != 1 or not isinstance(names[0], str) or not names[0]:
        raise ValueError(f"export: {what} must be one non-empty name, got {names!r}")
    return names[0]


def export(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: Any,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = MIN_EXPORT_OPSET,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write `model` (evaluated as in eval mode) as an ONNX file for ONNX Runtime, like
    `torch.onnx.export`.

    `example_input` (batch, features...) fixes the feature shape; the batch dimension stays
    dynamic. The graph computes in the model's dtype (float32 or float64). `metadata` (JSON) is kept
    in the file's metadata_props, as `chainrule.save` keeps it. The file is checked with
    `onnx.checker.check_model(full_check=True)` and written atomically.

    >>> model = nn.Sequential(nn.Linear(4, 2), nn.Softmax())
    >>> export(model, "model.onnx", np.zeros((1, 4)))  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export expects a chainrule.nn.Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"export: opset must be an integer, got {opset!r}")
    if not MIN_EXPORT_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"export: opset must be from {MIN_EXPORT_OPSET} to {MAX_OPSET} (this onnx package's "
            f"newest), got {opset}"
        )
    input_name = _one_name(input_names, "input_names")
    output_name = _one_name(output_names, "output_names")
    if input_name == output_name:
        raise ValueError(f"export: the input and output are both named {input_name!r}")
    raw = example_input.data if isinstance(example_input, Tensor) else example_input
    example = np.asarray(raw)
    if example.dtype.kind not in "fiu" or example.ndim < 2:
        raise ValueError(
            f"export: example_input must be numbers of shape (batch, features...), got "
            f"{example.dtype} of shape {example.shape}"
        )
    dtype = _model_dtype(model, example)
    example = example.astype(dtype)
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with no_grad():
            output = np.asarray(model(example).data)
    finally:
        for module, training in modes:
            module.training = training
    if output.ndim < 1 or output.shape[0] != example.shape[0]:
        raise ValueError(
            f"export: the model maps a batch of shape {example.shape} to {output.shape}; the "
            f"first dimension must stay the batch"
        )

    graph = _Graph(dtype, opset, input_name)
    _export_module(model, graph, "")
    if graph.nodes:
        graph.nodes[-1].output[0] = output_name
    else:  # an empty Sequential
        graph.nodes.append(helper.make_node("Identity", [input_name], [output_name]))
    element = _ELEMENT_TYPES[dtype]
    proto = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "chainrule",
            [helper.make_tensor_value_info(input_name, element, ["batch", *example.shape[1:]])],
            [helper.make_tensor_value_info(output_name, element, ["batch", *output.shape[1:]])],
            graph.initializers,
        ),
        producer_name="chainrule",
        producer_version=chainrule.__version__,
        opset_imports=[helper.make_opsetid("", opset)],
    )
    # The oldest IR version that carries this opset: older runtimes read the file too.
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    if metadata is not None:
        text = json.dumps(_json_metadata(dict(metadata)), allow_nan=False)
        helper.set_model_props(proto, {METADATA_KEY: text})
    size = proto.ByteSize()
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"export: the model needs {size:,} bytes; an ONNX file holds at most "
            f"{MAX_FILE_BYTES:,} without external data, which chainrule does not write"
        )
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, proto.SerializeToString())


def infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The feature shape (without the batch) the model's first sized layer takes.

    >>> infer_input_shape(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    (4,)
    """
    for module in model.modules():
        if type(module) is nn.Linear:
            return (module.in_features,)
        if type(module) is nn.BatchNorm1d:
            return (module.num_features,)
        if type(module) is nn.LayerNorm:
            return tuple(module.normalized_shape)
        if type(module) is nn.Flatten:
            break
    raise ValueError(
        "cannot tell the model's input shape from its layers; give it (e.g. --input-shape 1,28,28)"
    )


# ================================ import ========================================================
class OnnxImportError(ModelFileError):
    """An ONNX file chainrule cannot or will not load: malformed, hostile, or using operations
    chainrule does not have. A ValueError whose message starts with the file's path."""


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


def _short_float(value: float) -> float:
    """A float32 attribute as the shortest decimal that gives it back: 1e-05, not 9.99999974e-06."""
    return float(str(np.float32(value)))


_ATTRIBUTE_TYPES = {
    float: AttributeProto.FLOAT,
    int: AttributeProto.INT,
    str: AttributeProto.STRING,
}


@dataclass
class _Chain:
    """Where the import walk stands: the tensor reached and its shape without the batch."""

    path: str
    dtype: np.dtype
    constants: dict[str, onnx.TensorProto]
    x: str
    shape: tuple[int | None, ...]

    def fail(self, node: onnx.NodeProto, defect: str) -> OnnxImportError:
        return OnnxImportError(self.path, f"node {node.name!r} ({node.op_type}): {defect}")

    def attributes(self, node: onnx.NodeProto, defaults: dict[str, Any]) -> dict[str, Any]:
        """The node's attributes over `defaults`; an attribute it does not list is refused."""
        values = dict(defaults)
        for attribute in node.attribute:
            default = defaults.get(attribute.name)
            if attribute.name not in defaults:
                raise self.fail(node, f"attribute {attribute.name[:80]!r} is not supported")
            if attribute.type != _ATTRIBUTE_TYPES[type(default)]:
                raise self.fail(node, f"attribute {attribute.name!r} has the wrong type")
            if attribute.type == AttributeProto.FLOAT:
                values[attribute.name] = _short_float(attribute.f)
            elif attribute.type == AttributeProto.INT:
                values[attribute.name] = int(attribute.i)
            else:
                values[attribute.name] = attribute.s.decode("utf-8", "replace")
        return values

    def inputs(self, node: onnx.NodeProto, least: int, most: int) -> list[str]:
        """The node's inputs, the first of which must be the chain's tensor."""
        names = list(node.input)
        while names and not names[-1]:  # trailing optional inputs left out
            names.pop()
        if not least <= len(names) <= most:
            raise self.fail(node, f"takes {least} to {most} inputs, has {len(names)}")
        if names[0] != self.x:
            raise self.fail(
                node,
                f"reads {names[0][:80]!r}, but the chain has reached {self.x[:80]!r}; chainrule "
                "loads a linear chain of layers from the one input to the one output",
            )
        return names

    def constant(
        self, node: onnx.NodeProto, name: str, dtype: Any = None, ndim: tuple[int, ...] = (0, 1, 2)
    ) -> np.ndarray:
        """A weight: an initializer or Constant, of the model's dtype, sizes checked before use."""
        tensor = self.constants.get(name)
        if tensor is None:
            raise self.fail(node, f"input {name[:80]!r} is not a constant (an initializer)")
        array = _array(tensor, lambda defect: self.fail(node, f"constant {name[:80]!r}: {defect}"))
        if array.dtype != np.dtype(dtype or self.dtype):
            raise self.fail(
                node, f"constant {name[:80]!r} is {array.dtype}, the graph computes in {self.dtype}"
            )
        if array.ndim not in ndim:
            raise self.fail(node, f"constant {name[:80]!r} has shape {array.shape}")
        return array

    def scalar(self, node: onnx.NodeProto, name: str, dtype: Any = None) -> float:
        array = self.constant(node, name, dtype, ndim=(0, 1))
        if array.size != 1:
            raise self.fail(node, f"constant {name[:80]!r} must hold one number")
        return float(array.reshape(()))

    def features(self, node: onnx.NodeProto) -> int | None:
        """The feature count of a (batch, features) tensor; refuses any other rank."""
        if len(self.shape) != 1:
            raise self.fail(
                node, f"needs (batch, features) inputs, the chain has rank {len(self.shape) + 1}"
            )
        return self.shape[0]


_ARRAY_TYPES = {
    TensorProto.FLOAT: (np.dtype("<f4"), "float_data"),
    TensorProto.DOUBLE: (np.dtype("<f8"), "double_data"),
    TensorProto.INT64: (np.dtype("<i8"), "int64_data"),
    TensorProto.BOOL: (np.dtype("?"), "int32_data"),
}


def _array(tensor: onnx.TensorProto, fail: Callable[[str], Exception]) -> np.ndarray:
    """The tensor's values, allocated only after its sizes agree with the bytes the file holds."""
    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        raise fail("refers to external data; chainrule loads self-contained ONNX files only")
    if tensor.HasField("segment"):
        raise fail("is segmented; chainrule does not load segmented tensors")
    kind = _ARRAY_TYPES.get(tensor.data_type)
    if kind is None:
        raise fail(f"has data type {tensor.data_type}; chainrule reads float, double and int64")
    dtype, field = kind
    dims = list(tensor.dims)
    if len(dims) > MAX_RANK or any(not 0 <= d <= MAX_SIZE for d in dims):
        raise fail(f"declares shape {dims[:10]}")
    count = math.prod(dims)
    values = getattr(tensor, field)
    if tensor.raw_data or not len(values):
        if len(tensor.raw_data) != count * dtype.itemsize:
            raise fail(
                f"declares shape {dims} ({count:,} values) but holds {len(tensor.raw_data):,} bytes"
            )
        array = np.frombuffer(tensor.raw_data, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        if len(values) != count:
            raise fail(f"declares shape {dims} ({count:,} values) but holds {len(values):,}")
        array = np.array(values, dtype=dtype.newbyteorder("="))
    array = array.reshape(dims)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise fail("contains NaN or infinite values")
    return array


# An importer reads the chain's next layer starting at nodes[i]: it returns the layer's architecture
# node, its tensors (by state_dict name within the layer), how many nodes it used, and the shape
# (without the batch) it leaves.
Imported = tuple[dict, dict[str, np.ndarray], int, tuple[int | None, ...]]
Importer = Callable[[_Chain, list[onnx.NodeProto], int], Imported]


def _simple(kind: str) -> Importer:
    def read(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
        chain.inputs(nodes[i], 1, 1)
        chain.attributes(nodes[i], {})
        return {"type": kind}, {}, 1, chain.shape

    return read


def _linear(weight: np.ndarray, bias: np.ndarray | None, dtype: np.dtype) -> tuple[dict, dict]:
    out_features, in_features = weight.shape
    node = {
        "type": "Linear",
        "in_features": in_features,
        "out_features": out_features,
        "bias": bias is not None,
        "dtype": dtype.name,
    }
    tensors = {"weight": np.ascontiguousarray(weight)}
    if bias is not None:
        tensors["bias"] = bias
    return node, tensors


def _bias(chain: _Chain, node: onnx.NodeProto, name: str, out_features: int) -> np.ndarray:
    """A bias of shape (), (1,), (out,) or (1, out), as the (out,) vector it broadcasts to."""
    bias = chain.constant(node, name)
    if bias.shape not in ((), (1,), (out_features,), (1, out_features)):
        raise chain.fail(node, f"bias of shape {bias.shape} does not fit {out_features} outputs")
    return np.broadcast_to(bias.reshape(-1), (out_features,)).copy()


def _import_gemm(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 2, 3)
    a = chain.attributes(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if a["transA"]:
        raise chain.fail(node, "transA=1 would transpose the batch; chainrule cannot load it")
    weight = chain.constant(node, names[1], ndim=(2,))
    weight = weight if a["transB"] else weight.T
    if a["alpha"] != 1.0:  # folded into the weight: the same function, rounded once more
        weight = (weight * a["alpha"]).astype(chain.dtype)
    bias = None
    if len(names) == 3 and a["beta"] != 0.0:
        bias = _bias(chain, node, names[2], weight.shape[0])
        if a["beta"] != 1.0:
            bias = (bias * a["beta"]).astype(chain.dtype)
    return _linear_layer(chain, node, weight, bias, 1)


def _linear_layer(chain: _Chain, node: Any, weight: Any, bias: Any, used: int) -> Imported:
    features = chain.features(node)
    if features not in (None, weight.shape[1]):
        raise chain.fail(node, f"takes {weight.shape[1]} features, the chain has {features}")
    layer, tensors = _linear(weight, bias, chain.dtype)
    return layer, tensors, used, (weight.shape[0],)


def _import_matmul(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 2, 2)
    chain.attributes(node, {})
    weight = chain.constant(node, names[1], ndim=(2,)).T
    following = nodes[i + 1] if i + 1 < len(nodes) else None
    if following is not None and following.op_type == "Add" and node.output[0] in following.input:
        # MatMul then Add of a constant vector: one Linear with a bias.
        others = [name for name in following.input if name != node.output[0]]
        if len(following.input) == 2 and len(others) == 1 and others[0] in chain.constants:
            bias = _bias(chain, following, others[0], weight.shape[0])
            return _linear_layer(chain, node, weight, bias, 2)
    return _linear_layer(chain, node, weight, None, 1)


def _import_leaky_relu(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    slope = chain.attributes(nodes[i], {"alpha": 0.01})["alpha"]
    return {"type": "LeakyReLU", "negative_slope": slope}, {}, 1, chain.shape


def _import_prelu(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    names = chain.inputs(nodes[i], 2, 2)
    chain.attributes(nodes[i], {})
    slope = chain.constant(nodes[i], names[1])
    if slope.size != 1:
        raise chain.fail(
            nodes[i], "a slope per channel is not a layer chainrule has (one slope is)"
        )
    return {"type": "LeakyReLU", "negative_slope": float(slope.reshape(()))}, {}, 1, chain.shape


def _import_gelu(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    approximate = chain.attributes(nodes[i], {"approximate": "none"})["approximate"]
    return {"type": "GELU", "approximate": approximate}, {}, 1, chain.shape


# GELU as opsets before 20 write it: (op, inputs), with "x" the layer's input, an int k the output
# of the pattern's k-th node, and a float a scalar constant. Add and Mul match either input order.
_GELU_PATTERNS = {
    "none": [  # chainrule: z · 0.5·(1 + erf(z/√2))
        ("Div", ("x", _SQRT_2)),
        ("Erf", (0,)),
        ("Add", (1, 1.0)),
        ("Mul", (2, 0.5)),
        ("Mul", ("x", 3)),
    ],
    "none ": [  # torch.onnx before opset 20: (z · (1 + erf(z/√2))) · 0.5
        ("Div", ("x", _SQRT_2)),
        ("Erf", (0,)),
        ("Add", (1, 1.0)),
        ("Mul", ("x", 2)),
        ("Mul", (3, 0.5)),
    ],
    "tanh": [  # chainrule: 0.5·z · (1 + tanh(√(2/π)·(z + 0.044715·z³)))
        ("Pow", ("x", 3.0)),
        ("Mul", (0, 0.044715)),
        ("Add", ("x", 1)),
        ("Mul", (2, _SQRT_2_OVER_PI)),
        ("Tanh", (3,)),
        ("Add", (4, 1.0)),
        ("Mul", ("x", 0.5)),
        ("Mul", (6, 5)),
    ],
}


def _matches(chain: _Chain, pattern: list, nodes: list[onnx.NodeProto], i: int) -> bool:
    if i + len(pattern) > len(nodes):
        return False
    for k, (op, wanted) in enumerate(pattern):
        node = nodes[i + k]
        if node.op_type != op or node.domain not in ("", "ai.onnx") or node.attribute:
            return False
        if len(node.input) != len(wanted) or len(node.output) != 1:
            return False
        orders = (
            [list(node.input), list(node.input)[::-1]] if op in ("Add", "Mul") else [node.input]
        )
        if not any(_inputs_match(chain, node, order, wanted, nodes, i) for order in orders):
            return False
    return True


def _inputs_match(
    chain: _Chain, node: Any, names: list, wanted: tuple, nodes: list, i: int
) -> bool:
    for name, want in zip(names, wanted):
        if want == "x":
            if name != chain.x:
                return False
        elif isinstance(want, int):
            if name != nodes[i + want].output[0]:
                return False
        else:
            tensor = chain.constants.get(name)
            if tensor is None or tensor.data_type != _ELEMENT_TYPES[chain.dtype]:
                return False
            value = chain.scalar(node, name)
            if value != float(chain.dtype.type(want)):
                return False
    return True


def _import_gelu_pattern(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    for name, pattern in _GELU_PATTERNS.items():
        if _matches(chain, pattern, nodes, i):
            approximate = name.strip()
            return {"type": "GELU", "approximate": approximate}, {}, len(pattern), chain.shape
    raise chain.fail(
        nodes[i], "is not an operation chainrule has (outside the GELU patterns it recognises)"
    )


def _import_softmax(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    axis = chain.attributes(nodes[i], {"axis": -1})["axis"]
    rank = len(chain.shape) + 1
    if not -rank <= axis < rank:
        raise chain.fail(nodes[i], f"axis {axis} is outside a rank-{rank} tensor")
    return {"type": "Softmax", "dim": axis}, {}, 1, chain.shape


def _flattened(shape: tuple[int | None, ...]) -> tuple[int | None]:
    return (None,) if None in shape else (math.prod(shape),)


def _import_flatten(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    axis = chain.attributes(nodes[i], {"axis": 1})["axis"]
    rank = len(chain.shape) + 1
    if axis not in (1, 1 - rank):
        raise chain.fail(nodes[i], f"axis {axis}: chainrule flattens to (batch, features) only")
    return {"type": "Flatten"}, {}, 1, _flattened(chain.shape)


def _import_reshape(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 2, 2)
    if chain.attributes(node, {"allowzero": 0})["allowzero"]:
        raise chain.fail(node, "allowzero=1 is not supported")
    target = chain.constant(node, names[1], np.int64, ndim=(1,)).tolist()
    (features,) = _flattened(chain.shape)
    # (batch, features) from 0 (keep the batch) or -1 (infer it, given the feature count).
    keeps_batch = len(target) == 2 and (
        target in ([0, -1], [0, features]) or (features is not None and target == [-1, features])
    )
    if not keeps_batch:
        raise chain.fail(node, f"reshape to {target[:10]}: chainrule loads only (batch, features)")
    return {"type": "Flatten"}, {}, 1, (features,)


def _import_dropout(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 1, 3)
    chain.attributes(node, {"seed": 0})
    p = 0.5
    if len(names) >= 2 and names[1]:
        tensor = chain.constants.get(names[1])
        dtype = _ARRAY_TYPES.get(tensor.data_type, (None,))[0] if tensor is not None else None
        p = chain.scalar(node, names[1], dtype)
        p = _short_float(p) if dtype == np.float32 else p
    if len(names) == 3 and chain.constant(node, names[2], np.bool_, ndim=(0, 1)).any():
        raise chain.fail(node, "training_mode is on; chainrule loads graphs for inference")
    return {"type": "Dropout", "p": p}, {}, 1, chain.shape


def _import_batch_norm(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 5, 5)
    a = chain.attributes(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
    if a["training_mode"]:
        raise chain.fail(node, "training_mode=1; chainrule loads graphs for inference")
    features = chain.features(node)
    arrays = [chain.constant(node, name, ndim=(1,)) for name in names[1:]]
    size = arrays[0].shape[0]
    if any(array.shape != (size,) for array in arrays) or features not in (None, size):
        raise chain.fail(node, f"scale, bias, mean and variance must all be ({features},)")
    layer = {
        "type": "BatchNorm1d",
        "num_features": size,
        "eps": a["epsilon"],
        "momentum": _short_float(1.0 - a["momentum"]),  # ONNX's weighs the running value
        "affine": True,
        "dtype": chain.dtype.name,
    }
    tensors = dict(zip(["weight", "bias", "running_mean", "running_var"], arrays))
    return layer, tensors, 1, (size,)


def _import_layer_norm(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 2, 3)
    a = chain.attributes(node, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    rank = len(chain.shape) + 1
    k = rank - a["axis"] if a["axis"] >= 0 else -a["axis"]
    if not 1 <= k < rank:
        raise chain.fail(node, f"axis {a['axis']} must normalise dimensions after the batch")
    scale = chain.constant(node, names[1], ndim=tuple(range(1, MAX_RANK + 1)))
    shape = chain.shape[-k:]
    bias = chain.constant(node, names[2], ndim=(scale.ndim,)) if len(names) == 3 else None
    fits = scale.ndim == k and all(n in (None, m) for n, m in zip(shape, scale.shape))
    if not fits or (bias is not None and bias.shape != scale.shape):
        raise chain.fail(node, f"scale and bias must have the normalised shape {shape}")
    layer = {
        "type": "LayerNorm",
        "normalized_shape": list(scale.shape),
        "eps": a["epsilon"],
        "elementwise_affine": True,
        "dtype": chain.dtype.name,
    }
    bias = np.zeros_like(scale) if bias is None else bias
    return layer, {"weight": scale, "bias": bias}, 1, (*chain.shape[:-k], *scale.shape)


# One function per ONNX operation, by op_type; a node whose operation is not here is refused.
IMPORTERS: dict[str, Importer] = {
    "Gemm": _import_gemm,
    "MatMul": _import_matmul,
    "Relu": _simple("ReLU"),
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("Tanh"),
    "Softplus": _simple("Softplus"),
    "Identity": _simple("Identity"),
    "LeakyRelu": _import_leaky_relu,
    "PRelu": _import_prelu,
    "Gelu": _import_gelu,
    "Div": _import_gelu_pattern,
    "Pow": _import_gelu_pattern,
    "Softmax": _import_softmax,
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Dropout": _import_dropout,
    "BatchNormalization": _import_batch_norm,
    "LayerNormalization": _import_layer_norm,
}


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
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        value = node.attribute[0] if len(node.attribute) == 1 else None
        if len(node.output) != 1 or value is None or value.type != AttributeProto.TENSOR:
            raise fail(f"node {node.name!r} (Constant): chainrule reads tensor constants only")
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
        importer = IMPORTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if importer is None:
            domain = f"{node.domain}." if node.domain else ""
            raise chain.fail(
                node,
                f"{domain}{node.op_type[:80]} is not an operation chainrule has; it loads "
                f"{', '.join(sorted(set(IMPORTERS) - {'Div', 'Pow'}))} (and MatMul+Add, and the "
                "nodes opsets before 20 write for GELU)",
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
        architecture = _parse_node({"type": "Sequential", "layers": layers}, "model", 0, [0])
    except _Invalid as error:
        raise fail(f"the layers do not make a chainrule model: {error}") from None
    expected = {name: spec[:2] for name, spec in _expected_tensors(architecture).items()}
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
    model = _build(architecture)
    model.load_state_dict(state)
    return model.eval(), metadata


def load(path: str | os.PathLike) -> nn.Sequential:
    """The network in an ONNX file as an `nn.Sequential` in eval mode: it trains, saves, explains.

    The graph must be a linear chain, from its one input to its one output, of operations chainrule
    has: Gemm, MatMul (+Add), Relu, Sigmoid, Tanh, LeakyRelu, PRelu with one slope, Gelu (or the
    nodes opsets before 20 write for it), Softplus, Softmax, Flatten, Reshape to (batch, features),
    BatchNormalization and LayerNormalization (read as affine layers), Identity, Dropout. Anything
    else, and any malformed or hostile file (sizes that disagree with the data, external data,
    files over MAX_FILE_BYTES), raises OnnxImportError naming the node or defect.
    """
    return load_with_metadata(path)[0]


def _value_text(value: onnx.ValueInfoProto) -> str:
    tensor_type = value.type.tensor_type
    element = TensorProto.DataType.Name(tensor_type.elem_type).lower()
    dims = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in tensor_type.shape.dim
    ]
    return f"{value.name[:80]}: {element} [{', '.join(map(str, dims))}]"


def describe_onnx(path: str | os.PathLike) -> str:
    """What `chainrule info` shows for an ONNX file: its inputs, operations and parameter count,
    and the chainrule layers it loads as (or why it does not load). Builds no model."""
    name = os.fspath(path)
    proto = _read_proto(path)
    graph = proto.graph
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or "an unknown producer"
    lines = [f"{name}: ONNX model, IR version {proto.ir_version}, opset {opsets}, from {producer}"]
    lines += [f"  input  {_value_text(v)}" for v in graph.input][:10]
    lines += [f"  output {_value_text(v)}" for v in graph.output][:10]
    operations = Counter(node.op_type for node in graph.node)
    counted = ", ".join(f"{op} x{n}" for op, n in operations.most_common(20))
    values = sum(math.prod(t.dims) for t in graph.initializer)
    lines.append(f"  {len(graph.node)} nodes ({counted}); {values:,} values in initializers")
    try:
        architecture, _ = _walk(proto, name)
    except OnnxImportError as error:
        lines.append(f"  chainrule cannot load it: {error.defect}")
    else:
        lines.append("  loads as a chainrule Sequential of:")
        for row in _leaves(architecture):
            arguments = ", ".join(f"{key}={value!r}" for key, value in row["arguments"].items())
            lines.append(
                f"  {row['name']:<8} {row['type']}({arguments})  {row['parameters']:,} parameters"
            )
    try:
        metadata = _metadata(proto, name)
    except OnnxImportError as error:
        metadata = {"(unreadable)": error.defect}
    lines += [f"  metadata {key}: {json.dumps(value)[:200]}" for key, value in metadata.items()]
    return "\n".join(lines)
