"""Sparse X (SciPy CSR/CSC matrices and arrays): the first layer's product is taken on the sparse
rows of each batch, so that X is never made dense, not even one batch of it. The rest of the
network sees the dense (batch, width) output of that layer, as for dense X.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse

from chainrule import nn
from chainrule.tensor import Tensor, apply

# Row numbers travel through the training loop as the network's input column, in the network's
# precision: float32 holds every integer below 2**24 exactly.
MAX_ROWS = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}


def is_sparse(X: Any) -> bool:
    """Whether X is a SciPy sparse matrix or array."""
    return scipy.sparse.issparse(X)


def sparse_linear(W: np.ndarray, b: np.ndarray, *, X: Any) -> tuple[np.ndarray, Any]:
    """z = X·Wᵀ + b for a sparse batch X (batch, in), W (out, in), b (out,).

    ∂L/∂W = gᵀ·X and ∂L/∂b = Σ_rows g: a dense (out, in) gradient from a sparse product that
    touches only the stored values of X. No gradient flows to X (it is data).
    """
    z = np.asarray(X @ W.T) + b

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(g.T @ X), g.sum(axis=0)

    return z, backward


class SparseRows(nn.Module):
    """The first Linear layer of a network applied to the rows of a sparse X named by number.

    Input: (batch, 1) row numbers (ints, or floats holding ints); output: (batch, out_features)
    equal to `linear(X[rows].toarray())`. The layer's parameters are the Linear's own.
    """

    def __init__(self, X: Any, linear: nn.Linear) -> None:
        self.X, self.linear = X, linear

    def forward(self, rows: Any) -> Tensor:
        rows = rows.data if isinstance(rows, Tensor) else np.asarray(rows)
        batch = self.X[rows[:, 0].astype(np.intp)]
        return apply(sparse_linear, self.linear.weight, self.linear.bias, X=batch)


def as_rows(X: Any, dtype: np.dtype) -> Any:
    """A sparse X in CSR (rows are sliced cheaply) and in the network's precision."""
    if X.shape[0] >= MAX_ROWS[np.dtype(dtype)]:
        raise ValueError(
            f"sparse X with {X.shape[0]} rows needs dtype='float64' (row numbers travel as "
            f"{np.dtype(dtype).name})"
        )
    return X.tocsr().astype(dtype, copy=False)


def sparse_network(model: nn.Sequential, X: Any) -> tuple[nn.Sequential, np.ndarray]:
    """(network, inputs): the model with its first Linear reading rows of the sparse X, and the
    column of row numbers (n_samples, 1) to feed it; both share the model's parameters."""
    first, *rest = list(model)
    return nn.Sequential(SparseRows(X, first), *rest), np.arange(X.shape[0])[:, None]
