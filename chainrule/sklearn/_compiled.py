"""The stochastic solvers' epoch loop around one compiled step (`chainrule.compile`): sklearn's
shuffling, batches, L2 term and end-of-epoch rules, with each mini-batch's update replayed rather
than stepped eagerly. Sparse X and losses that are not chainrule ops train through `fit` instead
(_base.py); both paths give the same numbers (float64: to 1e-12 relative per step)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from chainrule import functional as F
from chainrule.compile import compile as compile_step
from chainrule.tensor import Tensor, tensor
from chainrule.train import NonFiniteError

if TYPE_CHECKING:
    from chainrule.sklearn._base import _BaseMLP
    from chainrule.sklearn._convergence import _ConvergenceMonitor


def _step(mlp: _BaseMLP) -> Callable:
    """One mini-batch's update, compiled: everything that varies per batch is an argument (the
    inputs, the targets as the loss takes them, the sample weights or None), and the step returns
    the weighted data loss and Σ‖W‖² before the update, read by the caller after the call."""
    model, optimizer = mlp._model, mlp._optimizer
    weights = [layer.weight for layer in mlp._linears()] if mlp.alpha > 0 else []
    zeros = [np.zeros_like(weight.data) for weight in weights]

    def train_step(xb: np.ndarray, tb: np.ndarray, wb: np.ndarray | None) -> tuple:
        optimizer.zero_grad()
        squares = None
        for weight, zero in zip(weights, zeros):  # the L2 term's value; its gradient is the decay
            # ‖W‖² as mse_loss(W, 0, "sum"): an op with a replay kernel and a C instruction, so
            # the penalty keeps small networks on the C interpreter.
            term = F.mse_loss(weight, zero, reduction="sum")
            squares = term if squares is None else squares + term
        output = model(xb)
        loss = mlp._data_loss(output, tb, None if wb is None else tensor(wb))
        loss.backward()
        optimizer.step()
        return loss, squares

    return compile_step(train_step)


def fit_compiled(
    mlp: _BaseMLP,
    X: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray | None,
    batch_size: int,
    generator: np.random.Generator,
    epochs: int,
    monitor: _ConvergenceMonitor,
) -> None:
    """Train `epochs` epochs of mini-batches as `chainrule.fit` would with the estimator's batch
    loss (the same shuffles from `generator`, the same batches, the same running sums), calling
    `monitor` at each epoch's end. Raises NonFiniteError where a loss or a weight is NaN/Inf."""
    step = _step(mlp)
    X = np.ascontiguousarray(X)  # every batch a contiguous slice, shuffled or not
    n = X.shape[0]
    groups = mlp._optimizer.param_groups
    parameters = [p for layer in mlp._linears() for p in (layer.weight, layer.bias)]
    state = SimpleNamespace(logs={}, optimizer=mlp._optimizer, stop=False)
    shuffled = mlp.shuffle and batch_size < n
    X_shuffled = np.empty_like(X, order="C") if shuffled else None
    if not _finite(parameters):
        raise NonFiniteError("a weight is NaN or Inf before the first step")
    mlp._model.train()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(epochs):
            Xe, te, we = X, target, weights
            if shuffled:  # one gather per epoch, then every batch is a slice (as fit does)
                order = generator.permutation(n)
                # np.take into buffers kept across epochs: half the time of X[order].
                Xe, te = np.take(X, order, 0, out=X_shuffled), np.take(target, order, 0)
                we = None if weights is None else np.take(weights, order)
            loss_sum = 0.0
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                count = stop - start
                wb = None if we is None else we[start:stop]
                total = count if wb is None else float(wb.sum())
                # sklearn's alpha/(2·total)·Σ‖W‖²: its gradient is weight decay on the weights'
                # group, set per batch (the last may be smaller) and read at each replay.
                groups[0]["weight_decay"] = mlp.alpha / total
                loss, squares = step(Xe[start:stop], te[start:stop], wb)
                value = loss.item()
                if not math.isfinite(value):
                    raise NonFiniteError(f"the loss is {value} at epoch {epoch}")
                loss_sum += value * count
                if squares is not None:
                    mlp._penalty_total += 0.5 * mlp.alpha * squares.item() * (count / total)
            state.logs = {"loss": loss_sum / n}
            monitor.on_epoch_end(state)
            if state.stop:
                break
    if not _finite(parameters):
        raise NonFiniteError("a weight became NaN or Inf")


def _finite(parameters: list[Tensor]) -> bool:
    return all(np.isfinite(parameter.data).all() for parameter in parameters)


def compiles(mlp: _BaseMLP, X: Any) -> bool:
    """Whether the compiled loop can train on X: dense X (a SciPy product is not a chainrule op)
    and a loss made of chainrule ops."""
    return isinstance(X, np.ndarray) and mlp._loss_compiles() and mlp._compile_steps
