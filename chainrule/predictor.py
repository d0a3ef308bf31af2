"""A trained model together with what it needs to predict raw rows: the standardisation it was
trained with, the task, and the class names — all kept in the model file's metadata.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chainrule import nn, ops
from chainrule.io import ModelFileError, load_with_metadata, save
from chainrule.nn.module import Module
from chainrule.registry import LOSSES
from chainrule.safetensors_format import printable, shown
from chainrule.train import predict


def run_metadata(result: Any, class_names: Any = None) -> dict[str, Any]:
    """The metadata `chainrule train --save` stores with a model (see experiment.RunResult)."""
    metadata: dict[str, Any] = {
        "task": "classification" if result.task.classification else "regression",
        "loss": result.loss,
        "n_classes": result.task.n_classes,
        "n_features": int(np.prod(result.inputs.shape[1:])),
        "dataset": result.config.dataset,
    }
    if result.inputs.ndim > 2:  # images: predict reshapes flat rows of pixels to this
        metadata["input_shape"] = [int(n) for n in result.inputs.shape[1:]]
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
    """(input features, outputs): the first and last weight matrices' widths (None without). A
    network that starts with a convolution takes images: its input width is unknown here."""
    weights = [parameter.shape for parameter in model.parameters() if parameter.ndim >= 2]
    matrices = [shape for shape in weights if len(shape) == 2]
    if not matrices:
        return None, None
    return (matrices[0][1] if len(weights[0]) == 2 else None), matrices[-1][0]


MAX_INPUT_PIXELS = 2**26  # an input_shape read from a file: 64 Mi values per image at most


def _check_input_shape(model: Module, value: Any) -> tuple[int, ...]:
    """A file's input_shape, (channels, height, width) or similar, that the model runs on."""
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 4
        or not all(_is_count(n) and n >= 1 for n in value)
        or int(np.prod(value)) > MAX_INPUT_PIXELS
    ):
        raise ValueError(
            f"metadata 'input_shape' must be a list of 1 to 4 sizes, got {shown(value)}"
        )
    try:
        predict(model, np.zeros((1, *value), dtype=model.dtype))
    except ValueError as error:
        raise ValueError(
            f"metadata 'input_shape' {value} does not fit the model: {error}"
        ) from None
    return tuple(value)


def check_prediction_metadata(model: Module, metadata: dict[str, Any]) -> None:
    """ValueError for metadata that predictions compute with but that does not fit `model`.

    mean and std (together) hold one number per input feature, finite in the model's dtype, std
    > 0 (a 0 gives NaN predictions); class_names one string per output class (two for one output
    column); n_features the input width. Lengths are compared before any value is converted, so
    a file with 100 000 means for 4 features is refused at once.
    """
    inputs, outputs = _widths(model)
    channels = None
    if "input_shape" in metadata:
        shape = _check_input_shape(model, metadata["input_shape"])
        inputs, channels = int(np.prod(shape)), shape[0]
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
        _check_scaling(key, metadata[key], inputs, np.dtype(model.dtype), channels)
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


def _check_scaling(
    key: str, value: Any, inputs: int | None, dtype: np.dtype, channels: int | None = None
) -> None:
    # Images are scaled by one number over all pixels or one per channel, other inputs per feature.
    allowed = (1, channels) if channels is not None else (inputs,)
    if not isinstance(value, list) or inputs is None or len(value) not in allowed:
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
    """A model file's whole predictor: the network and everything needed to use it on raw rows —
    the input scaling it was trained with, the task, the loss, the class names.

    Every face reads it the same way (`chainrule predict`, `explain`, `info`, the playground), so
    the same input gives the same output everywhere. Keywords override `metadata`'s entries:

    >>> import numpy as np
    >>> from chainrule import nn
    >>> net = nn.Sequential(nn.Linear(2, 3, rng=0))
    >>> p = Predictor(net, mean=[1.0, 2.0], std=[0.5, 4.0], classes=["a", "b", "c"],
    ...               loss="cross_entropy")
    >>> p.transform(np.array([[2.0, 2.0]])).tolist()  # (x − mean) / std: what the network sees
    [[2.0, 0.0]]
    >>> round(float(p.predict_proba(np.array([[2.0, 2.0]])).sum()), 6)
    1.0
    >>> str(p.predict(np.array([[2.0, 2.0]]))[0]) in "abc"
    True

    `save(path)` writes it as a model file; `Predictor.load(path)` reads any model file, the
    command line's and plain `chainrule.save(model, path)` ones alike (a file that names no task
    is a classifier when it has class names or ends in Softmax, else a regressor).
    """

    def __init__(
        self,
        model: Module,
        metadata: dict[str, Any] | None = None,
        *,
        mean: Any = None,
        std: Any = None,
        classes: Any = None,
        task: str | None = None,
        loss: str | None = None,
    ) -> None:
        metadata = dict(metadata or {})
        if "class_names" not in metadata and isinstance(metadata.get("classes"), list):
            # `chainrule.save(model, path, metadata={"classes": [...]})`, as users write it
            metadata["class_names"] = [str(name) for name in metadata["classes"]]
        if mean is not None or std is not None:
            metadata["mean"] = [float(v) for v in np.ravel(mean)] if mean is not None else None
            metadata["std"] = [float(v) for v in np.ravel(std)] if std is not None else None
            metadata = {key: value for key, value in metadata.items() if value is not None}
        if classes is not None:
            metadata["class_names"] = [str(name) for name in classes]
        if task is not None:
            metadata["task"] = task
        if loss is not None:
            metadata["loss"] = loss
        self.model = model
        self.metadata = metadata
        check_prediction_metadata(model, self.metadata)
        if self.metadata.get("task") not in (None, "classification", "regression"):
            raise ValueError(
                f"metadata 'task' must be 'classification' or 'regression', "
                f"got {shown(self.metadata['task'])}"
            )
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"metadata 'loss' {shown(self.loss)} is not a loss chainrule knows")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """The model file at `path` with its metadata; ModelFileError if they do not fit."""
        model, metadata = load_with_metadata(path)
        try:
            return cls(model, metadata)
        except ValueError as error:
            raise ModelFileError(str(os.fspath(path)), str(error)) from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the model and everything here to a model file (atomic, no code inside)."""
        save(self.model, path, metadata=self.metadata)

    # ---- what the file says, or what follows from the model ---------------------------------
    @property
    def n_features(self) -> int | None:
        """The number of input features the first layer takes (None if it cannot tell); for
        images the number of pixels (values) in one."""
        if self.input_shape is not None:
            return int(np.prod(self.input_shape))
        return _widths(self.model)[0]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input, e.g. (1, 8, 8), for networks over images (None otherwise)."""
        shape = self.metadata.get("input_shape")
        return tuple(shape) if shape is not None else None

    @property
    def loss(self) -> str | None:
        """The registry name of the loss it was trained with, if the file says."""
        return self.metadata.get("loss")

    @property
    def task(self) -> str:
        """'classification' or 'regression': as the file says, else from class names, the loss
        or a final Softmax."""
        task = self.metadata.get("task")
        if task is not None:
            return task
        last = _last_layer(self.model)
        classifier = (
            "class_names" in self.metadata
            or (self.loss is not None and LOSSES[self.loss].classification)
            or isinstance(last, nn.Softmax)
        )
        return "classification" if classifier else "regression"

    @property
    def classes(self) -> list[str] | None:
        """The class names, or for a classifier without names their indices as strings."""
        if self.task != "classification":
            return None
        names = self.metadata.get("class_names")
        if names:
            return [printable(name) for name in names]
        outputs = _widths(self.model)[1] or 1
        return [str(i) for i in range(max(outputs, 2))]

    def output_kind(self) -> str:
        """What the network's outputs are: 'logits', 'probabilities' or 'values'."""
        if self.loss is not None:
            return LOSSES[self.loss].output
        if self.task != "classification":
            return "values"
        return (
            "probabilities"
            if isinstance(_last_layer(self.model), (nn.Softmax, nn.Sigmoid))
            else "logits"
        )

    # ---- using it ------------------------------------------------------------------------------
    def transform(self, X: Any) -> np.ndarray:
        """Raw rows (n, features) as the network takes them: scaled by the training split's mean
        and std when the file has them, in the model's dtype. For a network over images, rows of
        flat pixels (n, pixels), images (n, *input_shape) or one image (*input_shape) all give
        (n, *input_shape)."""
        X = np.asarray(X, dtype=self.model.dtype)
        if self.input_shape is not None:
            return self._transform_images(X, self.input_shape)
        X = X[None, :] if X.ndim == 1 else X
        expected = self.n_features
        if X.ndim != 2 or (expected is not None and X.shape[1] != expected):
            raise ValueError(
                f"the model takes {expected} features per row, the input has shape {X.shape}"
            )
        if "mean" in self.metadata:
            X = (X - np.asarray(self.metadata["mean"], dtype=X.dtype)) / np.asarray(
                self.metadata["std"], dtype=X.dtype
            )
        return X

    def _transform_images(self, X: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        if X.shape == shape:
            X = X[None]
        elif X.ndim == 1 and X.size == size or X.ndim == 2 and X.shape[1] == size:
            X = X.reshape(-1, *shape)
        elif X.shape[1:] != shape:
            raise ValueError(
                f"the model takes images of shape {shape} (or rows of {size} pixels), the input "
                f"has shape {X.shape}"
            )
        if "mean" in self.metadata:
            mean = np.asarray(self.metadata["mean"], dtype=X.dtype)
            std = np.asarray(self.metadata["std"], dtype=X.dtype)
            if mean.size > 1:  # one per channel
                mean, std = (v.reshape(-1, *[1] * (len(shape) - 1)) for v in (mean, std))
            X = (X - mean) / std
        return X

    def outputs(self, X: Any) -> np.ndarray:
        """The network's raw outputs for raw rows."""
        return predict(self.model, self.transform(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, classes) for raw rows; a ValueError for a regressor."""
        if self.task != "classification":
            raise ValueError(
                "this model is a regressor: it has no class probabilities (a file saved from "
                "Python says it is a classifier with chainrule.Predictor(model, classes=[...]))"
            )
        outputs = self.outputs(X)
        kind = self.output_kind()
        if outputs.shape[1] == 1:  # one column: the positive class
            score = outputs[:, 0]
            positive = ops.sigmoid(score)[0] if kind == "logits" else score
            return np.stack([1 - positive, positive], axis=1)
        if kind == "logits":
            return ops.softmax(outputs, axis=1)[0]
        return outputs

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class names (n,) of a classifier, or the values (n, outputs) of a
        regressor, for raw rows."""
        if self.task != "classification":
            return self.outputs(X)
        names = np.array(self.classes, dtype=object)
        return names[self.predict_proba(X).argmax(axis=1)]

    def describe(self, X: Any, probabilities: bool = False) -> list[str]:
        """One line per row: the predicted class (by name) with its probabilities on request, or
        the predicted values."""
        if self.task != "classification":
            if probabilities:
                self.predict_proba(X)  # the regressor's refusal, with what to do
            outputs = self.outputs(X)
            return [", ".join(f"{v:.6g}" for v in row) for row in outputs.reshape(len(outputs), -1)]
        p = self.predict_proba(X)
        names = self.classes
        lines = []
        for row in p:
            line = names[int(row.argmax())]
            if probabilities:
                line += "  " + " ".join(f"{q:.4f}" for q in row)
            lines.append(line)
        return lines


def _last_layer(model: Module) -> Module:
    """The last leaf module of a (nested) Sequential, or the model itself."""
    last = model
    while isinstance(last, nn.Sequential) and len(last):
        last = last[-1]
    return last
