"""The lbfgs solver: scipy's L-BFGS-B over all parameters as one vector, on the full-batch
objective (sklearn's: the mean or weighted-mean loss plus alpha/(2·n)·Σ‖W‖²). The stochastic solvers
and what both share live in _base.py."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from chainrule import nn

if TYPE_CHECKING:
    from chainrule.sklearn._base import _BaseMLP

_CHUNK_ELEMENTS = 2**16  # activation elements per chunk of rows (see full_batch_loss)
NON_FINITE_WEIGHTS = (  # scikit-learn's words
    "Solver produced non-finite parameter weights. The input data may contain large values and "
    "need to be preprocessed."
)


def full_batch_loss(
    mlp: _BaseMLP, network: nn.Module, inputs: Any, target: np.ndarray, weights: Any
) -> float:
    """The same objective over all rows, for lbfgs; accumulates its gradient in `.grad`.

    The data term is summed over chunks of rows (each chunk's mean weighted by its share of the
    samples or of the sample weights), so that no activation outgrows a few hundred kilobytes:
    larger temporaries are fresh memory from the OS on every call, and that made a full-batch
    step 2.4× slower on digits. Each chunk's share seeds its backward pass. The penalty
    alpha/(2·n)·Σ‖W‖² and its gradient alpha/n·W are added directly, outside the graph (lbfgs
    has no optimizer to apply them as weight decay).
    """
    n = len(target) if weights is None else float(weights.sum())
    widest = max(layer.out_features for layer in mlp._linears())
    rows = max(64, _CHUNK_ELEMENTS // widest)
    value = 0.0
    for start in range(0, len(target), rows):
        part = slice(start, min(start + rows, len(target)))
        part_weights = None if weights is None else weights[part]
        share = (part.stop - start if weights is None else float(part_weights.sum())) / n
        loss = mlp._data_loss(network(inputs[part]), target[part], part_weights)
        loss.backward(share)
        value += float(loss.data) * share
    if mlp.alpha > 0:
        value += 0.5 * mlp.alpha / n * mlp._squared_weights()
        for layer in mlp._linears():
            layer.weight.grad += (mlp.alpha / n) * layer.weight.data
    return value


def fit_lbfgs(
    mlp: _BaseMLP, network: nn.Module, inputs: Any, target: np.ndarray, weights: np.ndarray | None
) -> None:
    """Minimise the full-batch objective with L-BFGS-B over all parameters as one vector; the
    network reads `inputs` (X, or row numbers of a sparse X: see _sparse.py)."""
    parameters = list(mlp._model.parameters())
    splits = np.cumsum([p.data.size for p in parameters])[:-1]

    def load(theta: np.ndarray) -> None:
        for p, chunk in zip(parameters, np.split(theta, splits)):
            p.data[...] = chunk.reshape(p.data.shape)

    losses = []

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        load(theta)
        mlp._model.zero_grad()
        losses.append(full_batch_loss(mlp, network, inputs, target, weights))
        gradient = np.concatenate([p.grad.ravel() for p in parameters])
        return losses[-1], gradient.astype(np.float64)

    def report(theta: np.ndarray) -> None:
        iterations.append(losses[-1])
        print(f"Iteration {len(iterations)}, loss = {losses[-1]:.8f}")

    iterations: list[float] = []
    theta = np.concatenate([p.data.ravel() for p in parameters]).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        result = minimize(
            objective,
            theta,
            method="L-BFGS-B",
            jac=True,
            callback=report if mlp.verbose else None,
            options={"maxfun": mlp.max_fun, "maxiter": mlp.max_iter, "gtol": mlp.tol},
        )
    load(result.x)
    mlp.n_iter_ = min(int(result.nit), mlp.max_iter)
    mlp.loss_ = float(result.fun)
    if result.status != 0:
        message = result.message.decode() if isinstance(result.message, bytes) else result.message
        # sklearn's words (sklearn.utils.optimize._check_optimize_result).
        text = (
            f"lbfgs failed to converge after {mlp.n_iter_} iteration(s) (status={result.status}):"
            f"\n{message}\n"
        )
        if mlp.n_iter_ == mlp.max_iter:
            text += (
                "\nIncrease the number of iterations to improve the convergence "
                f"(max_iter={mlp.max_iter})."
            )
        text += (
            "\nYou might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html"
        )
        warnings.warn(text, ConvergenceWarning, stacklevel=4)
    if not all(np.isfinite(p.data).all() for p in parameters):
        raise ValueError(NON_FINITE_WEIGHTS)
