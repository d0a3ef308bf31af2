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
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted, validate_data

from chainrule import nn, optim
from chainrule.nn import init
from chainrule.sklearn._convergence import _ConvergenceMonitor
from chainrule.sklearn._validation import (
    _ACTIVATIONS,
    _ALSO_ALLOWED,
    _CHOICES,
    _FLAGS,
    _INTERVALS,
    _SIZE,
    InvalidParameterError,
    _check_interval,
    _float_dtype,
    _generator,
)
from chainrule.tensor import Tensor
from chainrule.train import fit as train_model
from chainrule.train import predict as forward

_CHUNK_ELEMENTS = 2**16  # lbfgs: activation elements per chunk of rows (see _full_batch_loss)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: validation, the network, both solvers.

    Fitted state beyond sklearn's attributes: `_model` (the nn.Sequential that `coefs_` and
    `intercepts_` view) and `_optimizer` (kept so that partial_fit continues its moments).
    """

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

    @property
    def intercepts_(self) -> list[np.ndarray]:
        return [layer.bias.data for layer in self._linears()]

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
        factor = 2.0 if self.activation == "logistic" else 6.0
        hidden = _ACTIVATIONS[self.activation]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(units)):
            linear = nn.Linear(fan_in, fan_out, dtype=dtype, rng=generator)
            bound = math.sqrt(factor / (fan_in + fan_out))
            init.uniform_(linear.weight, -bound, bound, generator)
            init.uniform_(linear.bias, -bound, bound, generator)
            layers.append(linear)
            if hidden is not None and i < len(units) - 2:
                layers.append(hidden())
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

    def _batch_loss(self, output: Tensor, target: np.ndarray) -> Tensor:
        """The data loss of one mini-batch; sklearn's objective adds alpha/(2·n)·Σ‖W‖² to it.

        The penalty's gradient, alpha/n·W, is the optimizer's weight decay on the weight group (n is
        set here because the last batch of an epoch may be smaller): part of the fused update, not
        a graph of squares and sums. Its value, times the n samples it is averaged over, is added
        up for loss_curve_ (see _ConvergenceMonitor), outside the graph, where a constant costs
        nothing.
        """
        n = len(target)
        self._optimizer.param_groups[0]["weight_decay"] = self.alpha / n
        if self.alpha > 0:
            self._penalty_total += 0.5 * self.alpha * self._squared_weights()
        return self._data_loss(output, target)

    def _full_batch_loss(self, X: np.ndarray, target: np.ndarray) -> float:
        """The same objective over all of X, for lbfgs; accumulates its gradient in `.grad`.

        The data term is summed over chunks of rows (each chunk's mean weighted by its share), so
        that no activation outgrows a few hundred kilobytes: larger temporaries are fresh memory
        from the OS on every call, and that made a full-batch step 2.4× slower on digits. Each
        chunk's share seeds its backward pass. The penalty alpha/(2·n)·Σ‖W‖² and its gradient
        alpha/n·W are added directly, outside the graph (lbfgs has no optimizer to apply them
        as weight decay).
        """
        n = len(X)
        widest = max(layer.out_features for layer in self._linears())
        rows = max(64, _CHUNK_ELEMENTS // widest)
        value = 0.0
        for start in range(0, n, rows):
            part = slice(start, min(start + rows, n))
            share = (part.stop - start) / n
            loss = self._data_loss(self._model(X[part]), target[part])
            loss.backward(share)
            value += float(loss.data) * share
        if self.alpha > 0:
            value += 0.5 * self.alpha / n * self._squared_weights()
            for layer in self._linears():
                layer.weight.grad += (self.alpha / n) * layer.weight.data
        return value

    # ---- fitting ----------------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, incremental: bool) -> _BaseMLP:
        hidden = self._check_parameters()
        first_pass = not hasattr(self, "_model") or (not self.warm_start and not incremental)
        X, y, target, n_outputs = self._validate_input(X, y, incremental, reset=first_pass)
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
        dtype = self._model.dtype
        X = X.astype(dtype, copy=False)
        if self.out_activation_ != "softmax":  # softmax targets stay class indices
            target = target.astype(dtype, copy=False)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, target)
        else:
            self._fit_stochastic(X, y, target, generator, incremental)
        return self

    def _fit_stochastic(
        self,
        X: np.ndarray,
        y: np.ndarray,
        target: np.ndarray,
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
                np.arange(len(X)),
                test_size=self.validation_fraction,
                stratify=stratify,
                random_state=int(generator.integers(2**31 - 1)),
            )
            if len(held_out) < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size "
                    "of your dataset."
                )
            validation = (X[held_out], y[held_out])
            X, target = X[rows], target[rows]
        n = len(X)
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going "
                    "to be clipped"
                )
            batch_size = min(int(self.batch_size), n)
        self.n_iter_ = 0
        monitor = _ConvergenceMonitor(self, n, validation, incremental)
        self._penalty_total = 0.0  # Σ over the epoch's batches of alpha/2·Σ‖W‖² (see _batch_loss)
        train_model(
            self._model,
            X,
            target,
            loss=self._batch_loss,
            optimizer=self._optimizer,
            epochs=1 if incremental else self.max_iter,
            batch_size=batch_size,
            shuffle=self.shuffle,
            classification=False,
            callbacks=[monitor],
            progress=False,
            rng=generator,
        )
        if self.early_stopping:
            self._model.load_state_dict(self._best_state)

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
            score = self._score_arrays(*validation)
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

    def _fit_lbfgs(self, X: np.ndarray, target: np.ndarray) -> None:
        """Minimise the full-batch objective with L-BFGS-B over all parameters as one vector."""
        from scipy.optimize import minimize  # scipy comes with scikit-learn; only lbfgs needs it

        parameters = list(self._model.parameters())
        splits = np.cumsum([p.data.size for p in parameters])[:-1]

        def load(theta: np.ndarray) -> None:
            for p, chunk in zip(parameters, np.split(theta, splits)):
                p.data[...] = chunk.reshape(p.data.shape)

        losses = []

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            load(theta)
            self._model.zero_grad()
            losses.append(self._full_batch_loss(X, target))
            return losses[-1], np.concatenate([p.grad.ravel() for p in parameters]).astype(
                np.float64
            )

        def report(theta: np.ndarray) -> None:
            iterations.append(losses[-1])
            print(f"Iteration {len(iterations)}, loss = {losses[-1]:.8f}")

        iterations: list[float] = []
        theta = np.concatenate([p.data.ravel() for p in parameters]).astype(np.float64)
        result = minimize(
            objective,
            theta,
            method="L-BFGS-B",
            jac=True,
            callback=report if self.verbose else None,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        load(result.x)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if result.status != 0:
            message = (
                result.message.decode() if isinstance(result.message, bytes) else result.message
            )
            warnings.warn(
                f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}): "
                f"{message}. Increase max_iter or max_fun, or scale the data (e.g. StandardScaler).",
                ConvergenceWarning,
            )
        if not all(np.isfinite(p.data).all() for p in parameters):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            )

    # ---- prediction -------------------------------------------------------------------------
    def _outputs(self, X: Any, check_input: bool = True) -> np.ndarray:
        """The network's raw outputs (logits for a classifier), one row per sample."""
        check_is_fitted(self)
        if check_input:
            X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        X = np.asarray(X)
        outputs = forward(self._model, X.astype(self._model.dtype, copy=False))
        # In the caller's precision (or the network's, if wider): float64 data gets float64 back.
        return outputs.astype(np.promote_types(X.dtype, outputs.dtype), copy=False)

    def _stochastic(self) -> bool:
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                "stochastic."
            )
        return True

    def fit(self, X: Any, y: Any) -> _BaseMLP:
        """Fit the network to X (n_samples, n_features) and y; returns self."""
        return self._fit(X, y, incremental=False)
