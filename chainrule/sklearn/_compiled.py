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

from chainrule.compile import compile as compile_step
from chainrule.tensor import Tensor, tensor
from chainrule.train import NonFiniteError

if TYPE_CHECKING:
    from chainrule.sklearn._base import _BaseMLP
    from chainrule.sklearn._convergence import _ConvergenceMonitor


def _step(mlp: _BaseMLP) -> Callable:
    """One mini-batch's update, compiled: everything that varies per batch is an argument (the
    inputs, the targets as the loss takes them, then the sample weights where there are any), and
    the step returns the (weighted) data loss as a view of the replay's buffer, read by the caller
    right after the call. Unweighted batches pass arrays only, which keeps each call on the
    replay's fast path."""
    model, optimizer = mlp._model, mlp._optimizer

    def train_step(xb: np.ndarray, tb: np.ndarray, *weights: np.ndarray) -> Tensor:
        optimizer.zero_grad()
        output = model(xb)
        loss = mlp._data_loss(output, tb, tensor(weights[0]) if weights else None)
        loss.backward()
        optimizer.step()
        return loss

    return compile_step(train_step, results="views")


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
    weights_group = mlp._optimizer.param_groups[0]
    penalised = mlp.alpha > 0
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    parameters = [p for layer in mlp._linears() for p in (layer.weight, layer.bias)]
    weight_tensors = parameters[::2]
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
                # np.take into a buffer kept across epochs; mode="clip" (a permutation is always
                # in range) because "raise" first gathers into a temporary: 41 against 113 µs
                # for digits' training rows, and X[order] takes 76.
                Xe = np.take(X, order, 0, out=X_shuffled, mode="clip")
                te = np.take(target, order, 0, mode="clip")
                we = None if weights is None else np.take(weights, order, mode="clip")
            loss_sum = 0.0
            for start, stop in bounds:
                count = stop - start
                if we is None:
                    total = count
                    batch: tuple = (Xe[start:stop], te[start:stop])
                else:
                    wb = we[start:stop]
                    total = float(wb.sum())
                    batch = (Xe[start:stop], te[start:stop], wb)
                # sklearn's alpha/(2·total)·Σ‖W‖²: its gradient is weight decay on the weights'
                # group, set per batch (the last may be smaller) and read at each replay; its
                # value, before the update, is summed here as the eager loop does (_batch_loss).
                decay = mlp.alpha / total
                if decay != weights_group["weight_decay"]:
                    weights_group["weight_decay"] = decay
                if penalised:
                    squared = 0.0
                    for weight in weight_tensors:
                        squared += float(np.vdot(weight.data, weight.data))
                    mlp._penalty_total += 0.5 * mlp.alpha * squared * (count / total)
                value = float(step(*batch))
                if not math.isfinite(value):
                    raise NonFiniteError(f"the loss is {value} at epoch {epoch}")
                loss_sum += value * count
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
