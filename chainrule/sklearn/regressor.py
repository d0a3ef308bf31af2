"""MLPRegressor: numeric targets, one or several columns, and its two losses: half the squared
error, and half the Poisson deviance through an exponential link. The network and the solvers it
trains with live in _base.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import xlogy
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d, validate_data

from chainrule.registry import get_loss
from chainrule.sklearn._base import _SPARSE_FORMATS, _BaseMLP
from chainrule.sklearn._validation import InvalidParameterError
from chainrule.tensor import Tensor, tensor

# sklearn's loss names; "squared_error" is the registry's half_mse. The registry has no Poisson
# deviance yet, so it is written here (_data_loss).
_LOSSES = ("squared_error", "poisson")


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with scikit-learn's parameters, trained by chainrule.

    loss='squared_error' minimises half the squared error, averaged over samples and outputs;
    loss='poisson' (counts, rates: y ≥ 0) predicts exp(z) of the network's output z and minimises
    half the Poisson deviance y·ln(y/ŷ) − y + ŷ, averaged over samples and summed over outputs
    (as sklearn). y may have several columns. `dropout`, `activation` and `dtype` as for
    MLPClassifier.

        reg = MLPRegressor(hidden_layer_sizes=(32,), random_state=0).fit(X_train, y_train)
        reg.predict(X_test)  # (n_samples,), or (n_samples, n_outputs)
    """

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: Any = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: Any = 10,
        max_fun: int = 15000,
        dropout: float = 0.0,
        dtype: Any = None,
    ) -> None:
        self.loss = loss
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dropout=dropout,
            dtype=dtype,
        )

    def _check_own_parameters(self, owner: str) -> None:
        if self.loss not in _LOSSES:
            raise InvalidParameterError(
                f"{owner}: unknown loss {self.loss!r}; expected one of "
                f"{', '.join(map(repr, _LOSSES))}"
            )

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE_FORMATS,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError(
                "Some value(s) of y are negative which is not allowed for Poisson regression."
            )
        self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        target = y.reshape(len(y), -1)
        n_outputs = target.shape[1]
        if self.loss == "poisson":
            # The deviance's constant y·ln y − y travels with the targets (columns k..2k−1), so
            # that the loss is chainrule ops on its arguments only (a compiled step can run it).
            target = np.hstack([target, xlogy(target, target) - target])
        return X, y, target, n_outputs

    def _weight_rows(self, y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray | None:
        return sample_weight

    def _data_loss(self, output: Tensor, target: np.ndarray, weights: Any = None) -> Tensor:
        """The mean loss over samples, or the weighted mean Σ w·L / Σ w."""
        if self.loss == "poisson":
            # With ŷ = e^z: y·ln(y/ŷ) − y + ŷ = e^z − y·z + (y·ln y − y), whose gradient is ŷ − y.
            # The bracket is a constant (target's second half, see _validate_input), kept so that
            # loss_ is sklearn's deviance.
            columns = output.shape[1]
            target = target if isinstance(target, Tensor) else tensor(target)
            counts, constant = target[:, :columns], target[:, columns:]
            losses = (output.exp() - counts * output + constant).sum(axis=1)
            if weights is None:
                return losses.mean()
        elif weights is None:
            return get_loss("half_mse")(output, target)
        else:
            losses = 0.5 * ((output - target) ** 2).mean(axis=1)
        # weights.sum(), not float(...): in a compiled step the weights are a Tensor of the batch.
        return (losses * weights).sum() / weights.sum()

    def _loss_compiles(self) -> bool:
        """Whether _data_loss is chainrule ops on its arguments only (a compiled step runs it)."""
        return True

    def _score_outputs(self, outputs: np.ndarray, y: np.ndarray, weights: Any) -> float:
        return r2_score(y, self._prediction(outputs), sample_weight=weights)

    def _prediction(self, outputs: np.ndarray) -> np.ndarray:
        if self.loss == "poisson":
            with np.errstate(over="ignore"):
                outputs = np.exp(outputs)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,), or (n_samples, n_outputs) for a multi-output fit."""
        return self._prediction(self._outputs(X))

    @available_if(_BaseMLP._stochastic)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), optionally weighted, continuing from the current weights and
        optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
