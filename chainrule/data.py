"""Preparing arrays for training: splits, feature scaling, one-hot labels, and batching.

Where data comes from (built-in sets, CSV / NPZ / IDX files) lives in `chainrule.datasets`.
Randomness is explicit: every split and shuffle takes a Generator or a seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chainrule.random import get_rng

# ---- splits ------------------------------------------------------------------------------------


def train_test_split(
    X: Any, y: Any, test_size: float = 0.2, rng: Any = 0, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split into `X_train, X_test, y_train, y_test` (sklearn's order).

    X (samples, ...) and y (samples, ...) are split along their first axis, in the same order.
    test_size: a fraction in (0, 1) (rounded to the nearest count, at least 1) or a count.
    rng: a Generator or a seed (the default 0 makes the split the same from run to run).
    stratify: keep each class's share of y the same in both parts (y must be class indices).

    >>> import numpy as np
    >>> X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, rng=1)
    >>> X_train.shape, X_test.shape, y_train.shape, y_test.shape
    ((7, 2), (3, 2), (7,), (3,))
    >>> y_test
    array([0, 0, 1])
    """
    X, y = _paired(X, y)
    train, test = split_indices(y, [test_size], ["test_size"], rng, stratify)
    return X[train], X[test], y[train], y[test]


def train_val_test_split(
    X: Any,
    y: Any,
    val_size: float = 0.1,
    test_size: float = 0.1,
    rng: Any = 0,
    stratify: bool = False,
) -> tuple[np.ndarray, ...]:
    """Shuffle and split into `X_train, X_val, X_test, y_train, y_val, y_test`.

    Sizes are fractions of the whole data set or counts, as in train_test_split; the training part
    gets what remains.
    """
    X, y = _paired(X, y)
    sizes, names = [val_size, test_size], ["val_size", "test_size"]
    train, val, test = split_indices(y, sizes, names, rng, stratify)
    return X[train], X[val], X[test], y[train], y[val], y[test]


def _paired(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"X and y must be arrays of samples, got shapes {X.shape} and {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    return X, y


def split_indices(
    y: np.ndarray,
    sizes: list,
    names: list[str],
    rng: Any = 0,
    stratify: bool = False,
    allow_empty: bool = False,
) -> list[np.ndarray]:
    """Indices of the training part followed by one array per requested size, all disjoint.

    A size is a fraction in (0, 1) of the samples or a count; with `allow_empty`, 0 asks for an
    empty part, and with every size 0 nothing is shuffled: the training part is the data in its
    own order (`chainrule train` without a test split). Otherwise
    the requested parts are taken from the front of one permutation of the samples, in order,
    and the training part is what remains.
    """
    n = len(y)
    counts = [
        0 if allow_empty and size == 0 else _count(size, name, n)
        for size, name in zip(sizes, names)
    ]
    if sum(counts) >= n:
        raise ValueError(
            f"{', '.join(f'{name}={size}' for name, size in zip(names, sizes))} leave no training "
            f"samples out of {n}"
        )
    if sum(counts) == 0:
        return [np.arange(n), *(np.arange(0) for _ in counts)]
    generator = get_rng(rng)
    if not stratify:
        order = generator.permutation(n)
        *parts, train = np.split(order, np.cumsum(counts))
        return [train, *parts]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(
            f"stratify needs class indices y of shape (samples,) and integer dtype, got "
            f"{y.dtype} {y.shape}"
        )
    classes, labels = np.unique(y, return_inverse=True)
    members = [generator.permutation(np.flatnonzero(labels == k)) for k in range(len(classes))]
    remaining = np.array([len(m) for m in members])
    taken = np.zeros_like(remaining)
    parts = []
    for count in counts:
        # Take `count` samples in proportion to what each class still has (largest remainder):
        # the quota never exceeds a class's remaining members, so the parts stay disjoint.
        share = _apportion(count, remaining)
        parts.append(np.concatenate([m[t : t + s] for m, t, s in zip(members, taken, share)]))
        taken += share
        remaining -= share
    train = np.concatenate([m[t:] for m, t in zip(members, taken)])
    return [generator.permutation(part) for part in [train, *parts]]


def _count(size: Any, name: str, n: int) -> int:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if not 1 <= size < n:
            raise ValueError(f"{name}={size} must be between 1 and {n - 1} for {n} samples")
        return int(size)
    if isinstance(size, (float, np.floating)) and 0 < size < 1:
        return max(1, round(size * n))
    raise ValueError(f"{name} must be a fraction in (0, 1) or a count of samples, got {size!r}")


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers summing to `total`, proportional to `weights` (the largest-remainder method)."""
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    extra = np.argsort(counts - quota, kind="stable")[: total - counts.sum()]
    counts[extra] += 1
    return counts


# ---- scaling and encoding ----------------------------------------------------------------------


class Standardizer:
    """Per-feature scaling to mean 0 and standard deviation 1: x' = (x − mean) / std.

    Fit on the training split only and transform every split with the same numbers. A constant
    feature has std 0 and is only centred (its std is stored as 1). The fitted state is two plain
    arrays, `state_dict() == {'mean': ..., 'std': ...}`, so it can be saved beside a model.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None  # (features,) float64
        self.std_: np.ndarray | None = None  # (features,) float64, never 0
        self.constant_: np.ndarray | None = None  # indices of features constant up to rounding

    def fit(self, X: Any) -> Standardizer:
        """Learn each feature's mean and standard deviation from X (samples, features)."""
        X = _features(X, "fit")
        if len(X) == 0:
            raise ValueError("Standardizer.fit: X has no samples")
        # Statistics in float64: a float32 running sum drifts on large data sets.
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))  # constant up to rounding
        std[constant] = 1.0
        self.mean_, self.std_ = mean, std
        self.constant_ = np.flatnonzero(constant)  # features that carry no information
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Scaled copy of X (samples, features), in X's float dtype (float32 for integer X)."""
        X = self._checked(X, "transform")
        return (X - self.mean_.astype(X.dtype)) / self.std_.astype(X.dtype)

    def fit_transform(self, X: Any) -> np.ndarray:
        """`fit(X)`, then `transform(X)`: the scaled copy of the data the statistics came from."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Undo transform: x = x' · std + mean (e.g. to report regression predictions in units)."""
        X = self._checked(X, "inverse_transform")
        return X * self.std_.astype(X.dtype) + self.mean_.astype(X.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted statistics as copies: {'mean': (features,), 'std': (features,)}, float64."""
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; call fit(X_train) first")
        return {"mean": self.mean_.copy(), "std": self.std_.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> Standardizer:
        """Take the statistics from `state_dict()`, checked (finite, std > 0, one shape)."""
        if set(state) != {"mean", "std"}:
            raise ValueError(f"Standardizer state needs keys 'mean' and 'std', got {sorted(state)}")
        mean = np.array(state["mean"], dtype=np.float64)
        std = np.array(state["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim > 1:
            raise ValueError(f"Standardizer state: mean {mean.shape} and std {std.shape} differ")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("Standardizer state: mean must be finite and std finite and positive")
        self.mean_, self.std_ = mean, std
        return self

    def _checked(self, X: Any, method: str) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError(f"Standardizer.{method}: not fitted; call fit(X_train) first")
        X = _features(X, method)
        if X.shape[1:] != self.mean_.shape:
            raise ValueError(
                f"Standardizer.{method}: X has shape {X.shape}, but the fit saw features of "
                f"shape {self.mean_.shape}"
            )
        return X

    def __repr__(self) -> str:
        fitted = "unfitted" if self.mean_ is None else f"features={self.mean_.size}"
        return f"Standardizer({fitted})"


def standardize(X_train: Any, *others: Any) -> tuple:
    """Fit a Standardizer on X_train, apply it to every array given; the Standardizer comes last.

    >>> import numpy as np
    >>> X_train, X_test = np.array([[1.0], [3.0]]), np.array([[5.0]])
    >>> X_train, X_test, scaler = standardize(X_train, X_test)  # mean 2, std 1
    >>> X_train.ravel(), X_test.ravel()
    (array([-1.,  1.]), array([3.]))
    """
    scaler = Standardizer().fit(X_train)
    return (*(scaler.transform(X) for X in (X_train, *others)), scaler)


def _features(X: Any, method: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim not in (1, 2) or X.dtype.kind not in "biuf":
        raise ValueError(
            f"Standardizer.{method}: X must be numbers of shape (samples,) or (samples, features), "
            f"got {X.dtype} {X.shape}"
        )
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"Standardizer.{method}: X holds NaN or infinity")
    return X


def one_hot(y: Any, n_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Class indices (samples,) -> rows of zeros with a one at the class: (samples, n_classes)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(
            f"one_hot: y must be integer class indices (samples,), got {y.dtype} {y.shape}"
        )
    if n_classes is None:
        n_classes = int(y.max()) + 1 if len(y) else 0
    bad = y[(y < 0) | (y >= n_classes)]
    if len(bad):
        raise ValueError(f"one_hot: label {bad[0]} is outside 0..{n_classes - 1}")
    out = np.zeros((len(y), n_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


# ---- batching ----------------------------------------------------------------------------------


class TensorDataset:
    """Arrays that share their first dimension, indexed together: `dataset[i] == (X[i], y[i])`."""

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        if any(a.ndim == 0 for a in self.arrays):
            shapes = [a.shape for a in self.arrays]
            raise ValueError(f"TensorDataset: every array needs a sample dimension, got {shapes}")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"TensorDataset: arrays hold different numbers of samples: {lengths}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        """One sample, or a batch when index is a slice or an array of indices."""
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Batches `(X_batch, y_batch)` from a TensorDataset or a tuple of arrays `(X, y)`.

    Each epoch indexes the arrays with one permutation (shuffle=True) or in order; every sample
    appears once per epoch, the last batch may be smaller unless drop_last. `len(loader)` is the
    number of batches per epoch.

    Shuffling draws from the loader's own Generator (`rng`: a Generator, a seed, or None for one
    seeded from chainrule.random's default, so manual_seed makes it reproducible). Each epoch
    draws a new order. `state_dict()` records the epoch, the batch reached and the generator's
    state as plain JSON-ready values; `load_state_dict()` on a loader over the same data resumes the
    same order, mid-epoch included. Other map-style datasets (`len` and `dataset[i]`) work too,
    sample by sample.

    >>> import numpy as np
    >>> X, y = np.zeros((10, 3), dtype=np.float32), np.arange(10)
    >>> loader = DataLoader((X, y), batch_size=4, shuffle=True, rng=0)
    >>> len(loader)  # batches per epoch: 4 + 4 + 2
    3
    >>> [(xb.shape, yb.shape) for xb, yb in loader]
    [((4, 3), (4,)), ((4, 3), (4,)), ((2, 3), (2,))]
    >>> np.sort(np.concatenate([yb for _, yb in loader]))  # each sample once per epoch
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        rng: Any = None,
    ) -> None:
        self.dataset = _as_dataset(dataset)
        n = len(self.dataset)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if n == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if drop_last and batch_size > n:
            raise ValueError(
                f"drop_last=True with batch_size={batch_size} > {n} samples leaves no batches"
            )
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), drop_last
        if isinstance(rng, np.random.Generator):
            self.generator: np.random.Generator | None = rng
        elif rng is not None:
            self.generator = get_rng(rng)
        elif shuffle:  # one draw from the default generator, then the loader owns its stream
            self.generator = np.random.default_rng(get_rng(None).integers(2**63))
        else:
            self.generator = None
        self._epoch = 0  # epochs finished (or left early)
        self._batches_done = 0  # batches handed out in the current epoch
        self._epoch_start_state: dict | None = None  # generator state that drew this epoch's order
        self._resuming = False

    @property
    def epoch(self) -> int:
        """Epochs finished so far (an epoch left early by `break` counts once a new one starts)."""
        return self._epoch + (self._batches_done == len(self))

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        if self._batches_done and not self._resuming:
            self._epoch, self._batches_done = self._epoch + 1, 0
        self._resuming = False
        n = len(self.dataset)
        if self.shuffle:
            self._epoch_start_state = self.generator.bit_generator.state
            order = self.generator.permutation(n)
        else:
            order = np.arange(n)
        for batch in range(self._batches_done, len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            self._batches_done = batch + 1
            yield self._fetch(index)
        self._epoch, self._batches_done = self._epoch + 1, 0

    def _fetch(self, index: np.ndarray) -> tuple[np.ndarray, ...]:
        if isinstance(self.dataset, TensorDataset):
            return self.dataset[index]
        samples = [self.dataset[int(i)] for i in index]
        if not isinstance(samples[0], (tuple, list)):
            return (np.stack(samples),)
        return tuple(np.stack(field) for field in zip(*samples))

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands, as JSON-ready values: epoch, batch, n_samples, rng_state."""
        mid_epoch = 0 < self._batches_done < len(self)
        if mid_epoch and self.shuffle:
            rng_state = self._epoch_start_state  # redraw this epoch's order on resume
        else:
            rng_state = None if self.generator is None else self.generator.bit_generator.state
        return {
            "epoch": self.epoch,
            "batch": self._batches_done if mid_epoch else 0,
            "n_samples": len(self.dataset),
            "rng_state": _plain(rng_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`: the next iteration yields what the saved loader would."""
        expected = {"epoch", "batch", "n_samples", "rng_state"}
        if not isinstance(state, dict) or set(state) != expected:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"DataLoader state needs keys {sorted(expected)}, got {keys}")
        if state["n_samples"] != len(self.dataset):
            raise ValueError(
                f"DataLoader state was saved for {state['n_samples']} samples, this dataset has "
                f"{len(self.dataset)}"
            )
        if not (isinstance(state["batch"], int) and 0 <= state["batch"] < len(self)):
            raise ValueError(
                f"DataLoader state: batch {state['batch']!r} is not in 0..{len(self) - 1}"
            )
        rng_state = state["rng_state"]
        if rng_state is not None and self.generator is not None:
            self._set_generator_state(rng_state)
        self._epoch, self._batches_done = int(state["epoch"]), state["batch"]
        self._resuming = state["batch"] > 0

    def _set_generator_state(self, rng_state: dict) -> None:
        kind = type(self.generator.bit_generator).__name__
        saved = rng_state.get("bit_generator") if isinstance(rng_state, dict) else None
        if saved != kind:
            raise ValueError(
                f"DataLoader state holds a {saved} generator state; this loader uses {kind}"
            )
        try:
            self.generator.bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(
                f"DataLoader state: invalid {kind} generator state ({error})"
            ) from None


def _as_dataset(data: Any) -> Any:
    if isinstance(data, TensorDataset):
        return data
    if isinstance(data, (tuple, list)):
        return TensorDataset(*data)
    if isinstance(data, np.ndarray):
        return TensorDataset(data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    raise TypeError(
        "DataLoader needs a TensorDataset, a tuple of arrays (X, y), or an object with __len__ and "
        f"__getitem__; got {type(data).__name__}"
    )


def _plain(value: Any) -> Any:
    """A generator state with its NumPy arrays as lists, so json.dumps takes it (no pickle)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
