"""Metrics on NumPy arrays: accuracy, confusion matrix, mean squared error, R².

Predictions may be class labels, class scores (one column per class: the arg-max wins) or one
column of probabilities (0.5 is the threshold) — `to_labels` turns each into labels.
"""

from __future__ import annotations

import numpy as np


def to_labels(prediction: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class labels from a model's output: arg-max of scores, or a threshold on one column."""
    prediction = np.asarray(prediction)
    if prediction.ndim == 2 and prediction.shape[1] > 1:
        return prediction.argmax(axis=1)
    flat = prediction.reshape(len(prediction), -1)[:, 0] if prediction.ndim == 2 else prediction
    if flat.dtype.kind in "iub":
        return flat.astype(np.int64)
    return (flat >= threshold).astype(np.int64)


def _as_label_vector(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:  # one-hot or probabilities
        return y.argmax(axis=1)
    return y.astype(np.int64) if y.dtype.kind == "f" else y


def accuracy(prediction: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of samples whose predicted class equals the target class (see `to_labels`).

    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # (samples, classes)
    >>> accuracy(scores, np.array([0, 1, 1]))  # the arg-max is right twice in three
    0.6666666666666666
    """
    labels = to_labels(prediction, threshold)
    target = _as_label_vector(target)
    if labels.shape != target.shape:
        raise ValueError(f"accuracy: {labels.shape[0]} predictions but {target.shape[0]} targets")
    return float(np.mean(labels == target)) if len(target) else float("nan")


def confusion_matrix(
    prediction: np.ndarray, target: np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as class j."""
    labels = to_labels(prediction)
    target = _as_label_vector(target)
    if n_classes is None:
        n_classes = int(max(labels.max(initial=0), target.max(initial=0))) + 1
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (target, labels), 1)
    return counts


def mean_squared_error(prediction: np.ndarray, target: np.ndarray) -> float:
    """mean((ŷ − y)²) in float64, the target reshaped to the prediction's shape.

    >>> mean_squared_error([1.0, 2.0], [1.0, 4.0])
    2.0
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64).reshape(prediction.shape)
    return float(np.mean((prediction - target) ** 2))


def r2_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """1 − SS_res / SS_tot (1 is perfect, 0 is as good as predicting the mean)."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64).reshape(prediction.shape)
    residual = np.sum((target - prediction) ** 2)
    total = np.sum((target - target.mean(axis=0)) ** 2)
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return float(1 - residual / total)


METRICS = {"accuracy": accuracy, "mse": mean_squared_error, "r2": r2_score}
