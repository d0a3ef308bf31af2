"""Built-in data sets that need no network, the registry of names, and `load_dataset`, which takes
a built-in name or a CSV / NPZ / IDX path (the file loaders live in `chainrule.loaders`).

Everything returns NumPy arrays: X (samples, features) float32 by default, y int64 class indices
(samples,) for classification or floats (samples, targets) for regression. Splitting, scaling and
batching live in `chainrule.data`.
"""

from __future__ import annotations

import gzip
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from chainrule.loaders import (  # noqa: F401 - re-exported: the file loaders belong to this API too
    Arrays,
    LoadedData,
    check_data_file,
    load_csv,
    load_idx,
    load_npz,
    read_idx,
)
from chainrule.random import get_rng
from chainrule.validation import float_dtype

# ---- built-in data sets ---------------------------------------------------------------------


def _truth_table(outputs: list[int], dtype: Any) -> Arrays:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float_dtype(dtype))
    return X, np.array(outputs, dtype=np.int64)


def xor(dtype: Any = np.float32) -> Arrays:
    """XOR truth table: X (4, 2), y (4,) = [0, 1, 1, 0]; the smallest problem a linear model
    cannot fit."""
    return _truth_table([0, 1, 1, 0], dtype)


def and_(dtype: Any = np.float32) -> Arrays:
    """AND truth table: X (4, 2), y (4,) = [0, 0, 0, 1]. Registered as 'and'."""
    return _truth_table([0, 0, 0, 1], dtype)


def or_(dtype: Any = np.float32) -> Arrays:
    """OR truth table: X (4, 2), y (4,) = [0, 1, 1, 1]. Registered as 'or'."""
    return _truth_table([0, 1, 1, 1], dtype)


def moons(
    n_samples: int = 200, noise: float = 0.1, rng: Any = 0, dtype: Any = np.float32
) -> Arrays:
    """Two interleaving half circles (as sklearn's make_moons), shuffled: X (n, 2), y (n,) in
    {0, 1}."""
    _check_count("n_samples", n_samples, 2)
    _check_noise(noise)
    generator = get_rng(rng)
    t_outer = np.linspace(0, np.pi, n_samples // 2)
    t_inner = np.linspace(0, np.pi, n_samples - n_samples // 2)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = np.stack([1 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1)
    X = np.concatenate([outer, inner]) + noise * generator.standard_normal((n_samples, 2))
    y = np.repeat([0, 1], [len(outer), len(inner)])
    return _shuffled(X, y, generator, dtype)


def circles(
    n_samples: int = 200,
    noise: float = 0.05,
    factor: float = 0.5,
    rng: Any = 0,
    dtype: Any = np.float32,
) -> Arrays:
    """A circle of radius 1 (class 0) around one of radius `factor` (class 1): X (n, 2), y (n,)."""
    _check_count("n_samples", n_samples, 2)
    _check_noise(noise)
    if not 0 < factor < 1:
        raise ValueError(f"circles: factor must be between 0 and 1 (exclusive), got {factor}")
    generator = get_rng(rng)
    n_outer = n_samples // 2
    t_outer = np.linspace(0, 2 * np.pi, n_outer, endpoint=False)
    t_inner = np.linspace(0, 2 * np.pi, n_samples - n_outer, endpoint=False)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = factor * np.stack([np.cos(t_inner), np.sin(t_inner)], axis=1)
    X = np.concatenate([outer, inner]) + noise * generator.standard_normal((n_samples, 2))
    y = np.repeat([0, 1], [len(outer), len(inner)])
    return _shuffled(X, y, generator, dtype)


def spirals(
    n_samples: int = 200,
    noise: float = 0.2,
    n_classes: int = 2,
    rng: Any = 0,
    dtype: Any = np.float32,
) -> Arrays:
    """`n_classes` spiral arms of 1.5 turns each, angle noise in radians: X (n, 2), y (n,)."""
    _check_count("n_classes", n_classes, 2)
    _check_count("n_samples", n_samples, n_classes)
    _check_noise(noise)
    generator = get_rng(rng)
    y = np.repeat(np.arange(n_classes), _even_counts(n_samples, n_classes))
    # Radius runs 0.05..1 along each arm; restarting per class keeps every arm the same shape.
    radius = np.concatenate([np.linspace(0.05, 1, count) for count in np.bincount(y)])
    angle = 2 * np.pi * y / n_classes + 3 * np.pi * radius
    angle = angle + noise * generator.standard_normal(n_samples)
    X = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _shuffled(X, y, generator, dtype)


def blobs(
    n_samples: int = 200,
    centers: int | Any = 3,
    n_features: int = 2,
    cluster_std: float = 1.0,
    rng: Any = 0,
    dtype: Any = np.float32,
) -> Arrays:
    """Gaussian clusters (as sklearn's make_blobs): X (n, n_features), y (n,) the cluster index.

    centers: how many (drawn uniformly in [-10, 10]) or their coordinates (clusters, features).
    """
    generator = get_rng(rng)
    if isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
        _check_count("centers", centers, 1)
        _check_count("n_features", n_features, 1)
        center_points = generator.uniform(-10, 10, size=(int(centers), n_features))
    else:
        center_points = np.asarray(centers, dtype=np.float64)
        if center_points.ndim != 2 or center_points.size == 0:
            raise ValueError(
                "blobs: centers must be a count or an array of shape (clusters, features), "
                f"got shape {center_points.shape}"
            )
    _check_count("n_samples", n_samples, len(center_points))
    if cluster_std < 0:
        raise ValueError(f"blobs: cluster_std must be >= 0, got {cluster_std}")
    y = np.repeat(np.arange(len(center_points)), _even_counts(n_samples, len(center_points)))
    X = center_points[y] + cluster_std * generator.standard_normal(
        (n_samples, center_points.shape[1])
    )
    return _shuffled(X, y, generator, dtype)


def sine(n_samples: int = 200, noise: float = 0.1, rng: Any = 0, dtype: Any = np.float32) -> Arrays:
    """Regression: x uniform in [-π, π], y = sin(x) + noise·N(0, 1); X (n, 1), y (n, 1)."""
    _check_count("n_samples", n_samples, 1)
    _check_noise(noise)
    generator = get_rng(rng)
    x = generator.uniform(-np.pi, np.pi, size=(n_samples, 1))
    y = np.sin(x) + noise * generator.standard_normal((n_samples, 1))
    dtype = float_dtype(dtype)
    return x.astype(dtype), y.astype(dtype)


def digits(dtype: Any = np.float32, images: bool = False) -> Arrays:
    """UCI 8×8 handwritten digits, shipped with chainrule: X (1797, 64) pixel counts 0..16, y 0..9;
    with images=True, X is (1797, 1, 8, 8), one channel per image, for convolutional networks.

    The same data and order as sklearn.datasets.load_digits(); see datasets_files/README.md.
    """
    source = resources.files("chainrule").joinpath("datasets_files/digits.csv.gz")
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    X = table[:, :-1].astype(float_dtype(dtype))
    return (X.reshape(-1, 1, 8, 8) if images else X), table[:, -1].astype(np.int64)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: how to make the data set and what kind of problem it is."""

    loader: Callable[..., Arrays]
    description: str
    task: str  # 'classification' or 'regression'
    n_classes: int | None  # with the loader's default options; None for regression


DATASETS: dict[str, DatasetInfo] = {
    "xor": DatasetInfo(
        xor, "XOR truth table, 4 points; not linearly separable", "classification", 2
    ),
    "and": DatasetInfo(and_, "AND truth table, 4 points; linearly separable", "classification", 2),
    "or": DatasetInfo(or_, "OR truth table, 4 points; linearly separable", "classification", 2),
    "moons": DatasetInfo(moons, "two interleaving half circles, 2-D", "classification", 2),
    "circles": DatasetInfo(circles, "a circle inside a circle, 2-D", "classification", 2),
    "spirals": DatasetInfo(spirals, "interleaved spiral arms, 2-D", "classification", 2),
    "blobs": DatasetInfo(blobs, "Gaussian clusters, 2-D", "classification", 3),
    "digits": DatasetInfo(digits, "UCI 8x8 handwritten digits, 1797 x 64", "classification", 10),
    "sine": DatasetInfo(sine, "y = sin(x) + noise, 1-D regression", "regression", None),
}


def load_dataset(name_or_path: str | os.PathLike, **options: Any) -> LoadedData:
    """A built-in data set by name (see DATASETS) or a file: .csv[.gz], .npz, or MNIST IDX.

    Options go to the loader: `load_dataset('moons', noise=0.2)`, `load_dataset('iris.csv',
    label_column='species')`. The result unpacks as `X, y = load_dataset(...)`.
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        info = DATASETS[name_or_path]
        X, y = _call_with_options(info.loader, f"dataset {name_or_path!r}", **options)
        if info.task == "regression":
            return LoadedData(X, y, "regression", None, name=name_or_path)
        return LoadedData(X, y, "classification", int(y.max()) + 1, name=name_or_path)
    path = os.fspath(name_or_path)
    base = os.path.basename(path).lower()
    looks_like_a_name = isinstance(name_or_path, str) and "." not in base and os.sep not in path
    if looks_like_a_name and not os.path.exists(path):
        raise ValueError(
            f"unknown dataset {path!r}; built-in datasets: {', '.join(DATASETS)} "
            "(or give a path to a .csv, .npz or IDX file)"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    check_data_file(path)  # a directory or FIFO is named as such
    if base.endswith((".csv", ".csv.gz", ".txt")):
        return _call_with_options(load_csv, "CSV files", path, **options)
    if base.endswith(".npz"):
        return _call_with_options(load_npz, ".npz files", path, **options)
    if _is_idx(base):
        return _call_with_options(load_idx, "IDX files", path, **options)
    raise ValueError(
        f"{path}: unknown file type; expected .csv, .csv.gz, .npz, or an MNIST IDX file "
        "(*-images-idx3-ubyte[.gz])"
    )


def _is_idx(base: str) -> bool:
    return base.endswith((".idx", ".gz")) or "ubyte" in base or ".idx" in base


def loads_images(name_or_path: str | os.PathLike) -> bool:
    """Whether `load_dataset(name_or_path, images=True)` gives (n, channels, height, width): the
    digits and MNIST IDX files do; tables (CSV, NPZ) are reshaped by their caller instead."""
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return "images" in inspect.signature(DATASETS[name_or_path].loader).parameters
    base = os.path.basename(os.fspath(name_or_path)).lower()
    return not base.endswith((".csv", ".csv.gz", ".txt", ".npz")) and _is_idx(base)


def _call_with_options(function: Callable, what: str, *args: Any, **options: Any) -> Any:
    """Call `function(*args, **options)`, naming the valid options when one is unknown."""
    valid = list(inspect.signature(function).parameters)[len(args) :]
    unknown = [name for name in options if name not in valid]
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for {what}; valid options: {', '.join(valid)}"
        )
    return function(*args, **options)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_noise(noise: float) -> None:
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")


def _even_counts(total: int, groups: int) -> list[int]:
    """`total` split into `groups` sizes differing by at most one, larger ones first."""
    return [total // groups + (i < total % groups) for i in range(groups)]


def _shuffled(X: np.ndarray, y: np.ndarray, generator: np.random.Generator, dtype: Any) -> Arrays:
    """Rows in random order, so any prefix of the data holds every class."""
    order = generator.permutation(len(X))
    return X[order].astype(float_dtype(dtype)), y[order].astype(np.int64)
