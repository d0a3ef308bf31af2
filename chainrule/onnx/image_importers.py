"""ONNX import of the image layers: Conv (1-D and 2-D), MaxPool, AveragePool, GlobalAveragePool and
BatchNormalization over (N, C, H, W), as chainrule's Conv2d, Conv1d, pools and BatchNorm2d.

The dense and activation importers, and the walk, live in `importers` and `reading`.
"""

from __future__ import annotations

import onnx

from chainrule.onnx.importers import Imported, Importer, _Chain, _short_float
from chainrule.onnx.importers import _import_batch_norm as _import_batch_norm_1d

_Shape = tuple[int | None, ...]


def _spatial(chain: _Chain, node: onnx.NodeProto, ranks: tuple[int, ...]) -> int:
    """The number of spatial axes of the chain's (batch, channels, ...) tensor, checked."""
    spatial = len(chain.shape) - 1
    if spatial not in ranks:
        wanted = " or ".join(f"rank {r + 2}" for r in ranks)
        raise chain.fail(
            node,
            f"needs (batch, channels, ...) inputs of {wanted}, the chain has rank "
            f"{len(chain.shape) + 1}",
        )
    return spatial


def _list(chain: _Chain, node: onnx.NodeProto, a: dict, name: str, count: int, low: int) -> list:
    values = a[name]
    if len(values) != count or any(v < low for v in values):
        raise chain.fail(node, f"{name} {values[:10]} must be {count} integers >= {low}")
    return values


def _pads(chain: _Chain, node: onnx.NodeProto, a: dict, totals: list[int]) -> str | list[int]:
    """chainrule's padding for ONNX's auto_pad and pads: a list of sizes, 'valid' or 'same'."""
    count = len(totals)
    if a["auto_pad"] == "VALID":
        return "valid"
    if a["auto_pad"] == "SAME_UPPER" and all(s == 1 for s in a["strides"]):
        return "same"
    if a["auto_pad"] != "NOTSET":
        raise chain.fail(node, f"auto_pad {a['auto_pad'][:20]!r} is not supported")
    pads = _list(chain, node, a, "pads", 2 * count, 0) if a["pads"] else [0] * 2 * count
    starts, ends = pads[:count], pads[count:]
    if starts == ends:
        return starts
    same = [t // 2 for t in totals] + [t - t // 2 for t in totals]  # PyTorch's 'same'
    if pads == same and all(s == 1 for s in a["strides"]):
        return "same"
    raise chain.fail(node, f"pads {pads} pad the two sides differently; chainrule pads both alike")


def _out(size: int | None, pad: int, extent: int, stride: int) -> int | None:
    return None if size is None else (size + pad - extent) // stride + 1


def _output_shape(
    chain: _Chain,
    node: onnx.NodeProto,
    channels: int,
    padding: str | list[int],
    extents: list[int],
    strides: list[int],
) -> _Shape:
    sizes = chain.shape[1:]
    if padding == "same":
        return (channels, *sizes)
    pads = [0] * len(sizes) if padding == "valid" else [2 * p for p in padding]
    shape = [_out(n, p, e, s) for n, p, e, s in zip(sizes, pads, extents, strides)]
    if any(n is not None and n < 1 for n in shape):
        raise chain.fail(node, f"the window is larger than the padded input {chain.shape}")
    return (channels, *shape)


def _import_conv(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    node = nodes[i]
    names = chain.inputs(node, 2, 3)
    spatial = _spatial(chain, node, (1, 2))
    a = chain.attributes(
        node,
        {
            "auto_pad": "NOTSET",
            "dilations": [],
            "group": 1,
            "kernel_shape": [],
            "pads": [],
            "strides": [],
        },
    )
    weight = chain.constant(node, names[1], ndim=(spatial + 2,))
    out_channels, per_group, *kernel = weight.shape
    group = a["group"]
    channels = chain.shape[0]
    if (
        group < 1
        or out_channels % group
        or (channels is not None and per_group * group != channels)
    ):
        raise chain.fail(
            node, f"weight {weight.shape} with group {group} does not fit {channels} channels"
        )
    if a["kernel_shape"] and a["kernel_shape"] != kernel:
        raise chain.fail(
            node, f"kernel_shape {a['kernel_shape'][:10]} is not the weight's {kernel}"
        )
    a["strides"] = _list(chain, node, a, "strides", spatial, 1) if a["strides"] else [1] * spatial
    dilations = _list(chain, node, a, "dilations", spatial, 1) if a["dilations"] else [1] * spatial
    extents = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    padding = _pads(chain, node, a, [e - 1 for e in extents])
    bias = None
    if len(names) == 3:
        bias = chain.constant(node, names[2], ndim=(1,))
        if bias.shape != (out_channels,):
            raise chain.fail(node, f"bias {bias.shape} does not fit {out_channels} outputs")
    layer = {
        "type": "Conv2d" if spatial == 2 else "Conv1d",
        "in_channels": per_group * group,
        "out_channels": out_channels,
        "kernel_size": kernel,
        "stride": a["strides"],
        "padding": padding,
        "dilation": dilations,
        "groups": group,
        "bias": bias is not None,
        "dtype": chain.dtype.name,
    }
    tensors = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    shape = _output_shape(chain, node, out_channels, padding, extents, a["strides"])
    return layer, tensors, 1, shape


def _pool(kind: str, extra: dict) -> Importer:
    def read(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
        node = nodes[i]
        chain.inputs(node, 1, 1)
        _spatial(chain, node, (2,))
        defaults = {"auto_pad": "NOTSET", "ceil_mode": 0, "kernel_shape": [], "pads": []}
        a = chain.attributes(node, {**defaults, "strides": [], "dilations": [], **extra})
        if a["ceil_mode"] or a.get("storage_order"):
            raise chain.fail(node, "ceil_mode and storage_order are not supported")
        kernel = _list(chain, node, a, "kernel_shape", 2, 1)
        if a["dilations"] and a["dilations"] != [1, 1]:
            raise chain.fail(node, "dilated pooling is not supported")
        a["strides"] = _list(chain, node, a, "strides", 2, 1) if a["strides"] else [1, 1]
        padding = _pads(chain, node, a, [k - 1 for k in kernel])
        if isinstance(padding, str):  # 'valid', or 'same' that pads both sides alike
            padding = [0, 0] if padding == "valid" else [(k - 1) // 2 for k in kernel]
            if any(k % 2 == 0 for k in kernel) and a["auto_pad"] != "VALID":
                raise chain.fail(node, "auto_pad SAME with an even kernel pads unevenly")
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise chain.fail(node, f"pads {padding} exceed half the kernel {kernel}")
        layer = {"type": kind, "kernel_size": kernel, "stride": a["strides"], "padding": padding}
        if kind == "AvgPool2d":
            layer["count_include_pad"] = bool(a["count_include_pad"])
        shape = _output_shape(chain, node, chain.shape[0], padding, kernel, a["strides"])
        return layer, {}, 1, shape

    return read


def _import_global_average_pool(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    chain.inputs(nodes[i], 1, 1)
    chain.attributes(nodes[i], {})
    _spatial(chain, nodes[i], (2,))
    return {"type": "AdaptiveAvgPool2d", "output_size": [1, 1]}, {}, 1, (chain.shape[0], 1, 1)


def _import_batch_norm(chain: _Chain, nodes: list[onnx.NodeProto], i: int) -> Imported:
    """BatchNormalization over (N, C, H, W) as a BatchNorm2d; over (N, C) as `importers` does."""
    if len(chain.shape) != 3:
        return _import_batch_norm_1d(chain, nodes, i)
    node = nodes[i]
    names = chain.inputs(node, 5, 5)
    a = chain.attributes(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
    if a["training_mode"]:
        raise chain.fail(node, "training_mode=1; chainrule loads graphs for inference")
    arrays = [chain.constant(node, name, ndim=(1,)) for name in names[1:]]
    channels = chain.shape[0]
    if any(array.shape != arrays[0].shape for array in arrays) or channels not in (
        None,
        arrays[0].shape[0],
    ):
        raise chain.fail(node, f"scale, bias, mean and variance must all be ({channels},)")
    layer = {
        "type": "BatchNorm2d",
        "num_features": arrays[0].shape[0],
        "eps": a["epsilon"],
        "momentum": _short_float(1.0 - a["momentum"]),  # ONNX's weighs the running value
        "affine": True,
        "dtype": chain.dtype.name,
    }
    tensors = dict(zip(["weight", "bias", "running_mean", "running_var"], arrays))
    return layer, tensors, 1, (arrays[0].shape[0], *chain.shape[1:])


IMAGE_IMPORTERS: dict[str, Importer] = {
    "Conv": _import_conv,
    "MaxPool": _pool("MaxPool2d", {"storage_order": 0}),
    "AveragePool": _pool("AvgPool2d", {"count_include_pad": 0}),
    "GlobalAveragePool": _import_global_average_pool,
    "BatchNormalization": _import_batch_norm,
}
