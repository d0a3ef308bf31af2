"""MLPClassifier: label encoding, class weights, the cross-entropy that fits the target,
probabilities. The network and the solvers it trains with live in _base.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d, validate_data

from chainrule import functional as F
from chainrule.sklearn._base import _SPARSE_FORMATS, _BaseMLP
from chainrule.sklearn._validation import _check_class_weight
from chainrule.tensor import Tensor


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with scikit-learn's parameters, trained by chainrule.

    Softmax cross-entropy for multi-class targets; one sigmoid per column (binary cross-entropy) for
    binary targets and for multi-label indicator matrices.

    `dtype` (chainrule's own parameter) is the precision the network trains in: None (the
    default: the input's precision, as sklearn does: float64 data gives float64 `coefs_`),
    'float32' (the speed option: half the memory traffic of float64, about 1.5× the speed, and the
    same accuracy for these networks) or 'float64'. Predictions come back in the input's
    precision, or the network's where that is wider.

        clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0).fit(X_train, y_train)
        clf.predict_proba(X_test)  # (n_samples, n_classes), rows sum to 1

    Beyond sklearn's MLPClassifier: `class_weight` ('balanced' or {class: weight}, as in
    LogisticRegression; multiplies sample_weight), `dropout` (the rate of a Dropout after each
    hidden activation, sgd and adam only), the registry's other hidden activations ('gelu',
    'leaky_relu', 'softplus', 'sigmoid' as well as sklearn's four), and `dtype`.
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
        class_weight: Any = None,
        dropout: float = 0.0,
        dtype: Any = None,
    ) -> None:
        self.class_weight = class_weight
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
        _check_class_weight(owner, self.class_weight)

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE_FORMATS,
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and set(classes) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the previous "
                    f"call to fit. Previously got {self.classes_}, `y` has {classes}"
                )
            if len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                    f"'y' has {classes}."
                )
        encoded = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
            return X, y, encoded.argmax(axis=1), encoded.shape[1]
        self.out_activation_ = "logistic"
        return X, y, encoded, encoded.shape[1]

    def _weight_rows(self, y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray | None:
        """sample_weight times each row's class weight (None: every row weighs 1)."""
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError(
                "class_weight is not supported for multi-label targets; pass sample_weight"
            )
        if isinstance(self.class_weight, dict):
            unknown = [label for label in self.class_weight if label not in set(self.classes_)]
            if unknown:
                raise ValueError(
                    f"class_weight names classes {unknown} that are not in classes_ "
                    f"{list(self.classes_)}"
                )
            per_class = np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])
        else:  # "balanced": n_samples / (n_classes · count), over the classes y holds
            present = np.unique(y)
            balanced = compute_class_weight("balanced", classes=present, y=y)
            per_class = np.ones(len(self.classes_))
            per_class[np.searchsorted(self.classes_, present)] = balanced
        weights = per_class[np.searchsorted(self.classes_, y)]
        return weights if sample_weight is None else weights * sample_weight

    def _data_loss(self, logits: Tensor, target: np.ndarray, weights: Any = None) -> Tensor:
        """Cross-entropy, the mean over samples, or the weighted mean Σ w·L / Σ w."""
        if weights is None:
            if self.out_activation_ == "softmax":
                return F.cross_entropy(logits, target)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            # sklearn sums the per-column mean losses of a multi-label target.
            return loss * target.shape[1] if target.shape[1] > 1 else loss
        if self.out_activation_ == "softmax":
            losses = F.cross_entropy(logits, target, reduction="none")
        else:
            losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            losses = losses.sum(axis=1)
        # weights.sum(), not float(...): in a compiled step the weights are a Tensor of the batch.
        return (losses * weights).sum() / weights.sum()

    def _loss_compiles(self) -> bool:
        """Whether _data_loss is chainrule ops on its arguments only (a compiled step runs it)."""
        return True

    def _score_outputs(self, logits: np.ndarray, y: np.ndarray, weights: Any) -> float:
        return accuracy_score(y, self._labels(logits), sample_weight=weights)

    def _labels(self, logits: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(self._probabilities(logits))

    def _two_class_logits(self, logits: np.ndarray) -> np.ndarray:
        """One sigmoid output z as the softmax logits [0, z]: softmax gives [1 − σ(z), σ(z)] with
        neither side computed as 1 minus the other (which rounds σ(−z) to 0 too early)."""
        return np.hstack([np.zeros_like(logits), logits])

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities as the fitted target has them: one column per class (for a binary fit,
        one per class too) or one independent column per label (multi-label)."""
        if self.out_activation_ == "softmax":
            return F.softmax(logits, axis=1).data
        if self.n_outputs_ == 1:
            return F.softmax(self._two_class_logits(logits), axis=1).data
        return F.sigmoid(logits).data

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (n_samples,), or an indicator matrix for a multi-label fit."""
        return self._labels(self._outputs(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (n_samples, n_classes) in the order of `classes_` (for multi-label: each
        column's probability on its own). Rows sum to 1 except for multi-label."""
        return self._probabilities(self._outputs(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log(predict_proba(X)), computed from the logits: exact where a probability is tiny, and
        -inf (without a warning) exactly where predict_proba rounds to 0."""
        logits = self._outputs(X)
        if self.out_activation_ == "softmax":
            log_probabilities = F.log_softmax(logits, axis=1).data
        elif self.n_outputs_ == 1:
            log_probabilities = F.log_softmax(self._two_class_logits(logits), axis=1).data
        else:
            log_probabilities = -F.softplus(-logits).data  # log σ(z) = −softplus(−z)
        log_probabilities[np.exp(log_probabilities) == 0] = -np.inf
        return log_probabilities

    @available_if(_BaseMLP._stochastic)
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> MLPClassifier:
        """One epoch over (X, y), optionally weighted. The first call needs `classes`, every label
        that y may hold."""
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: one batch cannot tell "
                "the classes' frequencies. Use compute_class_weight('balanced', classes=classes, "
                "y=y) on enough of the training targets and pass the weights as a dict."
            )
        if classes is not None:
            classes = unique_labels(classes)
            if hasattr(self, "classes_") and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                    f"{self.classes_!r}"
                )
            if not hasattr(self, "classes_"):
                multilabel = type_of_target(y).startswith("multilabel")
                self._label_binarizer = LabelBinarizer().fit(y if multilabel else classes)
                self.classes_ = self._label_binarizer.classes_
        elif not hasattr(self, "classes_"):
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
