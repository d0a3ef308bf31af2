"""ONNX export and import: ONNX Runtime computes what the model computes, a round trip keeps every
weight bit for bit, graphs written by hand (as other frameworks write them) load, hostile files are
refused with one error, and the `export` / `import` commands work end to end.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import chainrule  # noqa: E402
from chainrule import nn  # noqa: E402
from chainrule.architecture import describe_model  # noqa: E402
from chainrule.onnx import OnnxImportError, describe_onnx, export, load, load_with_metadata  # noqa: E402

REPO = Path(chainrule.__file__).resolve().parent.parent
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


# ---- a random network around each layer type ---------------------------------------------------
def _random_state(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Weights, and BatchNorm statistics, away from their initial values (1, 0, 0, 1)."""
    for parameter in model.parameters():
        parameter.data[...] = rng.uniform(-1, 1, parameter.shape)
    for module in model.modules():
        if type(module).__name__ in ("BatchNorm1d", "BatchNorm2d"):
            module.running_mean = rng.normal(size=module.num_features).astype(
                module.running_mean.dtype
            )
            module.running_var = rng.uniform(0.5, 2, module.num_features).astype(
                module.running_var.dtype
            )
    return model.eval()


def _around(layer_factory, features=(5,)):
    """Linear(5 → 6), the layer, Linear(6 → 3): the layer sees (batch, 6)."""

    def build(dtype):
        model = nn.Sequential(
            nn.Linear(math.prod(features), 6, dtype=dtype),
            layer_factory(dtype),
            nn.Linear(6, 3, dtype=dtype),
        )
        return model, features

    return build


NETWORKS = {
    "Linear": lambda dtype: (
        nn.Sequential(nn.Linear(5, 4, dtype=dtype), nn.Linear(4, 3, bias=False, dtype=dtype)),
        (5,),
    ),
    "Sigmoid": _around(lambda dtype: nn.Sigmoid()),
    "Tanh": _around(lambda dtype: nn.Tanh()),
    "ReLU": _around(lambda dtype: nn.ReLU()),
    "LeakyReLU": _around(lambda dtype: nn.LeakyReLU(0.01)),
    "LeakyReLU(0.25)": _around(lambda dtype: nn.LeakyReLU(0.25)),
    "GELU": _around(lambda dtype: nn.GELU()),
    "GELU(tanh)": _around(lambda dtype: nn.GELU("tanh")),
    "Softplus": _around(lambda dtype: nn.Softplus()),
    "Softmax": lambda dtype: (
        nn.Sequential(nn.Linear(5, 4, dtype=dtype), nn.Softmax(dim=-1)),
        (5,),
    ),
    "Softmax(dim=1)": lambda dtype: (
        nn.Sequential(nn.Linear(5, 4, dtype=dtype), nn.Softmax(dim=1)),
        (5,),
    ),
    "Identity": _around(lambda dtype: nn.Identity()),
    "Dropout": _around(lambda dtype: nn.Dropout(0.3)),
    "BatchNorm1d": _around(lambda dtype: nn.BatchNorm1d(6, eps=1e-3, momentum=0.2, dtype=dtype)),
    "BatchNorm1d(affine=False)": _around(
        lambda dtype: nn.BatchNorm1d(6, affine=False, dtype=dtype)
    ),
    "LayerNorm": _around(lambda dtype: nn.LayerNorm(6, dtype=dtype)),
    "LayerNorm(affine=False)": _around(
        lambda dtype: nn.LayerNorm(6, elementwise_affine=False, dtype=dtype)
    ),
    "Flatten+LayerNorm(2-D)": lambda dtype: (
        nn.Sequential(
            nn.LayerNorm((2, 3), dtype=dtype), nn.Flatten(), nn.Linear(6, 2, dtype=dtype)
        ),
        (2, 3),
    ),
    "nested Sequential": lambda dtype: (
        nn.Sequential(
            nn.Sequential(nn.Linear(5, 4, dtype=dtype), nn.Tanh()),
            nn.Sequential(nn.Sequential(nn.Linear(4, 2, dtype=dtype))),
        ),
        (5,),
    ),
}

# What ONNX Runtime's CPU provider lacks in float64 (checked with onnxruntime 1.32): these cases
# skip, naming the reason, only when ORT itself says NOT_IMPLEMENTED.
ORT_FLOAT64_GAPS = {
    ("GELU", 17): "no float64 Erf kernel",
    ("GELU", 20): "no float64 Gelu kernel for approximate='none'",
    ("Softplus", 17): "no float64 Softplus kernel",
    ("Softplus", 20): "no float64 Softplus kernel",
    ("LeakyReLU", 20): "no float64 PRelu kernel at opset 19 and later",
    ("LeakyReLU(0.25)", 20): "no float64 LeakyRelu kernel at opset 19 and later",
}
# ORT's float64 Gelu(approximate='tanh') (opset 20) is accurate to about 1e-8, not 1e-10.
LOOSER = {("GELU(tanh)", np.float64, 20): 1e-8}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, feature shape, path) per (network, dtype, opset), exported once."""
    directory = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(name, dtype, opset):
        key = (name, dtype, opset)
        if key not in cache:
            model, features = NETWORKS[name](dtype)
            _random_state(model, np.random.default_rng(len(cache)))
            path = directory / f"{len(cache)}.onnx"
            export(model, path, np.zeros((1, *features), dtype), opset=opset)
            cache[key] = model, features, path
        return cache[key]

    return get


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NETWORKS)
def test_onnx_runtime_computes_what_the_model_computes(exported, name, dtype, opset):
    model, features, path = exported(name, dtype, opset)
    try:
        session = _session(path)
    except Exception as error:  # onnxruntime's NotImplemented has no public class
        gap = ORT_FLOAT64_GAPS.get((name, opset)) if dtype is np.float64 else None
        if gap and "NOT_IMPLEMENTED" in str(error):
            pytest.skip(f"onnxruntime's CPU provider: {gap}")
        raise
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.normal(size=(batch, *features)).astype(dtype)
        (actual,) = session.run(None, {"input": x})
        expected = model(x).data
        assert actual.dtype == dtype and actual.shape == expected.shape
        tolerance = LOOSER.get((name, dtype, opset), TOLERANCE[dtype])
        np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NETWORKS)
def test_export_then_load_keeps_every_weight_bit_for_bit(exported, name, dtype, opset):
    model, features, path = exported(name, dtype, opset)
    loaded = load(path)
    original = model.state_dict()
    for key, array in loaded.state_dict().items():
        if "affine=False" in name and key.startswith("1."):  # ONNX has γ = 1 and β = 0 instead
            continue
        match = [
            value
            for value in original.values()
            if value.shape == array.shape and np.array_equal(value, array)
        ]
        assert match and match[0].dtype == array.dtype, key
    x = np.random.default_rng(2).normal(size=(4, *features)).astype(dtype)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)


def _leaves(architecture):
    for layer in architecture["layers"]:
        yield from (_leaves(layer) if layer["type"] == "Sequential" else [layer])


@pytest.mark.parametrize("name", [n for n in NETWORKS if "affine=False" not in n])
def test_export_then_load_keeps_every_layer_argument(exported, name):
    model, _, path = exported(name, np.float64, 17)
    assert list(_leaves(describe_model(load(path)))) == list(_leaves(describe_model(model)))


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_random_deep_network_of_every_layer_type_round_trips(seed, opset, tmp_path):
    rng = np.random.default_rng(seed)
    width = lambda: int(rng.integers(2, 7))  # noqa: E731
    activations = [nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Softplus, nn.Identity]
    activations += [lambda: nn.LeakyReLU(0.05), lambda: nn.GELU("tanh"), nn.GELU]
    activations += [lambda: nn.Dropout(0.1), lambda: nn.Softmax(dim=1)]
    layers, features = [nn.Flatten()], 6
    for _ in range(8):
        out = width()
        kind = rng.integers(3)
        layers.append(nn.Linear(features, out, bias=bool(rng.integers(2))))
        norm = [nn.BatchNorm1d(out), nn.LayerNorm(out), nn.Sequential(nn.Identity())][kind]
        layers += [norm, activations[rng.integers(len(activations))]()]
        features = out
    model = _random_state(nn.Sequential(*layers[:5], nn.Sequential(*layers[5:])), rng)
    export(model, tmp_path / "deep.onnx", np.zeros((1, 2, 3), np.float32), opset=opset)
    x = rng.normal(size=(7, 2, 3)).astype(np.float32)
    (actual,) = _session(tmp_path / "deep.onnx").run(None, {"input": x})
    np.testing.assert_allclose(actual, model(x).data, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(load(tmp_path / "deep.onnx")(x).data, model(x).data)


def test_the_file_passes_the_full_check_and_has_a_dynamic_batch(exported):
    _, _, path = exported("BatchNorm1d", np.float32, 17)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (value,) = proto.graph.input
    assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.opset_import[0].version == 17
    assert proto.ir_version == 8  # the oldest that carries opset 17: older runtimes read it too
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "BatchNormalization", "Gemm"]
    assert proto.graph.node[0].attribute[0].name == "transB"


def test_export_refuses_a_layer_it_does_not_know(tmp_path):
    class Twice(nn.Module):
        def forward(self, x):
            return x * 2

    with pytest.raises(TypeError, match="1: Twice has no ONNX export"):
        export(nn.Sequential(nn.ReLU(), Twice()), tmp_path / "m.onnx", np.zeros((1, 3)))
    assert not (tmp_path / "m.onnx").exists()


def test_export_leaves_the_training_mode_as_it_was(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    export(model, tmp_path / "m.onnx", np.zeros((1, 3)))
    assert all(module.training for module in model.modules())


# ---- images: exported once chainrule has conv layers (merged from the conv branch) --------------
def _conv_networks():
    if not hasattr(nn, "Conv2d"):
        return {}
    return {
        "Conv2d(stride, padding)": lambda d: [nn.Conv2d(2, 4, 3, stride=2, padding=1, dtype=d)],
        "Conv2d(same, dilation)": lambda d: [
            nn.Conv2d(2, 4, (3, 2), padding="same", dilation=2, dtype=d)
        ],
        "Conv2d(groups, no bias)": lambda d: [nn.Conv2d(2, 4, 3, groups=2, bias=False, dtype=d)],
        "MaxPool2d": lambda d: [nn.Conv2d(2, 3, 1, dtype=d), nn.MaxPool2d(2, padding=1)],
        "AvgPool2d": lambda d: [nn.Conv2d(2, 3, 1, dtype=d), nn.AvgPool2d(3, stride=2, padding=1)],
        "AvgPool2d(count_include_pad=False)": lambda d: [
            nn.Conv2d(2, 3, 1, dtype=d),
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        ],
        "BatchNorm2d, Dropout2d, global average": lambda d: [
            nn.Conv2d(2, 3, 3, dtype=d),
            nn.BatchNorm2d(3, dtype=d),
            nn.Dropout2d(0.2),
            nn.AdaptiveAvgPool2d(1),
        ],
    }


@pytest.mark.skipif(not hasattr(nn, "Conv2d"), reason="chainrule has no conv layers yet")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(_conv_networks()) or ["none"])
def test_conv_layers_run_in_onnx_runtime_as_in_chainrule(name, dtype, tmp_path):
    model = _random_state(
        nn.Sequential(*_conv_networks()[name](dtype), nn.Flatten()), np.random.default_rng(0)
    )
    x = np.random.default_rng(1).normal(size=(7, 2, 7, 8)).astype(dtype)
    export(model, tmp_path / "conv.onnx", x[:1])
    try:
        session = _session(tmp_path / "conv.onnx")
    except Exception as error:
        if dtype is np.float64 and "NOT_IMPLEMENTED" in str(error):  # checked with onnxruntime 1.32
            pytest.skip(
                "onnxruntime's CPU provider has no float64 Conv, AveragePool, GlobalAveragePool"
            )
        raise
    for batch in (1, 7):
        (actual,) = session.run(None, {"input": x[:batch]})
        np.testing.assert_allclose(
            actual, model(x[:batch]).data, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype]
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(_conv_networks()))
def test_conv_layers_export_then_load_bit_for_bit(name, dtype, tmp_path):
    model = _random_state(
        nn.Sequential(*_conv_networks()[name](dtype), nn.Flatten()), np.random.default_rng(0)
    ).eval()
    x = np.random.default_rng(1).normal(size=(7, 2, 7, 8)).astype(dtype)
    export(model, tmp_path / "conv.onnx", x[:1])
    loaded = load(tmp_path / "conv.onnx")
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    for name_, array in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name_], array, err_msg=name_)


def test_a_conv1d_and_a_cnn_classifier_round_trip_through_onnx(tmp_path):
    rng = np.random.default_rng(3)
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 3, rng=rng),
    ).eval()
    x = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    export(cnn, tmp_path / "cnn.onnx", x[:1])
    loaded = describe_model(load(tmp_path / "cnn.onnx"))["layers"]
    assert [layer["type"] for layer in loaded] == [type(layer).__name__ for layer in cnn]
    assert loaded[0]["padding"] == [1, 1]  # 'same' as ONNX writes it: the same function
    np.testing.assert_array_equal(load(tmp_path / "cnn.onnx")(x).data, cnn(x).data)
    conv1d = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=1, rng=rng), nn.Flatten()).eval()
    x = rng.normal(size=(5, 2, 9)).astype(np.float32)
    export(conv1d, tmp_path / "conv1d.onnx", x[:1])
    np.testing.assert_array_equal(load(tmp_path / "conv1d.onnx")(x).data, conv1d(x).data)


def test_a_conv_whose_channels_disagree_with_the_input_is_refused(tmp_path, rng):
    weight = numpy_helper.from_array(_weights(rng, 2, 3, 3, 3), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])]
    path = _graph_file(tmp_path / "bad.onnx", [node], [weight], inputs, ("N", 2, 6, 6))
    with pytest.raises(OnnxImportError, match=r"does not fit 1 channels"):
        load(path)


def test_uneven_pads_are_refused(tmp_path, rng):
    weight = numpy_helper.from_array(_weights(rng, 2, 1, 3, 3), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 0, 0, 0])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])]
    path = _graph_file(tmp_path / "bad.onnx", [node], [weight], inputs, ("N", 2, 7, 6))
    with pytest.raises(OnnxImportError, match=r"pad the two sides differently"):
        load(path)


# ---- graphs as other frameworks write them ------------------------------------------------------
def _graph_file(
    path, nodes, initializers, inputs=None, output_shape=("N", 3), opset=17, dtype=TensorProto.FLOAT
):
    inputs = inputs or [helper.make_tensor_value_info("x", dtype, ["N", 4])]
    graph = helper.make_graph(
        nodes,
        "foreign",
        inputs,
        [helper.make_tensor_value_info("y", dtype, list(output_shape))],
        initializers,
    )
    proto = helper.make_model(
        graph, producer_name="elsewhere", opset_imports=[helper.make_opsetid("", opset)]
    )
    proto.ir_version = 8
    path.write_bytes(proto.SerializeToString())
    return path


def _weights(rng, *shape, dtype=np.float32):
    return rng.normal(size=shape).astype(dtype)


def test_a_graph_written_elsewhere_loads_and_predicts_as_onnx_runtime_does(tmp_path, rng):
    # As torch.onnx.export writes an MLP: Gemm(transB=1), Relu, Gemm, Softmax, with a Constant.
    W1, b1, W2, b2 = _weights(rng, 8, 4), _weights(rng, 8), _weights(rng, 3, 8), _weights(rng, 3)
    path = _graph_file(
        tmp_path / "mlp.onnx",
        [
            helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["a"], name="relu"),
            helper.make_node("Constant", [], ["b2"], value=numpy_helper.from_array(b2)),
            helper.make_node(
                "Gemm", ["a", "W2", "b2"], ["z"], name="fc2", transB=1, alpha=1.0, beta=1.0
            ),
            helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1),
        ],
        [
            numpy_helper.from_array(W1, "W1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(W2, "W2"),
        ],
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    model = load(path)
    assert [type(layer).__name__ for layer in model] == ["Linear", "ReLU", "Linear", "Softmax"]
    x = rng.normal(size=(7, 4)).astype(np.float32)
    (expected,) = _session(path).run(None, {"x": x})
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-6, atol=1e-6)


def test_matmul_add_gemm_without_transb_alpha_beta_and_reshape_load(tmp_path, rng):
    # As tf2onnx and hand-written graphs do: Reshape to 2-D, MatMul + Add, Gemm(alpha, beta).
    W1, b1, W2, b2 = _weights(rng, 6, 5), _weights(rng, 5), _weights(rng, 5, 3), _weights(rng, 1, 3)
    path = _graph_file(
        tmp_path / "keras.onnx",
        [
            helper.make_node("Reshape", ["x", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W1"], ["m"]),
            helper.make_node("Add", ["m", "b1"], ["h"]),
            helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.2),
            helper.make_node("Gemm", ["a", "W2", "b2"], ["y"], alpha=0.5, beta=2.0),
        ],
        [
            numpy_helper.from_array(v, k)
            for k, v in {"shape": np.array([-1, 6]), "W1": W1, "b1": b1, "W2": W2, "b2": b2}.items()
        ],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
    )
    model = load(path)
    assert [type(layer).__name__ for layer in model] == ["Flatten", "Linear", "LeakyReLU", "Linear"]
    assert model[2].negative_slope == 0.2
    x = rng.normal(size=(7, 2, 3)).astype(np.float32)
    (expected,) = _session(path).run(None, {"x": x})
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-5, atol=1e-5)


def test_torch_style_gelu_before_opset_20_loads_as_gelu(tmp_path, rng):
    # (x · (1 + erf(x/√2))) · 0.5, as torch.onnx writes nn.GELU() at opsets 17 to 19.
    constant = lambda name, value: numpy_helper.from_array(np.array(value, np.float32), name)  # noqa: E731
    W = _weights(rng, 3, 4)
    path = _graph_file(
        tmp_path / "gelu.onnx",
        [
            helper.make_node("Gemm", ["x", "W"], ["z"], transB=1),
            helper.make_node("Div", ["z", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["s"]),
            helper.make_node("Mul", ["z", "s"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ],
        [
            numpy_helper.from_array(W, "W"),
            constant("sqrt2", math.sqrt(2)),
            constant("one", 1.0),
            constant("half", 0.5),
        ],
    )
    model = load(path)
    assert [type(layer).__name__ for layer in model] == ["Linear", "GELU"]
    x = rng.normal(size=(7, 4)).astype(np.float32)
    (expected,) = _session(path).run(None, {"x": x})
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-5, atol=1e-6)


TORCH_ACTIVATIONS = {
    "ReLU": lambda torch: torch.nn.ReLU(),
    "GELU": lambda torch: torch.nn.GELU(),
    "GELU(tanh)": lambda torch: torch.nn.GELU("tanh"),
    "Tanh": lambda torch: torch.nn.Tanh(),
    "Sigmoid": lambda torch: torch.nn.Sigmoid(),
    "LeakyReLU": lambda torch: torch.nn.LeakyReLU(0.1),
    "Softplus": lambda torch: torch.nn.Softplus(),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's own
@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("activation", TORCH_ACTIVATIONS)
def test_an_mlp_exported_by_torch_loads_and_predicts_as_torch(activation, opset, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(4, 8),
        torch.nn.BatchNorm1d(8),
        TORCH_ACTIVATIONS[activation](torch),
        torch.nn.Dropout(0.2),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 3),
        torch.nn.Softmax(dim=1),
    ).eval()
    with torch.no_grad():
        net[2].running_mean.uniform_(-1, 1)
        net[2].running_var.uniform_(0.5, 2)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(2, 2, 2),),
        str(path),
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
    )
    model = load(path)
    # torch leaves Dropout out of an eval graph.
    layers = f"Flatten Linear BatchNorm1d {activation.split('(')[0]} LayerNorm Linear Softmax"
    assert [type(layer).__name__ for layer in model] == layers.split()
    x = np.random.default_rng(0).normal(size=(7, 2, 2)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture
def foreign_model(tmp_path, rng):
    W1, W2 = _weights(rng, 8, 4, dtype=np.float64), _weights(rng, 2, 8, dtype=np.float64)
    path = _graph_file(
        tmp_path / "foreign.onnx",
        [
            helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
            helper.make_node("Tanh", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2"], ["y"], transB=1),
        ],
        [
            numpy_helper.from_array(W1, "W1"),
            numpy_helper.from_array(np.zeros(8), "b1"),
            numpy_helper.from_array(W2, "W2"),
        ],
        output_shape=("N", 2),
        dtype=TensorProto.DOUBLE,
    )
    return path


def test_a_loaded_model_trains_saves_and_explains(foreign_model, tmp_path, rng):
    model = load(foreign_model).train()
    X, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    before = [p.data.copy() for p in model.parameters()]
    history = chainrule.fit(
        model, X, y, loss="mse", optimizer="sgd", lr=0.1, epochs=1, progress=False
    )
    assert np.isfinite(history.loss[-1])
    assert all(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    chainrule.save(model, tmp_path / "trained.safetensors")
    again = chainrule.load(tmp_path / "trained.safetensors")
    np.testing.assert_array_equal(again(X).data, model.eval()(X).data)
    explanation = chainrule.explain(again, X[0], y[0])
    assert str(explanation)


def test_metadata_survives_export_and_load(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    metadata = {"task": "classification", "class_names": ["a", "b"], "mean": [0.5, 1.5]}
    export(model, tmp_path / "m.onnx", np.zeros((1, 2)), metadata=metadata)
    assert load_with_metadata(tmp_path / "m.onnx")[1] == metadata


def test_describe_onnx_shows_the_layers_it_loads_as(exported, foreign_model):
    _, _, path = exported("LayerNorm", np.float32, 17)
    text = describe_onnx(path)
    assert "opset ai.onnx 17" in text and "input  input: float32 [batch, 5]" in text
    assert "LayerNorm(normalized_shape=[6]" in text and "loads as" in text
    assert "Linear" in describe_onnx(foreign_model)


# ---- hostile and unsupported files: one OnnxImportError each, nothing allocated from them ----
def _mlp_nodes():
    return [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]


def _mlp_weights(**fields):
    return [helper.make_tensor("W", TensorProto.FLOAT, [3, 4], np.ones(12, np.float32), **fields)]


def _huge_initializer():
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**31 - 1, 2**31 - 1])
    return [tensor]


def _external_initializer():
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 4])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../../etc/passwd")
    return [tensor]


HOSTILE = {
    "unsupported op": (
        [
            helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
            helper.make_node("Selu", ["h"], ["y"], name="odd"),
        ],
        _mlp_weights(),
        "node 'odd' (Selu): Selu is not an operation chainrule has",
    ),
    "wrong initializer size": (
        _mlp_nodes(),
        [TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 4], raw_data=b"\0" * 8)],
        "declares shape [3, 4] (12 values) but holds 8 bytes",
    ),
    "huge initializer": (_mlp_nodes(), _huge_initializer(), "declares shape"),
    "external data": (_mlp_nodes(), _external_initializer(), "external data"),
    "missing input": (_mlp_nodes(), [], "input 'W' is not a constant"),
    "cycle": (
        [
            helper.make_node("Relu", ["b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
            helper.make_node("Relu", ["b"], ["y"], name="third"),
        ],
        [],
        "node 'first' (Relu): reads 'b', but the chain has reached 'x'",
    ),
    "self loop": (
        [helper.make_node("Relu", ["x"], ["x"], name="loop")],
        [],
        "defines 'x' a second time",
    ),
    "branch": (
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node("Sigmoid", ["x"], ["y"], name="skip"),
        ],
        [],
        "'x' is also read elsewhere; chainrule loads a linear chain",
    ),
    "NaN weight": (
        _mlp_nodes(),
        [numpy_helper.from_array(np.full((3, 4), np.nan, np.float32), "W")],
        "NaN or infinite",
    ),
    "transA": (
        [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transA=1)],
        _mlp_weights(),
        "transA=1",
    ),
    "float16 weight": (
        _mlp_nodes(),
        [numpy_helper.from_array(np.ones((3, 4), np.float16), "W")],
        "data type 10",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_or_unsupported_graphs_are_refused_with_one_error(case, tmp_path):
    nodes, initializers, message = HOSTILE[case]
    path = tmp_path / "hostile.onnx"
    proto = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
            initializers,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path.write_bytes(proto.SerializeToString())
    start = time.perf_counter()
    with pytest.raises(OnnxImportError, match=re.escape(message)) as error:
        load(path)
    assert str(error.value).startswith(str(path)) and isinstance(error.value, ValueError)
    assert time.perf_counter() - start < 2
    assert "cannot load it" in describe_onnx(path)


def _write(path, proto):
    path.write_bytes(proto.SerializeToString())
    return path


def test_huge_declared_input_shape_is_refused(tmp_path):
    path = _graph_file(
        tmp_path / "m.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**40])],
    )
    with pytest.raises(OnnxImportError, match="the input declares sizes"):
        load(path)


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path, monkeypatch, exported):
    _, _, path = exported("Linear", np.float32, 17)
    monkeypatch.setattr("chainrule.onnx.reading.MAX_FILE_BYTES", 100)
    with pytest.raises(OnnxImportError, match="over the 100 limit"):
        load(path)


@pytest.mark.parametrize("content", [b"", b"\xff" * 64, b"not an onnx file at all"])
def test_files_that_are_not_onnx_are_refused(tmp_path, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        load(path)


def test_old_opsets_are_refused_with_the_way_out(tmp_path):
    path = _graph_file(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])], [], opset=11)
    with pytest.raises(OnnxImportError, match="version_converter"):
        load(path)


def test_without_the_onnx_package_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    monkeypatch.delitem(sys.modules, "chainrule.onnx")
    with pytest.raises(ImportError, match=r'pip install "chainrule\[onnx\]"'):
        importlib.import_module("chainrule.onnx")


def test_without_the_onnx_package_the_commands_say_so_in_one_line(tmp_path):
    code = (
        "import sys; sys.modules['onnx'] = None; from chainrule.cli import main; "
        f"sys.exit(main(['import', {str(tmp_path / 'm.onnx')!r}, 'out.safetensors']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = assert_one_line_error(result)
    assert 'pip install "chainrule[onnx]"' in line


def test_the_core_and_the_cli_never_import_onnx():
    code = "import sys, chainrule, chainrule.cli, chainrule.io; sys.exit('onnx' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---- the commands --------------------------------------------------------------------------------
def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "chainrule", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def assert_one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule"), result.stderr
    return lines[0]


def test_cli_export_then_import_round_trips_a_saved_model(tmp_path, rng):
    model = _random_state(
        nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Softmax()), rng
    )
    metadata = {"task": "classification", "n_features": 4}
    chainrule.save(model, tmp_path / "model.safetensors", metadata=metadata)
    result = cli("export", tmp_path / "model.safetensors", tmp_path / "model.onnx")
    assert result.returncode == 0, result.stderr
    x = rng.normal(size=(7, 4)).astype(np.float32)
    (actual,) = _session(tmp_path / "model.onnx").run(None, {"input": x})
    np.testing.assert_allclose(actual, model(x).data, rtol=1e-5, atol=1e-5)
    result = cli("import", tmp_path / "model.onnx", tmp_path / "back.safetensors")
    assert result.returncode == 0, result.stderr
    back, back_metadata = chainrule.io.load_with_metadata(tmp_path / "back.safetensors")
    assert back_metadata == metadata
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_cli_import_of_an_unsupported_graph_is_one_line(tmp_path):
    path = _write(
        tmp_path / "odd.onnx",
        helper.make_model(
            helper.make_graph(
                [helper.make_node("Selu", ["x"], ["y"], name="odd\nname")],
                "g",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        ),
    )
    line = assert_one_line_error(cli("import", path, tmp_path / "out.safetensors"))
    assert "node 'odd\\nname' (Selu)" in line  # a name from the file cannot add a line
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_export_of_a_missing_model_is_one_line(tmp_path):
    line = assert_one_line_error(
        cli("export", tmp_path / "missing.safetensors", tmp_path / "m.onnx")
    )
    assert "missing.safetensors" in line
