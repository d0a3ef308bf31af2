"""Reliability, second pass: numbers that would train silently toward nonsense are refused.

(The model-file, data-file, playground and MPI attacks live in their own suites.)
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F


# ---- losses --------------------------------------------------------------------------------------
def test_cross_entropy_refuses_fractional_class_indices():
    with pytest.raises(TypeError, match="fractional values"):
        F.cross_entropy(np.zeros((2, 3), np.float32), np.array([0.5, 1.0]))


def test_cross_entropy_refuses_a_regression_target_passed_as_probabilities():
    # What `chainrule train data.csv --loss cross_entropy` hands the loss for real-valued labels.
    for target in ([[0.3], [0.2]], [[3.7], [0.2]]):
        with pytest.raises(ValueError, match="with fractional values are not class probabilities"):
            F.cross_entropy(np.zeros((2, 1), np.float32), np.array(target))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values from -1 to 3"):
        F.cross_entropy(np.zeros((2, 2), np.float32), np.array([[3.0, 0.0], [0.0, -1.0]]))


def test_cross_entropy_still_takes_soft_labels():
    loss = F.cross_entropy(np.zeros((1, 2), np.float32), np.array([[0.25, 0.75]], np.float32))
    assert loss.item() == pytest.approx(np.log(2))


@pytest.mark.parametrize("loss", [F.binary_cross_entropy, F.binary_cross_entropy_with_logits])
@pytest.mark.parametrize("bad", [2.0, -1.0, np.nan])
def test_binary_cross_entropy_refuses_targets_outside_the_unit_interval(loss, bad):
    with pytest.raises(ValueError, match=r"targets must be probabilities in \[0, 1\]"):
        loss(np.full((2, 1), 0.5, np.float32), np.array([[1.0], [bad]], np.float32))


# ---- tensors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data", [np.array([1 + 2j]), np.complex64(1 + 1j), np.array([[1j]], np.complex128)]
)
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_complex_input_is_refused_instead_of_losing_its_imaginary_part(data, dtype):
    with pytest.raises(TypeError, match="complex"):
        cr.tensor(data, dtype=dtype)
