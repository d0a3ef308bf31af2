"""A trained model together with what it needs to predict raw rows: the standardisation it was
trained with, the task, and the class names — all kept in the model file's metadata.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chainrule import ops
from chainrule.io import ModelFileError, load_with_metadata
from chainrule.nn.module import Module
from chainrule.safetensors_format import printable, shown
from chainrule.train import predict


def run_metadata(result: Any, class_names: Any = None) -> dict[str, Any]:
    """The metadata `chainrule train --save` stores with a model (see experiment.RunResult)."""
    metadata: dict[str, Any] = {
        "task": "classification" if result.task.classification else "regression",
        "loss": result.loss,
        "n_classes": result.task.n_classes,
        "n_features": int(result.inputs.shape[1]),
        "dataset": result.config.dataset,
    }
    if class_names is not None:
        # One name per output class: data with a single class still trains two outputs.
        names = [str(name) for name in class_names]
        names += [str(i) for i in range(len(names), result.task.n_classes)]
        metadata["class_names"] = names
    if result.mean is not None:
        metadata["mean"] = [float(v) for v in result.mean]
        metadata["std"] = [float(v) for v in result.std]
    return metadata


def _widths(model: Module) -> tuple[int | None, int | None]:
    """(input features, outputs): the first and last weight matrices' widths (None without)."""
    matrices = [parameter.shape for parameter in model.parameters() if parameter.ndim == 2]
    return (matrices[0][1], matrices[-1][0]) if matrices else (None, None)


def check_prediction_metadata(model: Module, metadata: dict[str, Any]) -> None:
    """ValueError for metadata that predictions compute with but that does not fit `model`.

    mean and std (together) hold one number per input feature, finite in the model's dtype, std
    > 0 (a 0 gives NaN predictions); class_names one string per output class (two for one output
    column); n_features the input width. Lengths are compared before any value is converted, so
    a file with 100 000 means for 4 features is refused at once.
    """
    inputs, outputs = _widths(model)
    for key in ("task", "loss"):
        if key in metadata and not isinstance(metadata[key], str):
            raise ValueError(f"metadata {key!r} must be a string, got {shown(metadata[key])}")
    for key in ("n_classes", "n_features"):
        value = metadata.get(key)
        if value is not None and (not _is_count(value)):
            raise ValueError(f"metadata {key!r} must be a non-negative integer, got {shown(value)}")
    if metadata.get("n_features") is not None and metadata["n_features"] != inputs:
        raise ValueError(
            f"metadata 'n_features' is {metadata['n_features']} but the model takes {inputs}"
        )
    if ("mean" in metadata) != ("std" in metadata):
        raise ValueError("metadata holds only one of 'mean' and 'std'; scaling needs both")
    for key in ("mean", "std") if "mean" in metadata else ():
        _check_scaling(key, metadata[key], inputs, np.dtype(model.dtype))
    if "class_names" in metadata:
        names = metadata["class_names"]
        expected = None if outputs is None else max(outputs, 2)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"metadata 'class_names' must be a list of strings, got {shown(names)}"
            )
        if len(names) != expected:
            raise ValueError(
                f"metadata 'class_names' holds {len(names)} names, but the model predicts "
                f"{expected if expected is not None else 'an unknown number of'} classes"
            )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_scaling(key: str, value: Any, inputs: int | None, dtype: np.dtype) -> None:
    if not isinstance(value, list) or inputs is None or len(value) != inputs:
        found = f"{len(value)} values" if isinstance(value, list) else shown(value)
        raise ValueError(
            f"metadata {key!r} holds {found}, but the model takes "
            f"{inputs if inputs is not None else 'an unknown number of'} input features"
        )
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"metadata {key!r} must hold only numbers, got {shown(value)}")
    try:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: refused just below
            array = np.array([float(v) for v in value]).astype(dtype)
    except OverflowError:  # an integer beyond any float
        array = np.array([np.inf])
    if not np.isfinite(array).all():
        raise ValueError(f"metadata {key!r} holds values that are not finite in {dtype.name}")
    if key == "std" and not (array > 0).all():
        index = int(np.argmin(array > 0))
        raise ValueError(
            f"metadata 'std' is {shown(value[index])} for feature {index + 1}: scaling by it "
            "would give NaN or infinite predictions (std must be > 0)"
        )


class Predictor:
    """A model and the run metadata it predicts with; the metadata is checked against the model."""

    def __init__(self, model: Module, metadata: dict[str, Any] | None = None) -> None:
        self.model = model
        self.metadata = metadata or {}
        check_prediction_metadata(model, self.metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """The model file at `path` with its metadata; ModelFileError if they do not fit."""
        model, metadata = load_with_metadata(path)
        try:
            return cls(model, metadata)
        except ValueError as error:
            raise ModelFileError(str(os.fspath(path)), str(error)) from None

    @property
    def n_features(self) -> int | None:
        return _widths(self.model)[0]

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """The model's raw outputs for rows of unstandardised features."""
        X = np.asarray(X, dtype=self.model.dtype)
        expected = self.n_features
        if X.ndim != 2 or (expected is not None and X.shape[1] != expected):
            raise ValueError(
                f"the model takes {expected} features per row, the input has shape {X.shape}"
            )
        if "mean" in self.metadata:
            X = (X - np.asarray(self.metadata["mean"], dtype=X.dtype)) / np.asarray(
                self.metadata["std"], dtype=X.dtype
            )
        return predict(self.model, X)

    def describe(self, X: np.ndarray, probabilities: bool = False) -> list[str]:
        """One line per row: the predicted class (by name if known) or the predicted values."""
        outputs = self.outputs(X)
        if self.metadata.get("task") != "classification":
            return [", ".join(f"{v:.6g}" for v in row) for row in outputs.reshape(len(outputs), -1)]
        loss = self.metadata.get("loss")
        if outputs.shape[1] == 1:  # one probability (or logit) column: the positive class
            score = outputs[:, 0]
            p_positive = ops.sigmoid(score)[0] if loss == "bce_logits" else score
            p = np.stack([1 - p_positive, p_positive], axis=1)
        elif loss == "cross_entropy":
            p = ops.softmax(outputs, axis=1)[0]
        else:
            p = outputs
        # Names come from a file: escaped so that none can drive the terminal they are printed on.
        names = [printable(name) for name in self.metadata.get("class_names") or []]
        names = names or [str(i) for i in range(p.shape[1])]
        lines = []
        for row in p:
            line = names[int(row.argmax())]
            if probabilities:
                line += "  " + " ".join(f"{q:.4f}" for q in row)
            lines.append(line)
        return lines
