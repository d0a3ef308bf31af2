"""ONNX import, one operation at a time: the IMPORTERS table maps an op type to a function that
reads the chain's next layer (as an architecture node and its tensors), checking every attribute,
input and size; `chainrule.onnx.reading` walks the graph with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from chainrule.architecture import MAX_SIZE
from chainrule.onnx.exporters import ELEMENT_TYPES, SQRT_2, SQRT_2_OVER_PI
from chainrule.safetensors_format import ModelFileError

MAX_RANK = 8


class OnnxImportError(ModelFileError):
    """An ONNX file chainrule cannot or will not load: malformed, hostile, or using operations
    chainrule does not have. A ValueError whose message starts with the file's path."""


def shown(text: str) -> str:
    """A name from the file as one short line: control characters escaped, at most 80 kept."""
    return repr(text[:80])[1:-1]


def _short_float(value: float) -> float:
    """A float32 attribute as the shortest decimal that gives it back: 1e-05, not 9.99999974e-06."""
    return float(str(np.float32(value)))


_ATTRIBUTE_TYPES = {
    float: AttributeProto.FLOAT,
    int: AttributeProto.INT,
    str: AttributeProto.STRING,
    list: AttributeProto.INTS,  # kernel_shape, strides, pads of the image layers
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
        where = f"node '{shown(node.name)}' ({shown(node.op_type)})"
        return OnnxImportError(self.path, f"{where}: {defect}")

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
            elif attribute.type == AttributeProto.INTS:
                values[attribute.name] = [int(v) for v in attribute.ints[: MAX_RANK * 2 + 1]]
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
        raise chain.fail(nodes[i], "a slope per channel is not a layer chainrule has (one is)")
    slope = float(slope.reshape(()))
    slope = _short_float(slope) if chain.dtype == np.float32 else slope
    return {"type": "LeakyReLU", "negative_slope": slope}, {}, 1, chain.shape


def _import_gelu(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    approximate = chain.attributes(nodes[i], {"approximate": "none"})["approximate"]
    return {"type": "GELU", "approximate": approximate}, {}, 1, chain.shape


# GELU as opsets before 20 write it: (approximate, nodes), each node (op, inputs) with "x" the
# layer's input, an int k the output of the pattern's k-th node, a float a scalar constant. Add and
# Mul match either input order.
_GELU_PATTERNS = [
    (  # chainrule: z · 0.5·(1 + erf(z/√2))
        "none",
        [
            ("Div", ("x", SQRT_2)),
            ("Erf", (0,)),
            ("Add", (1, 1.0)),
            ("Mul", (2, 0.5)),
            ("Mul", ("x", 3)),
        ],
    ),
    (  # torch.onnx before opset 20: (z · (1 + erf(z/√2))) · 0.5
        "none",
        [
            ("Div", ("x", SQRT_2)),
            ("Erf", (0,)),
            ("Add", (1, 1.0)),
            ("Mul", ("x", 2)),
            ("Mul", (3, 0.5)),
        ],
    ),
    (  # chainrule: 0.5·z · (1 + tanh(√(2/π)·(z + 0.044715·z³)))
        "tanh",
        [
            ("Pow", ("x", 3.0)),
            ("Mul", (0, 0.044715)),
            ("Add", ("x", 1)),
            ("Mul", (2, SQRT_2_OVER_PI)),
            ("Tanh", (3,)),
            ("Add", (4, 1.0)),
            ("Mul", ("x", 0.5)),
            ("Mul", (6, 5)),
        ],
    ),
    (  # torch.onnx before opset 20: 0.5 · (z · (1 + tanh(√(2/π)·(z + 0.044715·(z·z·z)))))
        "tanh",
        [
            ("Mul", ("x", "x")),
            ("Mul", ("x", 0)),
            ("Mul", (1, 0.044715)),
            ("Add", ("x", 2)),
            ("Mul", (3, SQRT_2_OVER_PI)),
            ("Tanh", (4,)),
            ("Add", (5, 1.0)),
            ("Mul", ("x", 6)),
            ("Mul", (7, 0.5)),
        ],
    ),
]


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
            if tensor is None or tensor.data_type != ELEMENT_TYPES[chain.dtype]:
                return False
            if len(tensor.dims) > 1 or math.prod(tensor.dims) != 1:
                return False
            value = chain.scalar(node, name)
            if value != float(chain.dtype.type(want)):
                return False
    return True


def _import_gelu_pattern(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    for approximate, pattern in _GELU_PATTERNS:
        if _matches(chain, pattern, nodes, i):
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
    "Mul": _import_gelu_pattern,
    "Softmax": _import_softmax,
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Dropout": _import_dropout,
    "BatchNormalization": _import_batch_norm,
    "LayerNormalization": _import_layer_norm,
}
# What `load` reads, for messages: the table less the first nodes of the GELU patterns.
LOADABLE = (
    ", ".join(sorted(set(IMPORTERS) - {"Div", "Pow", "Mul"}))
    + " (and MatMul+Add, and the nodes opsets before 20 write for GELU)"
)
