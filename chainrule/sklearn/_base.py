"""_BaseMLP: what MLPClassifier and MLPRegressor share: hyper-parameters, the network, the lbfgs
and stochastic solvers, prediction. Targets, losses and scores live in classifier.py and
regressor.py; the end-of-epoch rules in _convergence.py."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from chainrule import nn, optim
from chainrule.nn import init
from chainrule.sklearn import _compiled, _sparse
from chainrule.sklearn._convergence import _ConvergenceMonitor
from chainrule.sklearn._lbfgs import NON_FINITE_WEIGHTS, fit_lbfgs
from chainrule.sklearn._validation import (
    _ALSO_ALLOWED,
    _CHOICES,
    _FLAGS,
    _INTERVALS,
    _SIZE,
    InvalidParameterError,
    _check_interval,
    _float_dtype,
    _generator,
    _hidden_module,
)
from chainrule.tensor import Tensor
from chainrule.train import NonFiniteError
from chainrule.train import fit as train_model
from chainrule.train import predict as forward

_SPARSE_FORMATS = ["csr", "csc"]


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: validation, the network, both solvers.

    Fitted state beyond sklearn's attributes: `_model` (the nn.Sequential that `coefs_` and
    `intercepts_` view) and `_optimizer` (kept so that partial_fit continues its moments).
    """

    # sgd and adam replay a compiled step where they can (see _compiled.py); False: every step
    # eager through chainrule.fit (the reference the compiled loop is tested against).
    _compile_steps = True

    def __init__(
        self,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.dtype = dtype

    # ---- fitted attributes that view the network ----------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model")

    def _linears(self) -> list[nn.Linear]:
        if "_model" not in vars(self):
            raise AttributeError(f"{type(self).__name__} has no weights until it is fitted")
        return [layer for layer in self._model if isinstance(layer, nn.Linear)]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices in sklearn's layout (fan_in, fan_out): views of the model's weights."""
        return [layer.weight.data.T for layer in self._linears()]

    @coefs_.setter
    def coefs_(self, coefs: list) -> None:
        self._assign("coefs_", coefs, lambda layer: layer.weight, transpose=True)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors (fan_out,): views of the model's biases."""
        return [layer.bias.data for layer in self._linears()]

    @intercepts_.setter
    def intercepts_(self, intercepts: list) -> None:
        self._assign("intercepts_", intercepts, lambda layer: layer.bias, transpose=False)

    def _assign(self, name: str, arrays: list, parameter: Any, transpose: bool) -> None:
        """Copy assigned weights into the network (in its precision), as sklearn users assign
        coefs_ / intercepts_ for warm starts; the optimizer's state and views stay valid."""
        layers = self._linears()
        arrays = [np.asarray(array) for array in arrays]
        shapes = [parameter(layer).data.shape for layer in layers]
        given = [array.T.shape if transpose else array.shape for array in arrays]
        if given != shapes:
            expected = [shape[::-1] if transpose else shape for shape in shapes]
            got = [array.shape for array in arrays]
            raise ValueError(f"{name} must have the shapes {expected}, got {got}")
        for layer, array in zip(layers, arrays):
            parameter(layer).data[...] = array.T if transpose else array

    # ---- parameters -------------------------------------------------------------------------
    def _check_parameters(self) -> list[int]:
        """Validate every hyper-parameter (at fit, as sklearn does); return the hidden sizes."""
        owner = type(self).__name__
        for name, options in _CHOICES.items():
            if getattr(self, name) not in options:
                raise InvalidParameterError(
                    f"{owner}: unknown {name} {getattr(self, name)!r}; expected one of "
                    f"{', '.join(map(repr, options))}"
                )
        for name, interval in _INTERVALS.items():
            value = getattr(self, name)
            if name not in _ALSO_ALLOWED or value != _ALSO_ALLOWED[name]:
                _check_interval(owner, name, value, interval)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidParameterError(
                    f"{owner}: {name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.dropout > 0 and self.solver == "lbfgs":
            raise InvalidParameterError(
                f"{owner}: dropout needs a stochastic solver ('sgd' or 'adam'); lbfgs minimises "
                f"a fixed objective, got dropout={self.dropout!r}"
            )
        self._check_own_parameters(owner)
        if self.early_stopping and self.validation_fraction == 0:
            raise InvalidParameterError(
                f"{owner}: early_stopping needs validation_fraction > 0, got 0"
            )
        if self.dtype is not None and _float_dtype(self.dtype) is None:
            raise InvalidParameterError(
                f"{owner}: dtype must be None, float32 or float64, got {self.dtype!r}"
            )
        if not (
            self.random_state is None
            or isinstance(
                self.random_state, (numbers.Integral, np.random.RandomState, np.random.Generator)
            )
        ):
            raise InvalidParameterError(
                f"{owner}: random_state must be None, an int, a RandomState or a Generator, got "
                f"{self.random_state!r}"
            )
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if np.iterable(sizes) else [sizes]
        for size in sizes:
            _check_interval(owner, "each of hidden_layer_sizes", size, _SIZE)
        return [int(size) for size in sizes]

    # ---- the network ------------------------------------------------------------------------
    def _initialize(
        self, units: list[int], dtype: np.dtype, generator: np.random.Generator
    ) -> None:
        """Build the network with sklearn's initialisation and reset the training record."""
        # Glorot uniform for weights and biases alike, with sklearn's factor 2 for logistic units.
        factor = 2.0 if self.activation in ("logistic", "sigmoid") else 6.0
        hidden = _hidden_module(self.activation)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(units)):
            linear = nn.Linear(fan_in, fan_out, dtype=dtype, rng=generator)
            bound = math.sqrt(factor / (fan_in + fan_out))
            init.uniform_(linear.weight, -bound, bound, generator)
            init.uniform_(linear.bias, -bound, bound, generator)
            layers.append(linear)
            if i < len(units) - 2:
                layers += [hidden()] if hidden is not None else []
                layers += [nn.Dropout(self.dropout, generator)] if self.dropout > 0 else []
        self._model = nn.Sequential(*layers)
        self.n_layers_ = len(units)
        self.n_outputs_ = units[-1]
        self.n_iter_, self.t_ = 0, 0
        for name in (
            "_optimizer",
            "loss_curve_",
            "best_loss_",
            "validation_scores_",
            "best_validation_score_",
            "_best_state",
            "_no_improvement_count",
        ):
            self.__dict__.pop(name, None)

    def _make_optimizer(self) -> optim.Optimizer:
        # Two groups: sklearn's L2 penalty decays the weights but not the biases (see _batch_loss).
        groups = [
            {"params": [layer.weight for layer in self._linears()]},
            {"params": [layer.bias for layer in self._linears()], "weight_decay": 0.0},
        ]
        if self.solver == "adam":
            return optim.Adam(
                groups,
                lr=self.learning_rate_init,
                betas=(self.beta_1, self.beta_2),
                eps=self.epsilon,
            )
        momentum = float(self.momentum)
        return optim.SGD(
            groups,
            lr=self.learning_rate_init,
            momentum=momentum,
            nesterov=bool(self.nesterovs_momentum) and momentum > 0,
        )

    def _squared_weights(self) -> float:
        return sum(
            float(np.vdot(layer.weight.data, layer.weight.data)) for layer in self._linears()
        )

    def _batch_loss(self, output: Tensor, target: np.ndarray, weights: Any) -> Tensor:
        """The data loss of one mini-batch; sklearn's objective adds alpha/(2·n)·Σ‖W‖² to it, where
        n is the batch's size, or the sum of its sample weights.

        The penalty's gradient, alpha/n·W, is the optimizer's weight decay on the weight group (n is
        set here because the last batch of an epoch may be smaller): part of the fused update, not
        a graph of squares and sums. Its value, times the batch's sample count (as sklearn adds
        batch losses up for loss_curve_), is added up outside the graph, where a constant costs
        nothing (see _ConvergenceMonitor).
        """
        count = len(target)
        n = count if weights is None else float(weights.sum())
        self._optimizer.param_groups[0]["weight_decay"] = self.alpha / n
        if self.alpha > 0:
            self._penalty_total += 0.5 * self.alpha * self._squared_weights() * (count / n)
        return self._data_loss(output, target, weights)

    # ---- fitting ----------------------------------------------------------------------------
    def _sample_weights(self, X: Any, y: np.ndarray, sample_weight: Any) -> np.ndarray | None:
        """The weight of each row in the loss (sample_weight, times class_weight for a classifier);
        None where every row weighs 1, which then takes the unweighted path, bit for bit."""
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
        weights = self._weight_rows(y, sample_weight)
        return None if weights is None or (weights == 1).all() else weights

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> _BaseMLP:
        hidden = self._check_parameters()
        first_pass = not hasattr(self, "_model") or (not self.warm_start and not incremental)
        X, y, target, n_outputs = self._validate_input(X, y, incremental, reset=first_pass)
        weights = self._sample_weights(X, y, sample_weight)
        generator = _generator(self.random_state)
        units = [X.shape[1], *hidden, n_outputs]
        if first_pass:
            dtype = X.dtype if self.dtype is None else _float_dtype(self.dtype)
            self._initialize(units, dtype, generator)
        else:
            fitted = [layer.in_features for layer in self._linears()] + [self.n_outputs_]
            if fitted != units:
                raise ValueError(
                    f"{type(self).__name__}: cannot continue training a network of layer sizes "
                    f"{fitted} with data and hidden_layer_sizes that need {units}"
                )
        self._set_dropout(generator)
        if weights is not None and not weights.all():
            # A row of weight 0 adds nothing to any loss or gradient: it is left out, so that it
            # does not change the batches either (as if it had been removed from the data).
            kept = weights != 0
            X, y, target, weights = X[kept], y[kept], target[kept], weights[kept]
        dtype = self._model.dtype
        X = self._in_precision(X, dtype)
        weights = None if weights is None else weights.astype(dtype)
        if self.out_activation_ != "softmax":  # softmax targets stay class indices
            target = target.astype(dtype, copy=False)
        if self.solver == "lbfgs":
            fit_lbfgs(self, *self._network(X), target, weights)
        else:
            self._fit_stochastic(X, y, target, weights, generator, incremental)
        return self

    def _set_dropout(self, generator: np.random.Generator) -> None:
        """Dropout draws its masks from this fit's generator (randomness is explicit)."""
        layers = [layer for layer in self._model if isinstance(layer, nn.Dropout)]
        if self.dropout > 0 and not layers:
            raise ValueError(
                f"{type(self).__name__}: cannot continue training a network fitted without "
                "dropout with dropout > 0; fit it anew (warm_start=False)"
            )
        for layer in layers:
            layer.p, layer.rng = float(self.dropout), generator

    @staticmethod
    def _in_precision(X: Any, dtype: np.dtype) -> Any:
        if _sparse.is_sparse(X):
            return _sparse.as_rows(X, dtype)
        with np.errstate(over="ignore"):
            converted = X.astype(dtype, copy=False)
        if converted.dtype != X.dtype and not np.isfinite(converted).all():
            raise ValueError(
                f"X has values too large for dtype={dtype.name!r}; scale the data (e.g. "
                "StandardScaler) or train in float64"
            )
        return converted

    def _network(self, X: Any) -> tuple[nn.Module, Any]:
        """(network, inputs): the model and X itself, or for sparse X the model reading X's rows
        by number (see _sparse.py) and the row numbers."""
        if _sparse.is_sparse(X):
            return _sparse.sparse_network(self._model, X)
        return self._model, X

    def _fit_stochastic(
        self,
        X: Any,
        y: np.ndarray,
        target: np.ndarray,
        weights: np.ndarray | None,
        generator: np.random.Generator,
        incremental: bool,
    ) -> None:
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer()
        if not hasattr(self, "loss_curve_"):  # a new network, or a warm start after lbfgs
            self.loss_curve_, self._no_improvement_count = [], 0
            self._reset_stopping_record()
        elif self.early_stopping != (self.validation_scores_ is not None):  # switched, warm start
            self._reset_stopping_record()
        validation = None
        if self.early_stopping:
            # As sklearn: a stratified split only for single-output (binary) classification.
            stratify = y if isinstance(self, ClassifierMixin) and self.n_outputs_ == 1 else None
            rows, held_out = train_test_split(
                np.arange(X.shape[0]),
                test_size=self.validation_fraction,
                stratify=stratify,
                random_state=int(generator.integers(2**31 - 1)),
            )
            if len(held_out) < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size "
                    "of your dataset."
                )
            validation = (X[held_out], y[held_out], None if weights is None else weights[held_out])
            X, target = X[rows], target[rows]
            weights = None if weights is None else weights[rows]
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going "
                    "to be clipped",
                    stacklevel=4,
                )
            batch_size = min(int(self.batch_size), n)

        self.n_iter_ = 0
        monitor = _ConvergenceMonitor(self, n, validation, incremental)
        self._penalty_total = 0.0  # Σ over the epoch's batches of the L2 term (see _batch_loss)
        epochs = 1 if incremental else self.max_iter
        try:
            if _compiled.compiles(self, X):
                _compiled.fit_compiled(
                    self, X, target, weights, batch_size, generator, epochs, monitor
                )
            else:
                self._fit_eagerly(X, target, weights, batch_size, generator, epochs, monitor)
        except NonFiniteError as error:
            if not self.early_stopping:
                raise ValueError(NON_FINITE_WEIGHTS) from error
            # As sklearn: a diverging run with early stopping records the epoch's non-finite loss
            # and score and ends with the best weights. (sklearn trains on with NaN weights until
            # n_iter_no_change runs out; nothing can improve after NaN, so this stops at once.)
            self.n_iter_ += 1
            self.t_ += n
            self.loss_ = math.nan
            self.loss_curve_.append(self.loss_)
            self.validation_scores_.append(math.nan)
        if self.early_stopping:
            self._model.load_state_dict(self._best_state)

    def _fit_eagerly(
        self,
        X: Any,
        target: np.ndarray,
        weights: np.ndarray | None,
        batch_size: int,
        generator: np.random.Generator,
        epochs: int,
        monitor: _ConvergenceMonitor,
    ) -> None:
        """The stochastic solvers through chainrule.fit, stepping eagerly: for sparse X (read by
        row numbers, see _sparse.py) and losses a compiled step cannot run."""

        def batch_loss(output: Tensor, rows: np.ndarray) -> Tensor:
            # The loop hands over row numbers: targets and weights are looked up here.
            return self._batch_loss(
                output, target[rows], None if weights is None else weights[rows]
            )

        network, inputs = self._network(X)
        train_model(
            network,
            inputs,
            np.arange(X.shape[0]),
            loss=batch_loss,
            optimizer=self._optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=self.shuffle,
            classification=False,
            callbacks=[monitor],
            progress=False,
            rng=generator,
        )

    def _reset_stopping_record(self) -> None:
        """sklearn's attributes: best_loss_ watches the training loss; with early stopping it is
        None and validation_scores_ / best_validation_score_ watch the held-out score instead."""
        watch_validation = self.early_stopping
        self.best_loss_ = None if watch_validation else np.inf
        self.validation_scores_ = [] if watch_validation else None
        self.best_validation_score_ = -np.inf if watch_validation else None
        if watch_validation:
            self._best_state = self._model.state_dict()

    def _count_no_improvement(self, validation: tuple | None) -> None:
        """sklearn's rule: an epoch counts as no improvement unless it beats the best by tol."""
        if validation is not None:
            score = self._validation_score(*validation)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self._model.state_dict()
        else:
            loss = self.loss_curve_[-1]
            improved = loss <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1

    def _validation_score(self, X: Any, y: np.ndarray, weights: np.ndarray | None) -> float:
        """The held-out score (weighted as the loss is); NaN where the network's outputs are not
        finite, as sklearn's."""
        outputs = self._outputs(X, check_input=False)
        if not np.isfinite(outputs).all():
            return math.nan
        return float(self._score_outputs(outputs, y, weights))

    # ---- prediction -------------------------------------------------------------------------
    def _outputs(self, X: Any, check_input: bool = True) -> np.ndarray:
        """The network's raw outputs (logits for a classifier), one row per sample."""
        check_is_fitted(self)
        if check_input:
            X = validate_data(
                self, X, reset=False, accept_sparse=_SPARSE_FORMATS, dtype=(np.float64, np.float32)
            )
        dtype = self._model.dtype
        if _sparse.is_sparse(X):
            outputs = forward(*self._network(_sparse.as_rows(X, dtype)))
        else:
            X = np.asarray(X)
            outputs = forward(self._model, X.astype(dtype, copy=False))
        # In the caller's precision (or the network's, if wider): float64 data gets float64 back.
        return outputs.astype(np.promote_types(X.dtype, outputs.dtype), copy=False)

    def _stochastic(self) -> bool:
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                "stochastic."
            )
        return True

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _BaseMLP:
        """Fit the network to X (n_samples, n_features), dense or SciPy sparse, and y; returns
        self. `sample_weight` (n_samples,) weighs each row in the loss: the loss is the weighted
        mean, so a weight of 2 counts a row twice."""
        return self._fit(X, y, sample_weight, incremental=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
