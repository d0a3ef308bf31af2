"""A trained model together with what it needs to predict raw rows: the standardisation it was
trained with, the task, and the class names — all kept in the model file's metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chainrule import ops
from chainrule.nn.module import Module
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
        metadata["class_names"] = [str(name) for name in class_names]
    if result.mean is not None:
        metadata["mean"] = [float(v) for v in result.mean]
        metadata["std"] = [float(v) for v in result.std]
    return metadata


class Predictor:
    def __init__(self, model: Module, metadata: dict[str, Any] | None = None) -> None:
        self.model = model
        self.metadata = metadata or {}

    @property
    def n_features(self) -> int | None:
        for parameter in self.model.parameters():
            return parameter.shape[1] if parameter.ndim == 2 else None
        return None

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
        names = self.metadata.get("class_names") or [str(i) for i in range(p.shape[1])]
        lines = []
        for row in p:
            line = names[int(row.argmax())]
            if probabilities:
                line += "  " + " ".join(f"{q:.4f}" for q in row)
            lines.append(line)
        return lines
