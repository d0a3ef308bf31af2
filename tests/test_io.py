"""Model files: save -> load is bit-exact, the files are plain safetensors, and saves are atomic."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from chainrule import io, nn
from chainrule import safetensors_format as st
from chainrule.architecture import output_shapes
from chainrule.atomic import atomic_write, remove_stale_temporaries
from chainrule.random import get_rng, manual_seed

REPO = Path(io.__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and rlimits")


def every_layer_model(dtype, rng) -> nn.Sequential:
    """Each built-in layer type at least once, nested Sequential included, with random state."""
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 8, dtype=dtype, rng=rng),
        nn.BatchNorm1d(8, eps=1e-3, momentum=0.2, dtype=dtype),
        nn.LeakyReLU(0.05),
        nn.Sequential(
            nn.Linear(8, 8, bias=False, dtype=dtype, rng=rng),
            nn.LayerNorm(8, eps=1e-4, dtype=dtype),
            nn.GELU("tanh"),
        ),
        nn.Dropout(0.25),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.ReLU(),
        nn.Softplus(),
        nn.Identity(),
        nn.GELU(),
        nn.LayerNorm((8,), elementwise_affine=False, dtype=dtype),
        nn.BatchNorm1d(8, affine=False, dtype=dtype),
        nn.Linear(8, 3, dtype=dtype, rng=rng),
        nn.Softmax(dim=-1),
    )
    # Random values everywhere (running variances positive), so a mixed-up tensor cannot go unseen.
    state = {name: rng.uniform(0.5, 1.5, array.shape) for name, array in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def inputs(dtype, rng) -> np.ndarray:
    return rng.standard_normal((5, 2, 3)).astype(dtype)  # (batch, 2, 3), flattened to 6 features


def every_conv_layer_model(dtype, rng) -> nn.Sequential:
    """Each image layer type at least once, with random state; input (batch, 2, 9, 9)."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", dtype=dtype, rng=rng),
        nn.BatchNorm2d(4, eps=1e-3, momentum=0.2, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=(2, 1), padding=1),
        nn.Conv2d(4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, bias=False, dtype=dtype, rng=rng),
        nn.BatchNorm2d(6, affine=False, dtype=dtype),
        nn.AvgPool2d((2, 3), 1, (1, 1), count_include_pad=False),
        nn.Dropout2d(0.25),
        nn.AdaptiveAvgPool2d((3, 2)),
        nn.Flatten(),
        nn.Linear(36, 3, dtype=dtype, rng=rng),
    )
    state = {name: rng.uniform(0.5, 1.5, array.shape) for name, array in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def every_conv1d_model(dtype, rng) -> nn.Sequential:
    """Conv1d in each padding form; input (batch, 2, 10)."""
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding="same", dtype=dtype, rng=rng),
        nn.Conv1d(4, 4, 2, stride=2, padding=1, dilation=2, groups=2, dtype=dtype, rng=rng),
        nn.Conv1d(4, 2, 1, padding="valid", bias=False, dtype=dtype, rng=rng),
    ).eval()


# ---- round trip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("make", "shape"), [(every_conv_layer_model, (5, 2, 9, 9)), (every_conv1d_model, (5, 2, 10))]
)
def test_image_layers_round_trip_bit_for_bit(tmp_path, rng, dtype, make, shape):
    model = make(dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    io.save(model, tmp_path / "model.safetensors")
    loaded = io.load(tmp_path / "model.safetensors")
    assert io.describe_model(loaded) == io.describe_model(model)
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for name, array in original.items():
        assert restored[name].dtype == array.dtype, name
        np.testing.assert_array_equal(restored[name], array, err_msg=name)
    expected, actual = model(x).data, loaded(x).data
    assert actual.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_predicts_bit_exactly_with_the_same_dtype(tmp_path, rng, dtype):
    model = every_layer_model(dtype, rng)
    x = inputs(dtype, rng)
    io.save(model, tmp_path / "model.safetensors")
    loaded = io.load(tmp_path / "model.safetensors")
    expected, actual = model(x).data, loaded(x).data
    assert actual.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_restores_every_parameter_and_buffer_exactly(tmp_path, rng, dtype):
    model = every_layer_model(dtype, rng)
    io.save(model, tmp_path / "model.safetensors")
    original, restored = model.state_dict(), io.load(tmp_path / "model.safetensors").state_dict()
    assert list(restored) == list(original)
    for name, array in original.items():
        assert restored[name].dtype == array.dtype, name
        np.testing.assert_array_equal(restored[name], array, err_msg=name)


def test_load_rebuilds_the_same_architecture(tmp_path, rng):
    model = every_layer_model(np.float64, rng)
    io.save(model, tmp_path / "model.safetensors")
    assert io.describe_model(io.load(tmp_path / "model.safetensors")) == io.describe_model(model)


def test_loaded_model_is_in_eval_mode(tmp_path, rng):
    model = every_layer_model(np.float32, rng).train()
    io.save(model, tmp_path / "model.safetensors")
    assert not any(module.training for module in io.load(tmp_path / "model.safetensors").modules())


def test_a_bare_layer_round_trips(tmp_path, rng):
    layer = nn.Linear(4, 2, rng=rng)
    io.save(layer, tmp_path / "layer.safetensors")
    loaded = io.load(tmp_path / "layer.safetensors")
    assert type(loaded) is nn.Linear
    np.testing.assert_array_equal(loaded.weight.data, layer.weight.data)


def test_load_leaves_the_default_generator_untouched(tmp_path, rng):
    io.save(every_layer_model(np.float32, rng), tmp_path / "model.safetensors")
    manual_seed(5)
    expected = get_rng().random()
    manual_seed(5)
    io.load(tmp_path / "model.safetensors")
    assert get_rng().random() == expected


def test_metadata_round_trips_as_json(tmp_path, rng):
    metadata = {
        "classes": ["cat", "dog", "naïve ☃"],
        "n_features": 6,
        "mean": np.array([0.1, -2.5, 1e-30]),
        "std": (1.0, 2.0),
        "nested": {"flags": [True, None], "scale": np.float32(0.5)},
    }
    io.save(every_layer_model(np.float32, rng), tmp_path / "model.safetensors", metadata=metadata)
    _, loaded = io.load_with_metadata(tmp_path / "model.safetensors")
    assert loaded == {
        "classes": ["cat", "dog", "naïve ☃"],
        "n_features": 6,
        "mean": [0.1, -2.5, 1e-30],
        "std": [1.0, 2.0],
        "nested": {"flags": [True, None], "scale": 0.5},
    }


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        ({"mean": [1.0, float("nan")]}, ValueError, r"metadata\['mean'\]\[1\] is nan"),
        ({1: "one"}, TypeError, "keys must be strings"),
        ({"callback": print}, TypeError, r"metadata\['callback'\] is a builtin_function"),
    ],
)
def test_metadata_that_is_not_finite_json_is_refused(tmp_path, rng, metadata, error, message):
    with pytest.raises(error, match=message):
        io.save(nn.Linear(2, 1, rng=rng), tmp_path / "model.safetensors", metadata=metadata)
    assert not (tmp_path / "model.safetensors").exists()


# ---- interoperability: the files are plain safetensors -------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_files_open_with_the_safetensors_package(tmp_path, rng, dtype):
    model = every_layer_model(dtype, rng)
    io.save(model, tmp_path / "model.safetensors")
    theirs = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    ours = model.state_dict()
    assert set(theirs) == set(ours)
    for name, array in ours.items():
        assert theirs[name].dtype == array.dtype
        np.testing.assert_array_equal(theirs[name], array, err_msg=name)


def test_the_architecture_is_json_in_the_safetensors_metadata(tmp_path, rng):
    import json

    from safetensors import safe_open

    model = every_layer_model(np.float32, rng)
    io.save(model, tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", framework="np") as file:
        description = json.loads(file.metadata()["chainrule"])
    assert description["format"] == io.FORMAT_NAME
    assert description["format_version"] == io.FORMAT_VERSION == 1
    assert description["architecture"] == io.describe_model(model)
    assert re.fullmatch("[0-9a-f]{64}", description["sha256"])


ALL_DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32"]
ALL_DTYPES += ["uint64", "int64", "float64"]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tensor_files_round_trip_through_both_readers(tmp_path, rng, dtype):
    tensors = {
        "matrix": (rng.standard_normal((3, 4)) * 10).astype(dtype),
        "scalar": np.array(7, dtype=dtype),
        "empty": np.zeros((2, 0), dtype=dtype),
    }
    st.save_file(tensors, tmp_path / "t.safetensors", metadata={"note": "hi"})
    ours, metadata = st.load_file(tmp_path / "t.safetensors")
    theirs = safetensors.numpy.load_file(tmp_path / "t.safetensors")
    assert metadata == {"note": "hi"}
    for name, array in tensors.items():
        for loaded in (ours[name], theirs[name]):
            assert loaded.dtype == array.dtype and loaded.shape == array.shape
            np.testing.assert_array_equal(loaded, array)


def test_files_written_by_the_safetensors_package_are_read(rng):
    tensors = {"a": rng.standard_normal((2, 3)), "b": np.arange(5, dtype=np.int32)}
    ours, metadata = st.deserialize(safetensors.numpy.save(tensors, metadata={"k": "v"}))
    assert metadata == {"k": "v"}
    for name, array in tensors.items():
        np.testing.assert_array_equal(ours[name], array)


def test_big_endian_arrays_are_stored_little_endian(rng):
    array = rng.standard_normal(4).astype(">f8")
    restored, _ = st.deserialize(st.serialize({"x": array}))
    assert restored["x"].dtype == np.float64
    np.testing.assert_array_equal(restored["x"], array)


# ---- describe and inspect ------------------------------------------------------------------------
def test_describe_model_lists_each_layer_with_its_constructor_arguments():
    model = nn.Sequential(
        nn.Linear(2, 3, bias=False), nn.Sequential(nn.Dropout(0.1)), nn.Softmax(0)
    )
    assert io.describe_model(model) == {
        "type": "Sequential",
        "layers": [
            {
                "type": "Linear",
                "in_features": 2,
                "out_features": 3,
                "bias": False,
                "dtype": "float32",
            },
            {"type": "Sequential", "layers": [{"type": "Dropout", "p": 0.1}]},
            {"type": "Softmax", "dim": 0},
        ],
    }


def test_describe_model_refuses_modules_outside_the_registry():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"model\.1: Custom is not a built-in layer"):
        io.describe_model(nn.Sequential(nn.ReLU(), Custom()))


def test_describe_model_refuses_arguments_a_file_could_not_hold():
    with pytest.raises(ValueError, match=r"model \(Softmax\): dim must be an integer"):
        io.describe_model(nn.Softmax(dim=1.5))


def test_inspect_reports_architecture_parameters_and_metadata(tmp_path, rng):
    model = every_layer_model(np.float64, rng)
    io.save(model, tmp_path / "model.safetensors", metadata={"classes": ["a", "b", "c"]})
    info = io.inspect(tmp_path / "model.safetensors")
    assert info.num_parameters == model.num_parameters()
    assert info.architecture == io.describe_model(model)
    assert info.metadata == {"classes": ["a", "b", "c"]}
    assert [row["name"] for row in info.layers][:6] == ["0", "1", "2", "3", "4.0", "4.1"]
    assert info.layers[1]["parameters"] == 6 * 8 + 8
    assert info.tensors["2.running_var"] == ("float64", (8,))
    assert f"{model.num_parameters():,} parameters in all" in str(info)


@pytest.mark.parametrize(
    ("make", "shape"), [(every_conv_layer_model, (2, 9, 9)), (every_conv1d_model, (2, 10))]
)
def test_inspect_shows_each_layers_output_shape_as_the_forward_pass_makes_it(
    tmp_path, rng, make, shape
):
    model = make(np.float64, rng)
    io.save(model, tmp_path / "model.safetensors", metadata={"input_shape": list(shape)})
    info = io.inspect(tmp_path / "model.safetensors")
    x = rng.standard_normal((2, *shape))
    expected = []
    for layer in model:
        x = layer(x).data
        expected.append(x.shape[1:])
    assert output_shapes(info.architecture, shape) == expected
    text = str(info)
    assert f"  input    {shape}" in text
    assert all(f"-> {s}" in text for s in expected)


def test_an_mlp_file_shows_output_shapes_from_its_first_linear(tmp_path, rng):
    model = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.ReLU(), nn.Linear(3, 2, rng=rng))
    io.save(model, tmp_path / "model.safetensors")
    text = str(io.inspect(tmp_path / "model.safetensors"))
    assert "  input    (4,)" in text and text.count("-> (3,)") == 2 and "-> (2,)" in text


def test_a_shape_the_layers_do_not_fit_shows_no_output_shape_from_there_on():
    architecture = io.describe_model(nn.Sequential(nn.Flatten(), nn.Linear(5, 2), nn.ReLU()))
    assert output_shapes(architecture, (1, 2, 2)) == [(4,), None, None]


# ---- save refuses what it cannot write faithfully ------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_save_refuses_non_finite_weights_and_keeps_the_previous_file(tmp_path, rng, bad):
    path = tmp_path / "model.safetensors"
    model = nn.Sequential(nn.Linear(3, 2, rng=rng))
    io.save(model, path)
    before = path.read_bytes()
    model[0].weight.data[1, 1] = bad
    with pytest.raises(ValueError, match=r"tensors \['0\.weight'\] contain NaN or infinite"):
        io.save(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_save_refuses_a_layer_whose_weights_disagree_with_its_arguments(tmp_path, rng):
    layer = nn.Linear(3, 2, rng=rng)
    layer.weight = nn.Parameter(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="do not match what its layers describe"):
        io.save(layer, tmp_path / "model.safetensors")


# ---- atomic writes -------------------------------------------------------------------------------
def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old content that is longer")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_a_writer_raising_half_way_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"previous")

    def writer(file):
        file.write(b"x" * 100_000)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, writer)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["file.bin"]


@posix_only
def test_atomic_write_restores_the_sigxfsz_handler(tmp_path):
    before = signal.getsignal(signal.SIGXFSZ)
    atomic_write(tmp_path / "file.bin", b"data")
    assert signal.getsignal(signal.SIGXFSZ) == before


def run_python(script: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-c", textwrap.dedent(script), *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


FULL_DISK = """
    import resource, sys
    from chainrule import io, nn
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # no file may grow past 4 KiB
    try:
        io.save(nn.Sequential(nn.Linear(64, 64, rng=0)), sys.argv[1])  # ~16 KiB
    except OSError as error:
        print("errno", error.errno)
"""


@posix_only
def test_a_full_disk_fails_the_save_cleanly_and_keeps_the_previous_file(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    small = nn.Sequential(nn.Linear(2, 2, rng=rng))
    io.save(small, path)
    child = run_python(FULL_DISK, str(path))
    out, err = child.communicate(timeout=60)
    # Without SIGXFSZ ignored the child would die of the signal (returncode -25), leaving its temp.
    assert child.returncode == 0, err.decode()
    assert out.decode().split() == ["errno", str(errno.EFBIG)]
    np.testing.assert_array_equal(io.load(path)[0].weight.data, small[0].weight.data)
    assert os.listdir(tmp_path) == ["model.safetensors"]


SAVE_FOREVER = """
    import sys
    from chainrule import io, nn
    models = [nn.Sequential(nn.Linear(256, 256, rng=seed)) for seed in (0, 1)]  # 257 KiB each
    i = 0
    while True:
        io.save(models[i % 2], sys.argv[1], metadata={"seed": i % 2})
        if i == 0:
            print("ready", flush=True)
        i += 1
"""


@posix_only
def test_a_save_killed_at_random_moments_never_leaves_a_broken_file(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    expected = [nn.Linear(256, 256, rng=seed).weight.data for seed in (0, 1)]
    temporary = re.compile(r"\.model\.safetensors\.tmp-\d+-[0-9a-f]{8}")
    leftovers = 0
    for _ in range(6):
        child = run_python(SAVE_FOREVER, str(path))
        assert child.stdout.readline() == b"ready\n", child.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.05))
        child.kill()  # SIGKILL: no handler, no cleanup
        child.communicate()
        model, metadata = io.load_with_metadata(path)
        np.testing.assert_array_equal(model[0].weight.data, expected[metadata["seed"]])
        others = [name for name in os.listdir(tmp_path) if name != "model.safetensors"]
        assert all(temporary.fullmatch(name) for name in others), others
        leftovers += len(others)
    io.save(nn.Linear(1, 1), path)  # the killed writers are gone, so their temporaries are stale
    assert os.listdir(tmp_path) == ["model.safetensors"], f"{leftovers} leftovers before"


@posix_only
def test_a_save_removes_stale_temporaries_of_its_target_only(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead, alive = finished.pid, os.getppid()
    names = {
        "stale": f".model.safetensors.tmp-{dead}-deadbeef",
        "live writer": f".model.safetensors.tmp-{alive}-0badf00d",
        "other target": f".other.safetensors.tmp-{dead}-deadbeef",
        "not ours": f"model.safetensors.tmp-{dead}-deadbeef",
        "impossible pid": f".model.safetensors.tmp-{10**30}-deadbeef",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path / "model.safetensors")
    assert removed == [str(tmp_path / names["stale"])]
    io.save(nn.Linear(1, 1), tmp_path / "model.safetensors")
    expected = {"model.safetensors", *names.values()} - {names["stale"]}
    assert set(os.listdir(tmp_path)) == expected
