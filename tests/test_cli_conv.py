"""`chainrule train --conv` end to end as a user runs it: digits to 98 % with a CNN at its
defaults, then predict (flat pixel rows), info and explain on the saved file; images from IDX files
and from a CSV of pixels with --image-shape; and one-line refusals.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from chainrule.datasets import digits, load_dataset
from chainrule.predictor import Predictor
from tests.test_cli import SUMMARY, assert_one_line_error, cli


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """`chainrule train digits --conv 16,32` at its defaults, saved."""
    path = tmp_path_factory.mktemp("cnn") / "cnn.safetensors"
    return path, cli("train", "digits", "--conv", "16,32", "--save", path, "--quiet")


def test_train_digits_with_conv_reaches_98_percent_at_its_defaults(cnn_run):
    path, result = cnn_run
    assert result.returncode == 0, result.stderr
    summary = SUMMARY.match(result.stdout.splitlines()[-1])
    assert summary and summary.group(1) == "test", result.stdout
    assert float(summary.group(2)) >= 0.98, result.stdout


def test_the_saved_cnn_keeps_its_input_shape_and_pixel_scaling(cnn_run):
    predictor = Predictor.load(cnn_run[0])
    assert predictor.input_shape == (1, 8, 8) and predictor.n_features == 64
    assert len(predictor.metadata["mean"]) == len(predictor.metadata["std"]) == 1
    X, y = digits()
    flat = predictor.transform(X[:5])
    np.testing.assert_array_equal(predictor.transform(X[:5].reshape(5, 1, 8, 8)), flat)
    np.testing.assert_array_equal(predictor.transform(X[0].reshape(1, 8, 8)), flat[:1])
    assert flat.shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match=r"images of shape \(1, 8, 8\) \(or rows of 64 pixels\)"):
        predictor.transform(np.zeros((2, 63)))


def test_predict_reads_a_csv_of_flat_pixel_rows(cnn_run, tmp_path):
    X, y = digits()
    np.savetxt(tmp_path / "rows.csv", X[:40], delimiter=",", fmt="%g")
    result = cli("predict", cnn_run[0], tmp_path / "rows.csv")
    assert result.returncode == 0, result.stderr
    predicted = np.array([int(line) for line in result.stdout.split()])
    assert (predicted == y[:40]).mean() >= 0.95


def test_info_shows_each_layers_output_shape(cnn_run):
    result = cli("info", cnn_run[0])
    assert result.returncode == 0, result.stderr
    assert "input_shape: [1, 8, 8]" in result.stdout and "  input    (1, 8, 8)" in result.stdout
    for shape in ["(16, 8, 8)", "(32, 8, 8)", "(32, 4, 4)", "(512,)", "(64,)", "(10,)"]:
        assert f"-> {shape}" in result.stdout


def test_explain_walks_the_dense_head_and_sums_a_conv_weight_over_its_positions(cnn_run):
    X, _ = digits()
    row = ",".join(f"{v:g}" for v in X[0])
    result = cli("explain", cnn_run[0], "--input", row, "--target", "0")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "rows of 64 pixels as images (1, 8, 8)" in text
    assert "a^[0] = flatten(features(x))" in text
    assert "Layer 2: Linear '8'" in text and "Layer 1: Linear '6'" in text
    assert "∂L/∂W[0,0,0,0] = Σ_n Σ_(y,x) ∂L/∂z[n,0,y,x] · a_prev[n,0,y·1+0·1−1, x·1+0·1−1]" in text
    assert "MISMATCH" not in text
    assert text.rstrip().endswith(("agrees", "within the differences' own rounding"))


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_mnist_idx_files_train_as_images(tmp_path):
    X, y = digits()
    pixels = (X[:200] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y[:200].astype(np.uint8)))
    images = tmp_path / "train-images-idx3-ubyte"
    assert load_dataset(images, images=True).X.shape == (200, 1, 8, 8)
    model = tmp_path / "m.safetensors"
    result = cli("train", images, "--conv", "4", "--epochs", "2", "--save", model, "--quiet")
    assert result.returncode == 0, result.stderr
    assert Predictor.load(model).input_shape == (1, 8, 8)


def test_a_csv_of_pixels_trains_with_image_shape(tmp_path):
    X, y = digits()
    table = np.column_stack([X[:200], y[:200]])
    np.savetxt(tmp_path / "pixels.csv", table, delimiter=",", fmt="%g")
    model = tmp_path / "m.safetensors"
    result = cli(
        "train", tmp_path / "pixels.csv", "--conv", "4", "--image-shape", "1,8,8",
        "--epochs", "2", "--save", model, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Predictor.load(model).input_shape == (1, 8, 8)
    np.savetxt(tmp_path / "rows.csv", X[:3], delimiter=",", fmt="%g")
    assert len(cli("predict", model, tmp_path / "rows.csv").stdout.split()) == 3


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["moons", "--conv", "4"], "--conv needs images (channels, height, width)"),
        (["digits", "--conv", "4", "--image-shape", "1,8,9"], "holds 72 pixels, the data has 64"),
        (["digits", "--image-shape", "1,8,8"], "--image-shape shapes the input of a CNN"),
        (["digits", "--conv", "4,x"], "--conv takes sizes like 16,32"),
        (["digits", "--conv", "0"], "conv channel count must be an integer from 1"),
    ],
)
def test_bad_conv_options_get_one_line(arguments, complaint):
    assert complaint in assert_one_line_error(cli("train", *arguments))
