"""Built-in data sets and the CSV / NPZ / IDX loaders: shapes, labels, determinism, and errors."""

import gzip
import os
import struct

import numpy as np
import pytest

from chainrule import datasets, loaders
from chainrule.datasets import DATASETS, load_csv, load_dataset, load_idx, load_npz

GENERATORS = ["moons", "circles", "spirals", "blobs", "sine"]


# ---- built-in data sets ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_builtin_dataset_shapes_dtypes_and_labels(name):
    info = DATASETS[name]
    X, y = info.loader()
    assert X.dtype == np.float32 and X.ndim == 2 and len(X) == len(y)
    if info.task == "classification":
        assert y.dtype == np.int64 and y.shape == (len(X),)
        assert set(np.unique(y)) == set(range(info.n_classes))
    else:
        assert y.dtype == np.float32 and y.shape == (len(X), 1)


@pytest.mark.parametrize(
    "function, outputs",
    [(datasets.xor, [0, 1, 1, 0]), (datasets.and_, [0, 0, 0, 1]), (datasets.or_, [0, 1, 1, 1])],
)
def test_truth_tables(function, outputs):
    X, y = function()
    np.testing.assert_array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, outputs)


def test_keyword_named_tables_are_registered_by_their_plain_names():
    assert DATASETS["and"].loader is datasets.and_ and DATASETS["or"].loader is datasets.or_


@pytest.mark.parametrize("name", list(DATASETS))
def test_dtype_option_gives_float64_features(name):
    X, _ = DATASETS[name].loader(dtype=np.float64)
    assert X.dtype == np.float64


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_gives_the_same_data(name):
    X1, y1 = DATASETS[name].loader(rng=7)
    X2, y2 = DATASETS[name].loader(rng=np.random.default_rng(7))
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("name", GENERATORS)
def test_different_seeds_give_different_data(name):
    X1, _ = DATASETS[name].loader(rng=1)
    X2, _ = DATASETS[name].loader(rng=2)
    assert not np.array_equal(X1, X2)


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_honour_n_samples(name):
    X, y = DATASETS[name].loader(n_samples=51)
    assert len(X) == len(y) == 51


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_two_class_generators_are_balanced_and_shuffled(name):
    _, y = DATASETS[name].loader(n_samples=101)
    assert sorted(np.bincount(y)) == [50, 51]
    assert len(set(y[:10])) == 2  # shuffled: a prefix holds both classes


def test_noise_free_circles_lie_on_two_radii():
    X, y = datasets.circles(noise=0.0, factor=0.3)
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.3, rtol=1e-6)


def test_spirals_can_have_more_arms():
    _, y = datasets.spirals(n_samples=300, n_classes=3)
    np.testing.assert_array_equal(np.bincount(y), [100, 100, 100])


def test_blobs_accept_explicit_centers():
    centers = [[0.0, 0.0, 0.0], [100.0, 100.0, 100.0]]
    X, y = datasets.blobs(n_samples=40, centers=centers, cluster_std=0.1)
    assert X.shape == (40, 3)
    np.testing.assert_allclose(X[y == 1].mean(axis=0), [100, 100, 100], atol=0.2)


def test_noise_free_sine_is_exactly_the_sine():
    X, y = datasets.sine(noise=0.0)
    np.testing.assert_allclose(y, np.sin(X), atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: datasets.moons(noise=-1), "noise must be >= 0"),
        (lambda: datasets.moons(n_samples=0), "n_samples must be an integer >= 2"),
        (lambda: datasets.circles(factor=1.5), "factor must be between 0 and 1"),
        (lambda: datasets.spirals(n_classes=1), "n_classes must be an integer >= 2"),
        (lambda: datasets.blobs(centers=[1.0, 2.0]), r"centers must be a count or an array"),
        (lambda: datasets.sine(n_samples=2.5), "n_samples must be an integer"),
        (lambda: datasets.xor(dtype=np.int32), "dtype must be float32 or float64"),
    ],
)
def test_bad_generator_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_digits_has_1797_images_of_64_pixels_and_10_classes():
    X, y = datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 16
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_digits_equal_scikit_learns_copy():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    X, y = datasets.digits(dtype=np.float64)
    np.testing.assert_array_equal(X, reference.data)
    np.testing.assert_array_equal(y, reference.target)


# ---- the registry and load_dataset ------------------------------------------------------------


def test_load_dataset_by_name_passes_options_and_unpacks():
    data = load_dataset("spirals", n_samples=90, n_classes=3, rng=5)
    X, y = data
    assert X is data.X and y is data.y
    assert data.task == "classification" and data.n_classes == 3 and data.name == "spirals"
    assert (data.n_samples, data.n_features) == (90, 2)


def test_load_dataset_marks_regression():
    data = load_dataset("sine")
    assert data.task == "regression" and data.n_classes is None


def test_unknown_dataset_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'moon'; built-in datasets: xor, and, or"
    ):
        load_dataset("moon")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option 'nois'.*valid options: n_samples, noise"):
        load_dataset("moons", nois=0.3)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_dataset(tmp_path / "missing.csv")


def test_unknown_file_type_is_refused(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"unknown file type; expected \.csv"):
        load_dataset(path)


# ---- CSV --------------------------------------------------------------------------------------


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_without_header_takes_the_last_column_as_integer_classes(tmp_path):
    data = load_csv(write(tmp_path, "1,2,0\n3,4.5,1\n5,6,2\n"))
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4.5], [5, 6]])
    np.testing.assert_array_equal(data.y, [0, 1, 2])
    assert data.X.dtype == np.float32 and data.y.dtype == np.int64
    assert data.task == "classification" and data.n_classes == 3 and data.classes is None


def test_csv_header_is_detected_and_label_chosen_by_name(tmp_path):
    data = load_csv(write(tmp_path, "label,a,b\n1,0.5,2\n0,1.5,3\n"), label_column="label")
    np.testing.assert_array_equal(data.X, [[0.5, 2], [1.5, 3]])
    np.testing.assert_array_equal(data.y, [1, 0])


def test_csv_label_chosen_by_index(tmp_path):
    data = load_csv(write(tmp_path, "7,1,2\n8,0,3\n"), label_column=1)
    np.testing.assert_array_equal(data.X, [[7, 2], [8, 3]])
    np.testing.assert_array_equal(data.y, [1, 0])


def test_csv_header_can_be_forced_off_or_on(tmp_path):
    path = write(tmp_path, "1,2,0\n3,4,1\n")
    assert len(load_csv(path, header=False).X) == 2
    assert len(load_csv(path, header=True).X) == 1


def test_csv_text_labels_become_classes_with_their_names(tmp_path):
    path = write(tmp_path, "x,species\n1,virginica\n2,setosa\n3,virginica\n")
    data = load_csv(path)
    assert data.classes == ("setosa", "virginica")
    np.testing.assert_array_equal(data.y, [1, 0, 1])
    assert data.n_classes == 2


def test_csv_fractional_labels_are_a_regression_target(tmp_path):
    data = load_csv(write(tmp_path, "1,0.5\n2,1.25\n"))
    assert data.task == "regression" and data.n_classes is None
    assert data.y.dtype == np.float32 and data.y.shape == (2, 1)


def test_csv_negative_integer_labels_are_renumbered(tmp_path):
    data = load_csv(write(tmp_path, "1,-1\n2,1\n3,-1\n"))
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    assert data.classes == (-1, 1)


def test_csv_gzip_is_read_by_content(tmp_path):
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,1\n3,4,0\n"))
    np.testing.assert_array_equal(load_dataset(path).y, [1, 0])


def test_csv_options_pass_through_load_dataset(tmp_path):
    path = write(tmp_path, "a;b\n1;2\n", name="data.txt")
    data = load_dataset(path, delimiter=";", label_column="a")
    np.testing.assert_array_equal(data.X, [[2]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,c\n1,2,0\n\n4,abc,1\n", r"data\.csv: line 4, column 2 \(b\): 'abc' is not a number"),
        ("1,2,0\n4,,1\n", r"data\.csv: line 2, column 2: the cell is empty"),
        ("1,2,0\n4,nan,1\n", r"line 2, column 2: nan is not a finite number"),
        ("1,2,0\n4,-inf,1\n", r"line 2, column 2: -inf is not a finite number"),
        ("1,2,0\n4,5,nan\n", r"line 2, column 3: label nan is not a finite number"),
        ("1,2,0\n4,5,6,1\n", r"line 2 has 4 columns, expected 3 \(as on line 1\)"),
        ("", r"data\.csv: the file is empty"),
        ("\n  \n", r"the file is empty"),
        ("a,b\n", r"no data rows after the header"),
        ("1\n2\n", r"needs at least 2 columns"),
        ("x,y\n1,cat\n2,\n", r"line 3, column 2 \(y\): the label is empty"),
        (
            "x,y\n1,2\n2,3\n3,cat\n",
            r"line 4, column 2 \(y\): label 'cat' is not a number, but most",
        ),
        ("x,y\n1,dog\n2,3\n3,cat\n", r"line 3, column 2 \(y\): label '3' is a number, but most"),
    ],
)
def test_bad_csv_content_is_located(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_csv(write(tmp_path, text))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"label_column": "y"}, r"no column named 'y'; columns: a, b"),
        ({"label_column": 5}, r"label_column=5 is out of range for 2 columns"),
        ({"header": "yes"}, r"header must be 'auto', True or False"),
        ({"delimiter": ", "}, r"delimiter must be a single character"),
    ],
)
def test_bad_csv_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        load_csv(write(tmp_path, "a,b\n1,2\n"), **options)


def test_csv_label_name_without_a_header_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a header row"):
        load_csv(write(tmp_path, "1,2\n3,4\n"), label_column="label")


# ---- NPZ --------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_key, y_key", [("X", "y"), ("x", "y"), ("data", "labels")])
def test_npz_round_trip(tmp_path, x_key, y_key):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    y = np.array([0, 2, 1, 2], dtype=np.uint8)
    np.savez(tmp_path / "d.npz", **{x_key: X, y_key: y})
    data = load_dataset(tmp_path / "d.npz")
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert data.X.dtype == np.float32 and data.y.dtype == np.int64 and data.n_classes == 3


def test_npz_images_are_flattened_and_float_targets_are_regression(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.ones((5, 2, 3)), targets=np.linspace(0, 1, 5))
    data = load_npz(tmp_path / "d.npz")
    assert data.X.shape == (5, 6) and data.y.shape == (5, 1) and data.task == "regression"


def test_npz_text_labels_become_classes(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 1)), y=np.array(["b", "a", "b"]))
    data = load_npz(tmp_path / "d.npz")
    assert data.classes == ("a", "b")
    np.testing.assert_array_equal(data.y, [1, 0, 1])


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 1)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="object arrays, which only pickle can read; refused"):
        load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"inputs": np.zeros((2, 1)), "y": np.zeros(2)},
            r"expected arrays named X and y.*found inputs, y",
        ),
        ({"X": np.zeros((3, 1)), "y": np.zeros(2)}, r"X has 3 samples but y has shape \(2,\)"),
        ({"X": np.array([[1.0], [np.nan]]), "y": np.zeros(2)}, r"X: value nan at index \(1, 0\)"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, r"hold no samples"),
        ({"X": np.array([["a"]]), "y": np.zeros(1)}, r"X must be a numeric array"),
    ],
)
def test_bad_npz_content_is_named(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "d.npz")


def test_npz_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"d\.npz: not a readable \.npz archive"):
        load_npz(tmp_path / "d.npz")


# ---- MNIST IDX --------------------------------------------------------------------------------

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array):
    """The IDX encoding written out by hand: zero bytes, type code, rank, big-endian sizes, data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(tmp_path, images, labels, compress):
    suffix = ".gz" if compress else ""
    pack = gzip.compress if compress else bytes
    images_path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    images_path.write_bytes(pack(idx_bytes(images)))
    (tmp_path / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(labels)))
    return images_path


@pytest.fixture
def mnist_like(rng):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_finds_labels_by_mnist_naming(tmp_path, mnist_like, compress):
    images, labels = mnist_like
    data = load_dataset(write_mnist(tmp_path, images, labels, compress))
    assert data.X.shape == (5, 12) and data.X.dtype == np.float32
    np.testing.assert_allclose(data.X, images.reshape(5, 12) / 255, rtol=1e-6)
    np.testing.assert_array_equal(data.y, labels)
    assert data.task == "classification" and data.n_classes == 6


def test_idx_keeps_non_byte_values_and_reads_int32_labels(tmp_path):
    images = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (tmp_path / "x.idx").write_bytes(idx_bytes(images))
    (tmp_path / "y.idx").write_bytes(idx_bytes(np.array([70000, 2], dtype=np.int32)))
    data = load_idx(tmp_path / "x.idx", tmp_path / "y.idx")
    np.testing.assert_array_equal(data.X, images.reshape(2, 12))
    np.testing.assert_array_equal(data.y, [70000, 2])


def test_idx_truncated_raw_file_is_refused(tmp_path, mnist_like):
    path = write_mnist(tmp_path, *mnist_like, compress=False)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated: .*\(5, 4, 3\)"):
        load_idx(path)


def test_idx_truncated_gzip_file_is_refused(tmp_path, mnist_like):
    path = write_mnist(tmp_path, *mnist_like, compress=True)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz: truncated"):
        load_idx(path)


def test_idx_cut_gzip_stream_is_refused(tmp_path, mnist_like):
    path = write_mnist(tmp_path, *mnist_like, compress=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz: corrupt or truncated gzip data"):
        load_idx(path)


def test_idx_header_claiming_more_than_gzip_can_hold_is_refused_before_reading(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60000, 28000, 28000)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header))
    with pytest.raises(ValueError, match="more than a .*-byte gzip file can hold"):
        load_idx(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1f\x00\x08\x01", "not an IDX file"),
        (
            bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00",
            "unknown IDX data type code 0x07",
        ),
        (bytes([0, 0, 0x08, 3]) + b"\x00\x00", "truncated IDX header"),
        (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 2) + b"\x01\x02\x03", "longer than declared"),
    ],
)
def test_corrupt_idx_headers_are_named(tmp_path, content, message):
    path = tmp_path / "x.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_idx(path, path)


def test_idx_label_count_must_match_the_images(tmp_path, mnist_like):
    images, labels = mnist_like
    path = write_mnist(tmp_path, images, labels[:4], compress=False)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\) do not match 5 images"):
        load_idx(path)


def test_idx_without_a_labels_file_beside_it_is_named(tmp_path, mnist_like):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(mnist_like[0]))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_idx(path)


# ---- reliability, second pass: hostile data files --------------------------------------------


def test_the_default_limit_on_decompressed_data_is_two_gib():
    assert loaders.DEFAULT_MAX_BYTES == 2 * 1024**3


def test_a_gzip_csv_expanding_past_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,0\n" * 50_000))  # 300 KB from 1 KB
    with pytest.raises(ValueError, match=r"bomb\.csv\.gz: decompresses to more than 100000 bytes"):
        load_csv(path, max_bytes=100_000)
    monkeypatch.setenv("CHAINRULE_MAX_DECOMPRESSED_BYTES", "100000")
    with pytest.raises(ValueError, match="raise it with max_bytes= or the CHAINRULE_MAX"):
        load_dataset(path)
    assert len(load_dataset(path, max_bytes=300_000).X) == 50_000
    monkeypatch.setenv("CHAINRULE_MAX_DECOMPRESSED_BYTES", "lots")
    with pytest.raises(ValueError, match="CHAINRULE_MAX_DECOMPRESSED_BYTES='lots' is not a whole"):
        load_csv(path)


def test_a_gzip_idx_declaring_more_than_the_limit_is_refused_before_inflating(tmp_path):
    images = np.zeros((1000, 28, 28), np.uint8)  # 784 KB of zeros: a 1 KB gzip file
    path = write_mnist(tmp_path, images, np.zeros(1000, np.uint8), compress=True)
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz: the header declares shape .* 784000"):
        load_idx(path, max_bytes=100_000)


def test_a_zip_bombed_npz_is_refused_before_inflating(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((5_000, 1_000)), y=np.zeros(5_000, np.int64))  # 40 MB
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"bomb\.npz: its arrays X and y expand to more than"):
        load_npz(path, max_bytes=1_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, peak


def test_a_sparse_integer_label_is_refused_instead_of_a_huge_output_layer(tmp_path):
    path = write(tmp_path, "1,2,0\n3,4,100000000\n")
    with pytest.raises(ValueError, match="label 100000000 would need 100000001 output classes"):
        load_csv(path)
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)), y=np.array([0, 100_000_000]))
    with pytest.raises(ValueError, match=r"d\.npz: y: integer label 100000000"):
        load_npz(tmp_path / "d.npz")
    assert load_csv(write(tmp_path, "1,2,3\n3,4,999\n")).n_classes == 1000  # up to 1000 is fine


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,0\n1e39,4,1\n", r"line 2, column 1: 1e\+39 is beyond the range of float32"),
        ("1,2,0.5\n3,4,-1e39\n", r"line 2, column 3: -1e\+39 is beyond the range of float32"),
    ],
)
def test_values_beyond_float32_are_refused_after_the_cast(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_csv(write(tmp_path, text))
    assert np.isfinite(load_csv(write(tmp_path, text), dtype=np.float64).X).all()


def test_npz_values_beyond_float32_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.array([[1.0, 1e39]]), y=np.array([0]))
    with pytest.raises(ValueError, match=r"X: value inf at index \(0, 1\).*beyond the range"):
        load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("name", ["data.csv", "train-images-idx3-ubyte", "data.npz"])
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_given_as_data_is_named_as_such(tmp_path, name, kind):
    path = tmp_path / name
    path.mkdir() if kind == "directory" else os.mkfifo(path)  # a FIFO would block a read
    words = "is a directory, not a data file" if kind == "directory" else "is a FIFO"
    with pytest.raises(ValueError, match=words):
        load_dataset(path)
    loader = {"data.csv": load_csv, "data.npz": load_npz}.get(name, loaders.read_idx)
    with pytest.raises(ValueError, match=f"{name}: {words}"):
        loader(path)


def test_an_idx_shape_too_large_for_numpy_names_the_file(tmp_path):
    path = tmp_path / "t-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1))
    with pytest.raises(ValueError, match=r"t-images-idx3-ubyte: the header declares shape"):
        loaders.read_idx(path)


# ---- CSV through the csv module: quoting, BOM, CRLF ------------------------------------------
def test_csv_quoted_fields_may_hold_the_delimiter(tmp_path):
    data = load_csv(write(tmp_path, 'x,species\n1,"setosa, var"\n2,"vir""ginica"\n'))
    assert data.classes == ("setosa, var", 'vir"ginica')
    np.testing.assert_array_equal(data.X, [[1], [2]])


def test_csv_quoted_numbers_and_spaces_after_the_delimiter(tmp_path):
    data = load_csv(write(tmp_path, '"a", "b"\n"1.5", 2\n'), label_column=None)
    np.testing.assert_array_equal(data.X, [[1.5, 2]])


def test_csv_with_a_bom_and_crlf_line_ends(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("\ufeffa,b,label\r\n1,2,0\r\n3,4,1\r\n".encode())
    data = load_csv(path, label_column="label")
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.y, [0, 1])


def test_csv_line_numbers_count_line_breaks_inside_quotes(tmp_path):
    text = 'x,name\n1,"two\nlines"\n\n2,ok\nbad,ok\n'
    with pytest.raises(ValueError, match=r"line 6, column 1 \(x\): 'bad' is not a number"):
        load_csv(write(tmp_path, text))
    with pytest.raises(ValueError, match=r"line 3 has 3 columns, expected 2 \(as on line 1\)"):
        load_csv(write(tmp_path, 'x,y\n1,"a, b"\n2,a,b\n'))


def test_csv_stray_quote_is_located(tmp_path):
    with pytest.raises(ValueError, match=r"data\.csv: line 2: .*"):
        load_csv(write(tmp_path, 'x,y\n1,"a"b\n'))
