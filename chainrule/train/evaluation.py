"""Evaluating a model without a graph, the batches of an epoch, and the single-process case of
the data-parallel protocol the loop talks to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from chainrule import registry
from chainrule.metrics import to_labels
from chainrule.nn.module import Module
from chainrule.tensor import Tensor, no_grad

__all__ = ["LocalProcess", "batch_selectors", "correct_count", "evaluate", "format_log", "predict"]


class LocalProcess:
    """The single-process case of the data-parallel protocol that `chainrule.distributed`
    implements: one rank holding every sample, so sharding and reductions change nothing."""

    rank, world_size, is_root = 0, 1, True

    def check_order(self, order: np.ndarray | None, n: int) -> None:
        """Every rank must shuffle alike; alone, there is nothing to compare."""

    def shard(self, selector: Any, count: int) -> Any:
        """This rank's part of a batch: all of it."""
        return selector

    def average_gradients(
        self, parameters: Sequence[Tensor], local_count: int, global_count: int
    ) -> None:
        """Combine the ranks' gradients: alone, they are already the batch's."""

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Sum over ranks: alone, the values themselves."""
        return values

    def broadcast_parameters(self, model: Module) -> None:
        """Give every rank rank 0's weights: alone, nothing to send."""


def batch_selectors(n: int, batch_size: int, order: np.ndarray | None) -> list[Any]:
    """Index selectors for one epoch: slices of the data in order, or chunks of a permutation."""
    starts = range(0, n, batch_size)
    if order is None:
        return [slice(s, min(s + batch_size, n)) for s in starts]
    return [order[s : s + batch_size] for s in starts]


def selection_size(selector: Any) -> int:
    """How many rows a batch selector (a slice or an index array) takes."""
    return selector.stop - selector.start if isinstance(selector, slice) else len(selector)


def correct_count(output: np.ndarray, target: np.ndarray, loss_name: str) -> int:
    """How many rows the outputs classify as their targets say (logits cut at 0, else at 0.5)."""
    if output.ndim == 2 and output.shape[1] > 1 and target.ndim == 1:
        # Class scores against class indices, fit's every step for cross-entropy: one argmax.
        return int(np.count_nonzero(output.argmax(axis=1) == target))
    entry = registry.LOSSES.get(loss_name)
    threshold = 0.0 if entry is not None and entry.output == "logits" else 0.5
    labels = to_labels(output, threshold)
    if target.ndim == 2 and target.shape[1] > 1:
        target = target.argmax(axis=1)
    return int(np.count_nonzero(labels == target.reshape(len(target))))


def evaluate(
    model: Module,
    X: np.ndarray,
    y: np.ndarray,
    loss: str | Callable = "mse",
    classification: bool = False,
    batch_size: int = 1024,
    process: Any = None,
) -> dict[str, float]:
    """Loss (and accuracy for classification) on (X, y), in eval mode, without a graph.

    With a data-parallel `process`, each rank evaluates its share and the sums are combined.
    """
    process = process or LocalProcess()
    loss_fn = registry.get_loss(loss, "evaluate")
    loss_name = loss if isinstance(loss, str) else ""
    lo = process.rank * len(X) // process.world_size
    hi = (process.rank + 1) * len(X) // process.world_size
    was_training = model.training
    model.eval()
    totals = np.zeros(2)
    with no_grad():
        for selector in batch_selectors(hi - lo, batch_size, None):
            rows = slice(lo + selector.start, lo + selector.stop)
            output = model(X[rows])
            totals[0] += loss_fn(output, y[rows]).item() * (rows.stop - rows.start)
            if classification:
                totals[1] += correct_count(output.data, y[rows], loss_name)
    model.train(was_training)
    totals = process.sum(totals)
    result = {"loss": float(totals[0] / len(X))}
    if classification:
        result["accuracy"] = float(totals[1] / len(X))
    return result


def predict(model: Module, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X, in eval mode, without recording a graph."""
    was_training = model.training
    model.eval()
    with no_grad():
        outputs = [model(X[s]).data for s in batch_selectors(len(X), batch_size, None)]
    model.train(was_training)
    return np.concatenate(outputs)


def format_log(epoch: int, logs: dict[str, float]) -> str:
    """The founding tutorial's line, `Epoch N, Loss: x.xxxx`, then validation figures if any."""
    parts = [f"Epoch {epoch}, Loss: {logs['loss']:.4f}"]
    for key, label in {"val_loss": "Val loss", "val_accuracy": "Val accuracy"}.items():
        if key in logs:
            parts.append(f"{label}: {logs[key]:.4f}")
    return ", ".join(parts)
