"""Hyper-parameter checks and conversions for the sklearn estimators: sklearn's constraints,
InvalidParameterError, the dtype and random_state parameters. Nothing here builds or trains.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from chainrule.random import get_rng
from chainrule.registry import ACTIVATIONS, HIDDEN_ACTIVATIONS


class InvalidParameterError(ValueError, TypeError):
    """A hyper-parameter of the wrong type or out of range (caught as either, like sklearn's)."""


# sklearn's four activation names, as the registry names them; every other hidden activation of
# the registry (gelu, leaky_relu, ...) is offered under its own name.
_SKLEARN_ACTIVATIONS = {
    "identity": "identity",
    "logistic": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
}
_ACTIVATIONS = {
    **_SKLEARN_ACTIVATIONS,
    **{name: name for name in HIDDEN_ACTIVATIONS if name not in _SKLEARN_ACTIVATIONS},
}
_CHOICES = {
    "activation": tuple(_ACTIVATIONS),
    "solver": ("lbfgs", "sgd", "adam"),
    "learning_rate": ("constant", "invscaling", "adaptive"),
}
_FLAGS = ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping")
# sklearn's constraints: name -> (number type, low, high, which ends belong), and the one other
# value a few of them may take.
_REAL, _INT = numbers.Real, numbers.Integral
_INTERVALS = {
    "alpha": (_REAL, 0, math.inf, "left"),
    "learning_rate_init": (_REAL, 0, math.inf, "neither"),
    "power_t": (_REAL, 0, math.inf, "left"),
    "max_iter": (_INT, 1, math.inf, "left"),
    "tol": (_REAL, 0, math.inf, "left"),
    "momentum": (_REAL, 0, 1, "both"),
    "validation_fraction": (_REAL, 0, 1, "left"),
    "beta_1": (_REAL, 0, 1, "left"),
    "beta_2": (_REAL, 0, 1, "left"),
    "epsilon": (_REAL, 0, math.inf, "neither"),
    "max_fun": (_INT, 1, math.inf, "left"),
    "batch_size": (_INT, 1, math.inf, "left"),
    "n_iter_no_change": (_INT, 1, math.inf, "left"),
    "dropout": (_REAL, 0, 1, "left"),
}
_ALSO_ALLOWED = {"batch_size": "auto", "n_iter_no_change": np.inf}
_SIZE = (_INT, 1, math.inf, "left")


def _check_interval(owner: str, name: str, value: Any, interval: tuple) -> None:
    kind, low, high, closed = interval
    ok = isinstance(value, kind) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (low <= value if closed in ("left", "both") else low < value)
    ok = ok and (value <= high if closed in ("right", "both") else value < high)
    if not ok:
        text = f"{'[' if closed in ('left', 'both') else '('}{low:g}, {high:g}" + (
            "]" if closed in ("right", "both") else ")"
        )
        what = "an integer" if kind is _INT else "a number"
        raise InvalidParameterError(f"{owner}: {name} must be {what} in {text}, got {value!r}")


def _hidden_module(activation: str) -> type | None:
    """The module class of a hidden activation, by sklearn's or the registry's name (None for the
    identity, which needs no module)."""
    name = _ACTIVATIONS[activation]
    return None if name == "identity" else ACTIVATIONS[name].module


def _check_class_weight(owner: str, class_weight: Any) -> None:
    if not (class_weight is None or class_weight == "balanced" or isinstance(class_weight, dict)):
        raise InvalidParameterError(
            f"{owner}: class_weight must be None, 'balanced' or a dict {{class: weight}}, got "
            f"{class_weight!r}"
        )


def _float_dtype(dtype: Any) -> np.dtype | None:
    """float32 or float64 as a NumPy dtype, from any spelling of them; None for anything else."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return None
    return dtype if dtype in (np.float32, np.float64) else None


def _generator(random_state: Any) -> np.random.Generator:
    """A Generator for one fit. As in sklearn, an int gives the same run every time and a
    RandomState instance advances with each fit; None draws from chainrule's default generator
    (seeded by `chainrule.manual_seed`), never from the global np.random state."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    return get_rng(random_state)
