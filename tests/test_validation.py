"""The shared checks: each names the owner, the setting and the value, in one wording."""

import numpy as np
import pytest

from chainrule.validation import (
    check_choice,
    check_flag,
    check_int,
    check_number,
    float_dtype,
    is_int,
)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: check_int("fit", "epochs", -1, low=0),
            ValueError,
            "fit: epochs must be an integer >= 0, got -1",
        ),
        (
            lambda: check_int("fit", "epochs", 2.5, low=0),
            TypeError,
            "fit: epochs must be an integer >= 0, got 2.5",
        ),
        (
            lambda: check_int("", "size", True, 1, 9),
            TypeError,
            "size must be an integer from 1 to 9, got True",
        ),
        (lambda: check_number("SGD", "lr", -1), ValueError, "SGD: lr must be >= 0, got -1"),
        (
            lambda: check_number("SGD", "lr", float("nan")),
            ValueError,
            "SGD: lr must be >= 0, got nan",
        ),
        (
            lambda: check_number("x", "p", 1.0, 0, 1, high_open=True),
            ValueError,
            "x: p must be in [0, 1), got 1.0",
        ),
        (lambda: check_number("x", "lr", 0, low_open=True), ValueError, "x: lr must be > 0, got 0"),
        (lambda: check_number("x", "lr", "0.1"), TypeError, "x: lr must be a number, got '0.1'"),
        (
            lambda: check_number("", "s", np.inf, -np.inf, np.inf),
            ValueError,
            "s must be a finite number, got inf",
        ),
        (
            lambda: check_flag("SGD", "nesterov", 1),
            TypeError,
            "SGD: nesterov must be True or False, got 1",
        ),
        (
            lambda: check_choice("", "loss", "mae", ("mse", "bce")),
            ValueError,
            "unknown loss 'mae'; expected one of mse, bce",
        ),
        (
            lambda: float_dtype("int32", "Linear"),
            ValueError,
            "Linear: dtype must be float32 or float64, got 'int32'",
        ),
    ],
)
def test_each_check_names_the_setting_and_the_value(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_a_caller_chooses_the_error_class():
    class ConfigError(ValueError):
        pass

    with pytest.raises(ConfigError, match="lr must be in"):
        check_number("", "lr", 20.0, 1e-5, 10.0, error=ConfigError)
    with pytest.raises(ConfigError, match="must be an integer"):
        check_int("", "seed", "0", 0, 9, error=ConfigError)


def test_accepted_values_come_back_as_plain_python_values():
    assert type(check_int("", "n", np.int64(3))) is int
    assert type(check_number("", "lr", np.float32(0.5))) is float
    assert check_flag("", "f", np.bool_(True)) is True
    assert float_dtype("float64") == np.float64 and float_dtype(np.float32) == np.float32
    assert is_int(np.int32(1)) and not is_int(True) and not is_int(1.0)
