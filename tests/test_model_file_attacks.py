"""Hostile and damaged model files: each raises ModelFileError naming the file; none runs code.

Crafted files that must pass the checksum to reach a later check are re-signed with `resign`, an
independent implementation of the checksum io.py documents: the checksum detects corruption, it is
not a signature, so safety never rests on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import signal
import struct
import zipfile
from collections import Counter
from contextlib import contextmanager
from io import BytesIO

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule import io, nn
from chainrule.io import ModelFileError

CODES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}


def resign(description: dict, tensors: dict[str, np.ndarray]) -> str:
    """The checksum as io.py's docstring defines it, written from that text alone."""
    digest = hashlib.sha256()

    def item(chunk: bytes) -> None:
        digest.update(struct.pack("<Q", len(chunk)) + chunk)

    body = {key: value for key, value in description.items() if key != "sha256"}
    item(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    for name in sorted(tensors):
        array = tensors[name]
        record = [name, CODES[array.dtype], list(array.shape)]
        item(json.dumps(record, separators=(",", ":")).encode())
        item(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def parts(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, tensors) of a model file, read with the reference safetensors package."""
    header = json.loads(data[8 : 8 + struct.unpack_from("<Q", data)[0]])
    return json.loads(header["__metadata__"]["chainrule"]), safetensors.numpy.load(data)


def assemble(description: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """A layout-valid model file with a correct checksum, written by the reference package."""
    description = {**description, "sha256": resign(description, tensors)}
    return safetensors.numpy.save(tensors, metadata={"chainrule": json.dumps(description)})


def raw(header: dict | str | bytes, buffer: bytes = b"") -> bytes:
    """A safetensors file byte by byte, for layouts no well-behaved writer produces."""
    if isinstance(header, dict):
        header = json.dumps(header)
    text = header if isinstance(header, bytes) else header.encode()
    return struct.pack("<Q", len(text)) + text + buffer


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


def tiny_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 2, rng=0), nn.LeakyReLU(0.25), nn.Linear(2, 1, rng=1))


@pytest.fixture(scope="module")
def good() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "good.safetensors")
        io.save(tiny_model(), path)
        with open(path, "rb") as file:
            return file.read()


def refused(path, data: bytes | None = None) -> str:
    """Write `data` to `path` (if given), load it, and return ModelFileError's message."""
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ModelFileError) as caught:
        io.load(path)
    assert str(path) in str(caught.value) and caught.value.path == str(path)
    return str(caught.value)


def test_the_recorded_checksum_is_the_documented_one(good):
    description, tensors = parts(good)
    assert description["sha256"] == resign(description, tensors)


# ---- code-execution payloads ---------------------------------------------------------------------
class OpenPayload:
    """Unpickling calls open(sentinel, 'w'): creating the sentinel proves code ran."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return open, (self.sentinel, "w")


class SystemPayload(OpenPayload):
    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.sentinel)}",)


def pickle_payload(sentinel: str, protocol: int) -> bytes:
    return pickle.dumps(OpenPayload(sentinel), protocol=protocol)


def os_system_payload(sentinel: str) -> bytes:
    return pickle.dumps(SystemPayload(sentinel))


def torch_style_zip(sentinel: str) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OpenPayload(sentinel)))
    return buffer.getvalue()


def npy_object_array(sentinel: str) -> bytes:
    buffer = BytesIO()
    np.save(buffer, np.array([OpenPayload(sentinel)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def run_the_payload_unsafely(kind: str, data: bytes) -> None:
    """What torch.load / np.load(allow_pickle=True) would do with the file."""
    if kind == "torch-style zip":
        pickle.loads(zipfile.ZipFile(BytesIO(data)).read("archive/data.pkl"))
    elif kind == "npy object array":
        np.load(BytesIO(data), allow_pickle=True)
    else:
        pickle.loads(data)


PAYLOADS = {
    "pickle protocol 0": lambda s: pickle_payload(s, 0),
    "pickle protocol 2": lambda s: pickle_payload(s, 2),
    "pickle protocol 5": lambda s: pickle_payload(s, 5),
    "pickle os.system": os_system_payload,
    "torch-style zip": torch_style_zip,
    "npy object array": npy_object_array,
}


@pytest.mark.parametrize("kind", PAYLOADS)
def test_the_payloads_are_live_when_unpickled(tmp_path, kind):
    sentinel = tmp_path / "pwned"
    run_the_payload_unsafely(kind, PAYLOADS[kind](str(sentinel)))
    assert sentinel.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_payload_renamed_to_a_model_file_is_refused_and_runs_nothing(tmp_path, kind):
    sentinel = tmp_path / "pwned"
    refused(tmp_path / "model.safetensors", PAYLOADS[kind](str(sentinel)))
    with pytest.raises(ModelFileError):
        io.inspect(tmp_path / "model.safetensors")
    assert not sentinel.exists()


def with_layer(good: bytes, layer) -> bytes:
    """The good file with its middle layer replaced and the checksum recomputed."""
    description, tensors = parts(good)
    description["architecture"]["layers"][1] = layer
    return assemble(description, tensors)


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "builtins.eval",
        "__import__",
        "posix.system",
        "subprocess.Popen",
        "pickle.loads",
        "Module",
        "leakyrelu",
        "LeakyReLU.__init__",
        "nn.LeakyReLU",
        "",
        "__class__",
    ],
)
def test_a_layer_type_outside_the_registry_is_refused(tmp_path, good, name):
    layer = {"type": name, "args": ["touch pwned"]}
    message = refused(tmp_path / "model.safetensors", with_layer(good, layer))
    assert f"model.1 has unknown layer type {name!r}" in message


LINEAR = {"type": "Linear", "in_features": 2, "out_features": 2, "bias": True, "dtype": "float32"}


CONV2D = {
    "type": "Conv2d",
    "in_channels": 2,
    "out_channels": 2,
    "kernel_size": [3, 3],
    "stride": [1, 1],
    "padding": [0, 0],
    "dilation": [1, 1],
    "groups": 1,
    "bias": True,
    "dtype": "float32",
}
POOL = {"type": "MaxPool2d", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
BATCH_NORM_2D = {
    "type": "BatchNorm2d",
    "num_features": 2,
    "eps": 1e-5,
    "momentum": 0.1,
    "affine": True,
    "dtype": "float32",
}


LAYER_ATTACKS = [
    ({**LINEAR, "in_features": "__import__('os').system('x')"}, "in_features must be an integer"),
    ({**LINEAR, "in_features": True}, "in_features must be an integer"),
    ({**LINEAR, "in_features": 2**40}, "in_features must be an integer from 1 to"),
    ({**LINEAR, "out_features": 0}, "out_features must be an integer from 1 to"),
    ({**LINEAR, "bias": "yes"}, "bias must be true or false"),
    ({**LINEAR, "dtype": "object"}, "dtype must be one of 'float32', 'float64'"),
    ({**LINEAR, "rng": "os.urandom"}, "unknown ['rng']"),
    ({"type": "Linear", "in_features": 2}, "missing ['bias', 'dtype', 'out_features']"),
    ({"type": "LeakyReLU", "negative_slope": "eval"}, "negative_slope must be a finite number"),
    ({"type": "GELU", "approximate": "exec"}, "approximate must be one of 'none', 'tanh'"),
    ({"type": "Dropout", "p": 1.0}, "p must be in [0, 1)"),
    ({"type": "Softmax", "dim": 10**6}, "dim must be an integer from -64 to 63"),
    (
        {
            "type": "BatchNorm1d",
            "num_features": 2,
            "eps": 0,
            "momentum": 0.1,
            "affine": True,
            "dtype": "float32",
        },
        "eps must be > 0",
    ),
    (
        {
            "type": "LayerNorm",
            "normalized_shape": [2, -1],
            "eps": 1e-5,
            "elementwise_affine": True,
            "dtype": "float32",
        },
        "normalized_shape must be an integer from 1",
    ),
    ({**CONV2D, "kernel_size": [-3, 3]}, "kernel_size must be an integer from 1"),
    ({**CONV2D, "kernel_size": 3}, "kernel_size must be a list of 2 integers"),
    ({**CONV2D, "kernel_size": [3, 3, 3]}, "kernel_size must be a list of 2 integers"),
    ({**CONV2D, "stride": [0, 1]}, "stride must be an integer from 1"),
    ({**CONV2D, "dilation": [1, True]}, "dilation must be an integer from 1"),
    ({**CONV2D, "padding": "full"}, "padding must be one of 'same', 'valid'"),
    ({**CONV2D, "padding": [-1, 0]}, "padding must be an integer from 0"),
    ({**CONV2D, "padding": "same", "stride": [2, 2]}, "padding 'same' needs stride 1"),
    ({**CONV2D, "groups": 2, "in_channels": 3}, "in_channels (3) must be divisible by groups (2)"),
    ({**CONV2D, "in_channels": 0}, "in_channels must be an integer from 1"),
    ({**CONV2D, "rng": 0}, "unknown ['rng']"),
    ({**CONV2D, "type": "Conv1d"}, "kernel_size must be a list of 1 integers"),
    ({**POOL, "padding": [2, 0]}, "must be at most half the kernel size"),
    ({**POOL, "stride": None}, "stride must be a list of 2 integers"),
    ({**POOL, "type": "AvgPool2d"}, "missing ['count_include_pad']"),
    ({**POOL, "type": "AvgPool2d", "count_include_pad": 1}, "count_include_pad must be true"),
    ({"type": "AdaptiveAvgPool2d", "output_size": [0, 1]}, "output_size must be an integer"),
    ({"type": "Dropout2d", "p": -0.5}, "p must be in [0, 1)"),
    ({**BATCH_NORM_2D, "momentum": 2}, "momentum must be in [0, 1]"),
    ({"type": "Sequential", "layers": [], "function": "os.system"}, "exactly the keys"),
    ({"type": "Sequential", "layers": "os.system"}, "'layers' (a list)"),
    ("os.system", "must be an object with a string 'type'"),
    ({"class_name": "Lambda", "function": "eval"}, "must be an object with a string 'type'"),
]


@pytest.mark.parametrize(
    ("layer", "complaint"), LAYER_ATTACKS, ids=[complaint for _, complaint in LAYER_ATTACKS]
)
def test_a_layer_argument_of_the_wrong_type_or_range_is_refused(tmp_path, good, layer, complaint):
    assert complaint in refused(tmp_path / "model.safetensors", with_layer(good, layer))


@pytest.mark.parametrize(
    ("layer", "key", "value"),
    [
        (0, "in_channels", 2),
        (0, "out_channels", 8),
        (0, "kernel_size", [5, 5]),
        (1, "num_features", 3),
    ],
)
def test_a_conv_layer_whose_arguments_disagree_with_its_weights_is_refused(
    tmp_path, layer, key, value
):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), nn.BatchNorm2d(4), nn.Flatten())
    io.save(model, tmp_path / "good.safetensors")
    description, tensors = parts((tmp_path / "good.safetensors").read_bytes())
    description["architecture"]["layers"][layer][key] = value
    message = refused(tmp_path / "model.safetensors", assemble(description, tensors))
    assert "has shape" in message and "but the architecture needs" in message


def test_sequentials_nested_too_deeply_are_refused(tmp_path, good):
    layer = {"type": "ReLU"}
    for _ in range(40):
        layer = {"type": "Sequential", "layers": [layer]}
    assert "nested more than 32 deep" in refused(
        tmp_path / "m.safetensors", with_layer(good, layer)
    )


def test_json_nested_beyond_the_recursion_limit_is_refused(tmp_path, good):
    _, tensors = parts(good)
    data = safetensors.numpy.save(tensors, metadata={"chainrule": "[" * 100_000 + "]" * 100_000})
    assert "nested too deeply" in refused(tmp_path / "model.safetensors", data)


def test_an_enormous_declared_layer_is_refused_before_anything_is_allocated(tmp_path, good):
    huge = {**LINEAR, "in_features": 2**31 - 1, "out_features": 2**31 - 1}
    message = refused(tmp_path / "model.safetensors", with_layer(good, huge))
    assert "tensors do not match the architecture" in message or "has shape" in message


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero are POSIX")
@pytest.mark.parametrize("kind", ["directory", "fifo", "/dev/zero"])
def test_something_other_than_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "model.safetensors"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block until a writer appeared
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    assert "not a regular file" in refused(path)


# ---- corruption ----------------------------------------------------------------------------------
def resigned(edit):
    def make(data: bytes) -> bytes:
        description, tensors = parts(data)
        edit(description, tensors)
        return assemble(description, tensors)

    return make


def set_item(mapping, key, value):
    mapping[key] = value


def poison(tensors, value):
    tensors["0.weight"] = tensors["0.weight"].copy()
    tensors["0.weight"][0, 0] = value


def without_checksum(data: bytes) -> bytes:
    description, tensors = parts(data)
    del description["sha256"]
    return safetensors.numpy.save(tensors, metadata={"chainrule": json.dumps(description)})


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

# name: (make the corrupt file from a good one's bytes, words the error must contain)
CORRUPTIONS = {
    "empty file": (lambda d: b"", "0 bytes, too short"),
    "a few bytes": (lambda d: d[:3], "3 bytes, too short"),
    "header length zero": (lambda d: bytes(8), "header is not valid JSON"),
    "header length 2**40": (
        lambda d: struct.pack("<Q", 2**40) + d[8:],
        "not a model file: its first 8 bytes give a header length of 1099511627776",
    ),
    "header length past the end": (
        lambda d: struct.pack("<Q", len(d)) + d[8:],
        "bytes that follow it",
    ),
    "header not UTF-8": (lambda d: raw(b'{"\xff":1}'), "header is not UTF-8"),
    "header not JSON": (lambda d: raw("{'w': 1}"), "header is not valid JSON"),
    "header a JSON list": (lambda d: raw("[]"), "header is a JSON list, not an object"),
    "header with NaN": (lambda d: raw('{"__metadata__": NaN}'), "NaN is not valid JSON"),
    "offsets past the end": (
        lambda d: raw({"w": {**F32x2, "data_offsets": [8, 16]}}, bytes(8)),
        "data_offsets [8, 16] reach past the end of the 8-byte data buffer",
    ),
    "overlapping offsets": (
        lambda d: raw({"a": F32x2, "b": {**F32x2, "data_offsets": [4, 12]}}, bytes(12)),
        "tensors 'a' and 'b' overlap",
    ),
    "gap between tensors": (
        lambda d: raw({"a": F32x2, "b": {**F32x2, "data_offsets": [12, 20]}}, bytes(20)),
        "bytes 8..12 of the data buffer belong to no tensor",
    ),
    "shape x dtype not matching the bytes": (
        lambda d: raw({"w": {**F32x2, "shape": [3]}}, bytes(8)),
        "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8",
    ),
    "duplicate names": (
        lambda d: raw(f'{{"w": {json.dumps(F32x2)}, "w": {json.dumps(F32x2)}}}', bytes(8)),
        "header names 'w' twice",
    ),
    "unknown dtype": (
        lambda d: raw({"w": {**F32x2, "dtype": "F31"}}, bytes(8)),
        "unknown or unsupported dtype 'F31'",
    ),
    "bfloat16": (
        lambda d: raw({"w": {**F32x2, "dtype": "BF16", "shape": [4]}}, bytes(8)),
        "unknown or unsupported dtype 'BF16'",
    ),
    "negative dimension": (
        lambda d: raw({"w": {**F32x2, "shape": [-2]}}, bytes(8)),
        "non-negative integers",
    ),
    "extra entry key": (
        lambda d: raw({"w": {**F32x2, "eval": "x"}}, bytes(8)),
        "header entry has keys",
    ),
    "metadata not strings": (
        lambda d: raw({"__metadata__": {"chainrule": {"a": 1}}}),
        "must map strings to strings",
    ),
    "trailing bytes": (lambda d: d + bytes(4), "4 trailing bytes after the last tensor"),
    "last byte missing": (lambda d: d[:-1], "reach past the end of the 43-byte data buffer"),
    "plain safetensors file": (
        lambda d: safetensors.numpy.save({"w": np.zeros(2)}),
        "not a chainrule model file",
    ),
    "description not JSON": (
        lambda d: safetensors.numpy.save(parts(d)[1], metadata={"chainrule": "{os.system"}),
        "the chainrule description is not valid JSON",
    ),
    "another format": (
        resigned(lambda desc, t: set_item(desc, "format", "keras")),
        "format 'keras'",
    ),
    "newer format version": (
        resigned(lambda desc, t: set_item(desc, "format_version", 2)),
        "format version 2 is newer than version 1",
    ),
    "missing checksum": (without_checksum, "the description has keys"),
    "missing tensor": (resigned(lambda desc, t: t.pop("2.bias")), "missing ['2.bias'], extra []"),
    "extra tensor": (
        resigned(lambda desc, t: set_item(t, "2.extra", np.zeros(1, np.float32))),
        "missing [], extra ['2.extra']",
    ),
    "shape disagreeing with the architecture": (
        resigned(lambda desc, t: set_item(t, "0.weight", t["0.weight"].T.copy())),
        "tensor '0.weight' has shape (3, 2) but the architecture needs (2, 3)",
    ),
    "dtype disagreeing with the architecture": (
        resigned(lambda desc, t: set_item(t, "0.weight", t["0.weight"].astype(np.float64))),
        "tensor '0.weight' is float64 but the architecture declares float32",
    ),
    "NaN weights": (resigned(lambda desc, t: poison(t, np.nan)), "tensor '0.weight' contains NaN"),
    "infinite weights": (
        resigned(lambda desc, t: poison(t, -np.inf)),
        "contains NaN or infinite values",
    ),
    "flipped bit in the weights": (lambda d: flip(d, len(d) - 3, 5), "checksum mismatch"),
    # '0.25' -> '0.24': a layer argument changes, which only the checksum can notice.
    "flipped bit in the header": (lambda d: flip(d, d.index(b"0.25") + 3), "checksum mismatch"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_each_corruption_is_named_in_the_error(tmp_path, good, case):
    make, words = CORRUPTIONS[case]
    assert words in refused(tmp_path / "model.safetensors", make(good))


@pytest.mark.parametrize("tenth", range(10))
def test_a_file_truncated_anywhere_is_refused(tmp_path, good, tenth):
    refused(tmp_path / "model.safetensors", good[: len(good) * tenth // 10])


@pytest.mark.parametrize("index", [0, 3, 7])
def test_a_flipped_bit_in_the_header_length_is_refused(tmp_path, good, index):
    refused(tmp_path / "model.safetensors", flip(good, index))


# ---- fuzzing -------------------------------------------------------------------------------------
@contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging (POSIX; elsewhere the test only runs without the guard)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"loading took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(path, data: bytes) -> str:
    """'loaded' or the ModelFileError's defect with numbers removed; anything else propagates."""
    path.write_bytes(data)
    try:
        with time_limit(2.0):
            model = io.load(path)
    except ModelFileError as error:  # the defect, names and numbers elided, to tally the kinds
        return re.sub(r"tensor .*?: |\d+|\(.*|\[.*", "", error.defect)[:50]
    for name, array in tiny_model().state_dict().items():  # accepted only if nothing changed
        np.testing.assert_array_equal(model.state_dict()[name], array)
    return "loaded"


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


def test_random_bytes_raise_only_model_file_error(tmp_path):
    outcomes = Counter()

    @FUZZ
    @given(st.binary(max_size=300))
    def check(data):
        outcomes[outcome(tmp_path / "fuzz.safetensors", data)] += 1

    check()
    assert sum(outcomes.values()) >= 1000 and outcomes["loaded"] == 0, outcomes


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
ITEMSIZE = {"F32": 4, "F64": 8, "I64": 8, "U8": 1, "BOOL": 1, "F16": 2}


@st.composite
def near_valid_files(draw) -> bytes:
    """A header whose tensors tile the buffer, then perhaps one field or the buffer broken, so
    every check of the reader is reached, not just the first."""
    header, offset = {}, 0
    for name in draw(st.lists(st.text(min_size=1, max_size=3), max_size=3, unique=True)):
        code = draw(st.sampled_from(list(ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = int(np.prod(shape)) * ITEMSIZE[code]
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        text = st.text(max_size=4)
        header["__metadata__"] = draw(st.dictionaries(text, text, max_size=2) | st.integers())
    buffer = draw(st.binary(min_size=offset, max_size=offset))
    damage = draw(st.sampled_from(["none", "field", "buffer"]))
    if damage == "field" and len(header):
        entry = header[draw(st.sampled_from(sorted(header)))]
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        numbers = st.lists(st.integers(-2, 40), max_size=3)
        value = draw(numbers | JSON | st.sampled_from(["F31", "BF16", "I8"]))
        if isinstance(entry, dict):
            entry[key] = value
    elif damage == "buffer":
        buffer = buffer[: draw(st.integers(0, len(buffer)))] + draw(st.binary(max_size=4))
    return raw(json.dumps(header), buffer)  # json.dumps may write NaN, which must be refused too


def test_random_headers_raise_only_model_file_error(tmp_path):
    outcomes = Counter()

    @settings(FUZZ, max_examples=500)  # on top of the 1000 random byte strings, and slower to draw
    @given(near_valid_files())
    def check(data):
        outcomes[outcome(tmp_path / "fuzz.safetensors", data)] += 1

    check()
    assert sum(outcomes.values()) >= 500 and outcomes["loaded"] == 0, outcomes


def test_random_flips_and_truncations_of_a_valid_file_never_escape(tmp_path, good):
    outcomes = Counter()
    edit = st.tuples(
        st.sampled_from(["flip", "set", "truncate"]),
        st.integers(0, len(good) - 1),
        st.integers(0, 255),
    )

    @FUZZ
    @given(st.lists(edit, min_size=1, max_size=3))
    def check(edits):
        data = bytearray(good)
        for kind, index, value in edits:
            index = min(index, len(data) - 1)
            if kind == "flip" and data:
                data[index] ^= 1 << (value % 8)
            elif kind == "set" and data:
                data[index] = value
            else:
                del data[index:]
        result = outcome(tmp_path / "fuzz.safetensors", bytes(data))
        # Accepted only if the edits cancelled out: every byte of this file matters.
        assert result != "loaded" or data == good
        outcomes[result] += 1

    check()
    assert sum(outcomes.values()) >= 1000, outcomes


# ---- second pass: every path bounded, every echo short and printable -----------------------------
def cli_refusal(capsys, *args: str) -> str:
    """Run `chainrule ARGS` in-process; it must refuse with one line and exit status 2."""
    from chainrule.cli import main

    assert main(list(args)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    return captured.err


def with_metadata(good: bytes, metadata: dict, model: nn.Module | None = None) -> bytes:
    """A validly signed model file (tiny_model unless given) carrying `metadata`."""
    description, tensors = parts(good)
    if model is not None:
        description["architecture"] = io.describe_model(model)
        tensors = model.state_dict()
    description["metadata"] = metadata
    return assemble(description, tensors)


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("1,2,3\n4,5,6\n")
    return path


def test_metadata_nested_just_below_the_parser_limit_is_refused_on_every_path(
    tmp_path, good, rows, capsys
):
    # json.loads accepts 990 levels; json.dumps in the checksum then raised RecursionError. The
    # depth is refused before the checksum is computed, so the recorded one may stay stale.
    description, tensors = parts(good)
    description["metadata"] = {"deep": "PLACEHOLDER"}
    text = json.dumps(description).replace('"PLACEHOLDER"', "[" * 990 + "]" * 990)
    data = safetensors.numpy.save(tensors, metadata={"chainrule": text})
    path = tmp_path / "model.safetensors"
    assert "nested too deeply" in refused(path, data)
    assert "nested too deeply" in cli_refusal(capsys, "info", str(path))
    assert "nested too deeply" in cli_refusal(capsys, "predict", str(path), str(rows))


def test_saving_metadata_nested_too_deeply_is_refused():
    nested: list = []
    for _ in range(990):
        nested = [nested]
    with pytest.raises(ValueError, match="nested more than"):
        io.save(tiny_model(), "never-written.safetensors", metadata={"deep": nested})


CLASSIFIER = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 3, rng=1))

# metadata predictions compute with that does not fit CLASSIFIER: (metadata, words of the error)
UNFIT_METADATA = {
    "class names shorter than the outputs": (
        {"task": "classification", "class_names": ["a", "b"]},
        "'class_names' holds 2 names, but the model predicts 3 classes",
    ),
    "a mean per feature of another data set": (
        {"mean": [0.0] * 100_000, "std": [1.0] * 100_000},
        "'mean' holds 100000 values, but the model takes 3 input features",
    ),
    "std of 0": ({"mean": [0, 0, 0], "std": [1, 0, 1]}, "'std' is 0 for feature 2"),
    "mean beyond float32": ({"mean": [1e39, 0, 0], "std": [1, 1, 1]}, "not finite in float32"),
    "mean without std": ({"mean": [0, 0, 0]}, "only one of 'mean' and 'std'"),
    "n_features of another model": ({"n_features": 7}, "'n_features' is 7 but the model takes 3"),
}


@pytest.mark.parametrize("case", UNFIT_METADATA)
def test_metadata_that_does_not_fit_the_model_is_refused_when_read(
    tmp_path, good, rows, capsys, case
):
    from chainrule.predictor import Predictor

    metadata, words = UNFIT_METADATA[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(with_metadata(good, metadata, CLASSIFIER))
    with time_limit(2.0), pytest.raises(ModelFileError, match=re.escape(words)):
        Predictor.load(path)
    assert words in cli_refusal(capsys, "predict", str(path), str(rows))


def test_class_names_that_fit_predict_by_name(tmp_path, good, rows, capsys):
    from chainrule.cli import main

    path = tmp_path / "model.safetensors"
    metadata = {"task": "classification", "loss": "cross_entropy", "class_names": ["a", "b", "c"]}
    path.write_bytes(with_metadata(good, metadata, CLASSIFIER))
    assert main(["predict", str(path), str(rows)]) == 0
    assert set(capsys.readouterr().out.split()) <= {"a", "b", "c"}


def peak_bytes(function) -> int:
    """Peak bytes traced (Python and NumPy allocations) while `function` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_huge_file_with_a_tiny_valid_header_is_refused_having_read_only_the_header(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw({"w": F32x2}, bytes(8)))
    os.truncate(path, 1_500_000_000)  # sparse: costs no disk
    with pytest.raises(ModelFileError, match="trailing bytes after the last tensor"):
        assert peak_bytes(lambda: io.load(path)) < 10_000_000
    peak = peak_bytes(lambda: pytest.raises(ModelFileError, io.load, path))
    assert peak < 10_000_000, peak


def test_a_header_of_a_million_empty_tensors_is_refused_before_parsing(tmp_path):
    entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = "{" + ",".join(entry % i for i in range(1_200_000)) + "}"
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw(header))
    del header
    caught = []

    def load():
        with pytest.raises(ModelFileError, match="more than the 2000000 a model file may hold"):
            io.load(path)
        caught.append(True)

    peak = peak_bytes(load)
    assert caught and peak < 2.5 * path.stat().st_size, peak  # the header read once, not parsed


def test_more_tensors_than_the_limit_are_refused(tmp_path):
    from chainrule.safetensors_format import MAX_TENSORS

    entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = "{" + ",".join(entry % i for i in range(MAX_TENSORS + 1)) + "}"
    assert f"more than the limit of {MAX_TENSORS}" in refused(
        tmp_path / "m.safetensors", raw(header)
    )


def test_control_characters_from_the_file_are_escaped_in_info_and_predict(
    tmp_path, good, rows, capsys
):
    from chainrule.cli import main

    evil = "\x1b[2J\x1b]0;owned\x07\u202e"
    metadata = {evil: evil, "task": "classification", "class_names": [evil] * 3}
    path = tmp_path / "model.safetensors"
    path.write_bytes(with_metadata(good, metadata, CLASSIFIER))
    assert main(["info", str(path)]) == 0
    assert main(["predict", str(path), str(rows)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out  # shown, escaped, rather than dropped


def test_control_characters_are_escaped_in_error_messages(tmp_path, good, capsys):
    description, tensors = parts(good)
    description["library_version"] = "\x1b[2J" * 10
    description["format_version"] = 9
    path = tmp_path / "model.safetensors"
    path.write_bytes(assemble(description, tensors))
    assert "\x1b" not in cli_refusal(capsys, "info", str(path))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({**F32x2, "shape": [1] * 1_000_000}, "1000000 items"),  # 10 M: a 30 MB error line
        ({**F32x2, "shape": [0, 2**62]}, "larger than any array can be"),  # "array is too big"
        # Their product passed Python's 4300-digit limit for str(), a plain ValueError.
        ({**F32x2, "shape": [10**4299, 10**4299]}, "larger than any array can be"),
        ({**F32x2, "data_offsets": [0, 10**4299]}, "reach past the end"),
    ],
    ids=["10M-entry shape", "too big for NumPy", "4300-digit shape", "4300-digit offset"],
)
def test_values_echoed_in_errors_are_short_and_errors_name_the_file(tmp_path, entry, words):
    message = refused(tmp_path / "model.safetensors", raw({"w": entry}, bytes(8)))
    assert words in message and len(message) < 1200, message[:2000]


def test_a_dangling_symlink_is_a_model_file_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.symlink_to(tmp_path / "gone.safetensors")
    assert "which does not exist" in refused(path)
