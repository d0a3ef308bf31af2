"""Splits, Standardizer, one_hot, TensorDataset and DataLoader: what a training loop relies on."""

import json

import numpy as np
import pytest

import chainrule as cr
from chainrule.data import (
    DataLoader,
    Standardizer,
    TensorDataset,
    one_hot,
    standardize,
    train_test_split,
    train_val_test_split,
)


@pytest.fixture
def labelled():
    """Row i of X is (i, -i), so a split can be checked for keeping rows and labels paired."""
    X = np.stack([np.arange(100.0), -np.arange(100.0)], axis=1)
    y = np.repeat([0, 1, 2], [50, 30, 20])
    return X, y


# ---- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("test_size, n_test", [(0.2, 20), (0.25, 25), (0.333, 33), (7, 7)])
def test_train_test_split_sizes(labelled, test_size, n_test):
    X_train, X_test, y_train, y_test = train_test_split(*labelled, test_size=test_size)
    assert (len(X_train), len(X_test), len(y_train), len(y_test)) == (100 - n_test, n_test) * 2


@pytest.mark.parametrize("stratify", [False, True])
def test_train_test_split_partitions_the_rows_and_keeps_them_paired(labelled, stratify):
    X, y = labelled
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=stratify)
    rows = np.concatenate([X_train[:, 0], X_test[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(rows), np.arange(100))
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), y[rows])


def test_train_test_split_is_shuffled_and_seeded(labelled):
    first = train_test_split(*labelled, rng=3)[1]
    np.testing.assert_array_equal(first, train_test_split(*labelled, rng=3)[1])
    assert not np.array_equal(first, train_test_split(*labelled, rng=4)[1])
    assert not np.array_equal(first, labelled[0][80:])


def test_stratified_split_keeps_class_shares(labelled):
    _, _, y_train, y_test = train_test_split(*labelled, test_size=0.2, stratify=True)
    np.testing.assert_array_equal(np.bincount(y_test), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(y_train), [40, 24, 16])


def test_stratified_split_with_uneven_shares_still_gives_the_requested_size():
    y = np.repeat([0, 1, 2], [7, 7, 7])
    _, _, y_train, y_test = train_test_split(np.zeros((21, 1)), y, test_size=5, stratify=True)
    assert len(y_test) == 5 and np.bincount(y_test, minlength=3).max() == 2
    assert len(y_train) == 16


@pytest.mark.parametrize("stratify", [False, True])
def test_train_val_test_split_gives_three_disjoint_parts(labelled, stratify):
    X_train, X_val, X_test, y_train, y_val, y_test = train_val_test_split(
        *labelled, val_size=0.1, test_size=0.2, stratify=stratify
    )
    assert (len(X_train), len(X_val), len(X_test)) == (70, 10, 20)
    rows = np.concatenate([X_train[:, 0], X_val[:, 0], X_test[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(rows), np.arange(100))
    np.testing.assert_array_equal(np.concatenate([y_train, y_val, y_test]), labelled[1][rows])


def test_stratified_three_way_split_keeps_class_shares(labelled):
    parts = train_val_test_split(*labelled, val_size=0.1, test_size=0.2, stratify=True)
    y_train, y_val, y_test = parts[3:]
    np.testing.assert_array_equal(np.bincount(y_val), [5, 3, 2])
    np.testing.assert_array_equal(np.bincount(y_test), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(y_train), [35, 21, 14])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda X, y: train_test_split(X, y[:50]), "X has 100 samples but y has 50"),
        (lambda X, y: train_test_split(X, y, test_size=1.5), "test_size must be a fraction"),
        (lambda X, y: train_test_split(X, y, test_size=0.0), "test_size must be a fraction"),
        (
            lambda X, y: train_test_split(X, y, test_size=100),
            r"test_size=100 must be between 1 and 99",
        ),
        (
            lambda X, y: train_val_test_split(X, y, val_size=0.5, test_size=0.5),
            "leave no training samples",
        ),
        (
            lambda X, y: train_test_split(X, y.astype(float), stratify=True),
            "stratify needs class indices",
        ),
    ],
)
def test_bad_split_requests_are_named(labelled, call, message):
    with pytest.raises(ValueError, match=message):
        call(*labelled)


# ---- Standardizer, one_hot ---------------------------------------------------------------------


@pytest.fixture
def features(rng):
    return (rng.normal(5.0, 3.0, size=(200, 3)) * [1, 10, 0.1]).astype(np.float32)


def test_standardizer_gives_zero_mean_unit_std(features):
    scaled = Standardizer().fit_transform(features)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-5)


def test_standardizer_transforms_new_data_with_the_training_statistics(features):
    scaler = Standardizer().fit(features[:100])
    expected = (features[100:] - features[:100].mean(axis=0)) / features[:100].std(axis=0)
    np.testing.assert_allclose(scaler.transform(features[100:]), expected, rtol=1e-4, atol=1e-5)


def test_constant_feature_is_centred_not_divided_by_zero():
    X = np.array([[1.0, 4.0], [3.0, 4.0]])
    np.testing.assert_array_equal(Standardizer().fit_transform(X), [[-1.0, 0.0], [1.0, 0.0]])


def test_inverse_transform_undoes_transform(features):
    scaler = Standardizer().fit(features)
    np.testing.assert_allclose(
        scaler.inverse_transform(scaler.transform(features)), features, rtol=1e-5
    )


def test_standardizer_state_is_plain_arrays_that_restore_it(features):
    state = Standardizer().fit(features).state_dict()
    assert set(state) == {"mean", "std"}
    assert all(isinstance(v, np.ndarray) and v.shape == (3,) for v in state.values())
    restored = Standardizer().load_state_dict({k: v.tolist() for k, v in state.items()})
    np.testing.assert_array_equal(
        restored.transform(features), Standardizer().fit_transform(features)
    )


def test_standardize_fits_on_the_first_array_and_returns_the_scaler(features):
    train, test, scaler = standardize(features[:150], features[150:])
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_array_equal(test, scaler.transform(features[150:]))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda s, X: s.transform(X), RuntimeError, "not fitted"),
        (lambda s, X: s.fit(X).transform(X[:, :2]), ValueError, r"X has shape \(200, 2\)"),
        (lambda s, X: s.fit(np.where(X > 5, np.nan, X)), ValueError, "NaN or infinity"),
        (
            lambda s, X: s.load_state_dict({"mean": [0.0]}),
            ValueError,
            "needs keys 'mean' and 'std'",
        ),
        (
            lambda s, X: s.load_state_dict({"mean": [0.0], "std": [0.0]}),
            ValueError,
            "std finite and positive",
        ),
    ],
)
def test_standardizer_misuse_is_named(features, call, error, message):
    with pytest.raises(error, match=message):
        call(Standardizer(), features)


def test_one_hot():
    np.testing.assert_array_equal(one_hot([2, 0], 4), [[0, 0, 1, 0], [1, 0, 0, 0]])
    assert one_hot(np.array([1, 0])).shape == (2, 2) and one_hot([1]).dtype == np.float32


@pytest.mark.parametrize(
    "y, message", [([0, 3], "label 3 is outside 0..2"), ([0.5], "integer class")]
)
def test_one_hot_rejects_bad_labels(y, message):
    with pytest.raises(ValueError, match=message):
        one_hot(y, 3)


# ---- TensorDataset and DataLoader -------------------------------------------------------------


def arrays(n=10):
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n)


def epoch_labels(loader):
    return np.concatenate([y for _, y in loader])


def test_tensor_dataset_indexes_arrays_together():
    X, y = arrays()
    dataset = TensorDataset(X, y)
    assert len(dataset) == 10
    x3, y3 = dataset[3]
    np.testing.assert_array_equal(x3, X[3])
    assert y3 == 3


def test_tensor_dataset_length_mismatch_is_named():
    with pytest.raises(ValueError, match=r"different numbers of samples: \[10, 9\]"):
        TensorDataset(np.zeros((10, 2)), np.zeros(9))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_appears_once_per_epoch_with_its_label(shuffle):
    X, y = arrays(23)
    loader = DataLoader((X, y), batch_size=5, shuffle=shuffle, rng=0)
    for _ in range(2):
        batches = list(loader)
        assert [len(xb) for xb, _ in batches] == [5, 5, 5, 5, 3] and len(loader) == 5
        np.testing.assert_array_equal(np.sort(np.concatenate([yb for _, yb in batches])), y)
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, X[yb])


def test_unshuffled_loader_keeps_the_order():
    np.testing.assert_array_equal(epoch_labels(DataLoader(arrays(), batch_size=3)), np.arange(10))


def test_drop_last_drops_the_short_batch():
    loader = DataLoader(arrays(23), batch_size=5, drop_last=True, shuffle=True, rng=0)
    assert len(loader) == 4 and [len(yb) for _, yb in loader] == [5, 5, 5, 5]


def test_shuffle_is_reproducible_by_seed_and_changes_each_epoch():
    first, second = (
        DataLoader(arrays(50), shuffle=True, rng=1),
        DataLoader(arrays(50), shuffle=True, rng=1),
    )
    epoch_1 = epoch_labels(first)
    np.testing.assert_array_equal(epoch_1, epoch_labels(second))
    assert not np.array_equal(epoch_1, epoch_labels(first))
    assert not np.array_equal(epoch_1, epoch_labels(DataLoader(arrays(50), shuffle=True, rng=2)))


def test_without_rng_manual_seed_makes_shuffling_reproducible():
    cr.manual_seed(11)
    epoch_1 = epoch_labels(DataLoader(arrays(50), shuffle=True))
    cr.manual_seed(11)
    np.testing.assert_array_equal(epoch_1, epoch_labels(DataLoader(arrays(50), shuffle=True)))


@pytest.mark.parametrize("batches_before_saving", [0, 2, 4])
def test_state_dict_round_trip_resumes_the_same_order(batches_before_saving):
    original = DataLoader(arrays(40), batch_size=4, shuffle=True, rng=5)
    epoch_labels(original)  # one full epoch first: the state must carry the epoch's stream
    iterator = iter(original)
    for _ in range(batches_before_saving):
        next(iterator)
    state = json.loads(json.dumps(original.state_dict()))
    expected = [yb for _, yb in iterator] + [yb for _, yb in original]

    resumed = DataLoader(arrays(40), batch_size=4, shuffle=True, rng=99)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    got = [yb for _, yb in resumed] + [yb for _, yb in resumed]
    assert len(got) == len(expected) == 20 - batches_before_saving
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_epoch_counts_finished_epochs():
    loader = DataLoader(arrays(), batch_size=4)
    list(loader)
    list(loader)
    assert loader.epoch == 2 and loader.state_dict()["epoch"] == 2


def test_state_from_other_data_is_refused():
    state = DataLoader(arrays(10), shuffle=True, rng=0).state_dict()
    with pytest.raises(ValueError, match="saved for 10 samples, this dataset has 12"):
        DataLoader(arrays(12), shuffle=True, rng=0).load_state_dict(state)


def test_map_style_datasets_are_batched_sample_by_sample():
    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i], dtype=np.float32), i * i

    xb, yb = next(iter(DataLoader(Squares(), batch_size=5)))
    assert xb.shape == (5, 1)
    np.testing.assert_array_equal(yb, [0, 1, 4, 9, 16])


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: DataLoader(arrays(), batch_size=0),
            ValueError,
            "batch_size must be positive, got 0",
        ),
        (lambda: DataLoader(arrays(), batch_size=-2), ValueError, "batch_size must be positive"),
        (lambda: DataLoader(arrays(), batch_size=2.5), TypeError, "batch_size must be an int"),
        (lambda: DataLoader((np.zeros((0, 2)), np.zeros(0))), ValueError, "the dataset is empty"),
        (lambda: DataLoader((np.zeros((3, 2)), np.zeros(4))), ValueError, r"\[3, 4\]"),
        (
            lambda: DataLoader(arrays(), batch_size=20, drop_last=True),
            ValueError,
            "leaves no batches",
        ),
        (lambda: DataLoader(42), TypeError, "DataLoader needs a TensorDataset"),
    ],
)
def test_bad_loader_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()
