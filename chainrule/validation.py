"""The checks every module shares, so a bad setting reads the same wherever it is given: each
names the owner (`SGD`, `fit`, `Conv2d`, a file), the setting and the value it got.

`error` lets a caller raise its own ValueError subclass (a model file's, the playground's).
Nothing here imports from the rest of chainrule.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_flag",
    "check_int",
    "check_number",
    "float_dtype",
    "is_int",
]


def _subject(owner: str, name: str) -> str:
    """'SGD: lr ' — the start of a message (either part may be empty)."""
    return (f"{owner}: " if owner else "") + (f"{name} " if name else "")


def is_int(value: Any) -> bool:
    """A Python or NumPy integer that is not a bool (JSON's `true` is no layer size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(
    owner: str,
    name: str,
    value: Any,
    low: int | None = None,
    high: int | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """`value` as a Python int within [low, high], or `error` (TypeError for a non-integer when
    `error` is ValueError) such as `fit: epochs must be an integer >= 0, got -1`."""
    if low is not None and high is not None:
        rule = f"an integer from {low} to {high}"
    elif low is not None:
        rule = f"an integer >= {low}"
    elif high is not None:
        rule = f"an integer <= {high}"
    else:
        rule = "an integer"
    if not is_int(value):
        kind = TypeError if error is ValueError else error
        raise kind(f"{_subject(owner, name)}must be {rule}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{_subject(owner, name)}must be {rule}, got {value!r}")
    return int(value)


def check_number(
    owner: str,
    name: str,
    value: Any,
    low: float = 0.0,
    high: float | None = None,
    high_open: bool = False,
    low_open: bool = False,
    error: type[Exception] = ValueError,
) -> float:
    """`value` as a finite Python float in its range, or an error such as
    `SGD: lr must be >= 0, got -1`.

    Python floats (not NumPy scalars) keep float32 arithmetic in float32 under NumPy 2.
    """
    unbounded = low == -math.inf and high in (None, math.inf)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = TypeError if error is ValueError else error
        what = "a finite number" if unbounded else "a number"
        raise kind(f"{_subject(owner, name)}must be {what}, got {value!r}")
    number = float(value)
    left = ">" if low_open else ">="
    if unbounded:
        ok, rule = True, "a finite number"
    elif high is None:
        ok, rule = (number > low if low_open else number >= low), f"{left} {low:g}"
    else:
        above = low < number if low_open else low <= number
        below = number < high if high_open else number <= high
        ok = above and below
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not ok or not math.isfinite(number):
        raise error(f"{_subject(owner, name)}must be {rule}, got {value}")
    return number


def check_flag(owner: str, name: str, value: Any, error: type[Exception] = TypeError) -> bool:
    """`value` as a bool; anything but True/False (1, "yes", None) is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{_subject(owner, name)}must be True or False, got {value!r}")
    return bool(value)


def check_choice(
    owner: str,
    name: str,
    value: Any,
    choices: Collection[str],
    error: type[Exception] = ValueError,
) -> str:
    """`value` if it is one of `choices` (a registry table's names), else
    `unknown loss 'mae'; expected one of mse, half_mse, ...`."""
    if not isinstance(value, str) or value not in choices:
        raise error(
            f"{_subject(owner, '')}unknown {name} {value!r}; expected one of {', '.join(choices)}"
        )
    return value


def float_dtype(value: Any, owner: str = "", error: type[Exception] = ValueError) -> np.dtype:
    """float32 or float64 as a NumPy dtype, from any spelling of them (a string, a type, a
    dtype); anything else is refused: the engine computes in these two precisions only."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype not in (np.float32, np.float64):
        raise error(f"{_subject(owner, 'dtype')}must be float32 or float64, got {value!r}")
    return dtype
