"""MLPRegressor: numeric targets, one or several columns, and half the squared error. The
network and the solvers it trains with live in _base.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d, validate_data

from chainrule.sklearn._base import _BaseMLP
from chainrule.tensor import Tensor
from chainrule.registry import get_loss


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with scikit-learn's parameters, trained by chainrule.

    Minimises half the squared error (sklearn's 'squared_error'), averaged over samples and
    outputs; y may have several columns. `dtype` as for MLPClassifier.
    """

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self.out_activation_ = "identity"
        target = y.reshape(len(y), -1)
        return X, y, target, target.shape[1]

    def _data_loss(self, prediction: Tensor, target: np.ndarray) -> Tensor:
        return get_loss("half_mse")(prediction, target)

    def _score_arrays(self, X: np.ndarray, y: np.ndarray) -> float:
        return r2_score(y, self._prediction(self._outputs(X, check_input=False)))

    def _prediction(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,), or (n_samples, n_outputs) for a multi-output fit."""
        return self._prediction(self._outputs(X))

    @available_if(_BaseMLP._stochastic)
    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
