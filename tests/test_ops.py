"""Every differentiable op, checked against PyTorch (values, gradients) and finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr
import chainrule.functional as F
from tests.oracle import assert_matches_torch

TF = torch.nn.functional


def away_from_zero(rng, shape, margin=0.1):
    """Values in ±[margin, 2]: keeps relu/abs/max samples off their kinks."""
    values = rng.uniform(margin, 2.0, shape)
    return values * rng.choice([-1.0, 1.0], shape)


def positive(rng, shape):
    return rng.uniform(0.2, 2.0, shape)


# (name, chainrule function, torch function, input makers). One row per op.
UNARY = [
    ("neg", lambda a: -a, lambda a: -a, away_from_zero),
    ("exp", lambda a: a.exp(), torch.exp, away_from_zero),
    ("log", lambda a: a.log(), torch.log, positive),
    ("sqrt", lambda a: a.sqrt(), torch.sqrt, positive),
    ("abs", lambda a: a.abs(), torch.abs, away_from_zero),
    ("pow2", lambda a: a**2, lambda a: a**2, away_from_zero),
    ("pow_half", lambda a: a**0.5, lambda a: a**0.5, positive),
    ("pow_neg", lambda a: a**-1.5, lambda a: a**-1.5, positive),
    ("rsub", lambda a: 3.0 - a, lambda a: 3.0 - a, away_from_zero),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a, away_from_zero),
    ("clip", lambda a: a.clip(-1.0, 0.5), lambda a: a.clamp(-1.0, 0.5), away_from_zero),
    ("sigmoid", F.sigmoid, torch.sigmoid, away_from_zero),
    ("tanh", F.tanh, torch.tanh, away_from_zero),
    ("relu", F.relu, torch.relu, away_from_zero),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.2), lambda a: TF.leaky_relu(a, 0.2), away_from_zero),
    ("gelu", F.gelu, TF.gelu, away_from_zero),
    (
        "gelu_tanh",
        lambda a: F.gelu(a, "tanh"),
        lambda a: TF.gelu(a, approximate="tanh"),
        away_from_zero,
    ),
    ("softplus", F.softplus, TF.softplus, away_from_zero),
    ("softmax", lambda a: F.softmax(a, axis=-1), lambda a: torch.softmax(a, -1), away_from_zero),
    ("softmax0", lambda a: F.softmax(a, axis=0), lambda a: torch.softmax(a, 0), away_from_zero),
    ("log_softmax", F.log_softmax, lambda a: torch.log_softmax(a, -1), away_from_zero),
    ("sum", lambda a: a.sum(), torch.sum, away_from_zero),
    ("sum_axis", lambda a: a.sum(axis=1), lambda a: a.sum(1), away_from_zero),
    (
        "sum_keep",
        lambda a: a.sum(axis=0, keepdims=True),
        lambda a: a.sum(0, keepdim=True),
        away_from_zero,
    ),
    ("sum_neg_tuple", lambda a: a.sum(axis=(-1, 0)), lambda a: a.sum((-1, 0)), away_from_zero),
    ("mean", lambda a: a.mean(), torch.mean, away_from_zero),
    (
        "mean_axis",
        lambda a: a.mean(axis=-1, keepdims=True),
        lambda a: a.mean(-1, keepdim=True),
        away_from_zero,
    ),
    ("max", lambda a: a.max(), torch.max, away_from_zero),
    ("max_axis", lambda a: a.max(axis=1), lambda a: a.amax(1), away_from_zero),
    (
        "max_keep",
        lambda a: a.max(axis=0, keepdims=True),
        lambda a: a.amax(0, keepdim=True),
        away_from_zero,
    ),
    ("min_axis", lambda a: a.min(axis=1), lambda a: a.amin(1), away_from_zero),
    ("reshape", lambda a: a.reshape(-1), lambda a: a.reshape(-1), away_from_zero),
    ("transpose", lambda a: a.T, lambda a: a.T, away_from_zero),
    ("slice", lambda a: a[1:, ::2], lambda a: a[1:, ::2], away_from_zero),
    ("int_index", lambda a: a[[0, 2, 0]], lambda a: a[[0, 2, 0]], away_from_zero),
    (
        "pair_index",
        lambda a: a[[0, 1, 1], [2, 0, 0]],
        lambda a: a[[0, 1, 1], [2, 0, 0]],
        away_from_zero,
    ),
    ("negative_index", lambda a: a[-1], lambda a: a[-1], away_from_zero),
]


@pytest.mark.parametrize("name, ours, theirs, make", UNARY, ids=[row[0] for row in UNARY])
def test_unary_op_matches_torch(name, ours, theirs, make, rng):
    assert_matches_torch(ours, theirs, make(rng, (3, 4)))


@pytest.mark.parametrize("name, ours, theirs, make", UNARY, ids=[row[0] for row in UNARY])
def test_unary_op_matches_finite_differences(name, ours, theirs, make, rng):
    assert cr.gradcheck(ours, make(rng, (3, 4)))


BINARY = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, away_from_zero),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, away_from_zero),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, away_from_zero),
    ("div", lambda a, b: a / b, lambda a, b: a / b, away_from_zero),
    ("pow", lambda a, b: a**b, lambda a, b: a**b, positive),
    ("maximum", F.maximum, torch.maximum, away_from_zero),
    ("minimum", F.minimum, torch.minimum, away_from_zero),
]


@st.composite
def broadcastable_pair(draw):
    shapes = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)
    )
    return shapes.input_shapes


@pytest.mark.parametrize("name, ours, theirs, make", BINARY, ids=[row[0] for row in BINARY])
@given(shapes=broadcastable_pair(), seed=st.integers(0, 2**16))
def test_binary_op_broadcasts_like_torch(name, ours, theirs, make, shapes, seed):
    rng = np.random.default_rng(seed)
    assert_matches_torch(ours, theirs, make(rng, shapes[0]), make(rng, shapes[1]))


@pytest.mark.parametrize("name, ours, theirs, make", BINARY, ids=[row[0] for row in BINARY])
def test_binary_op_matches_finite_differences(name, ours, theirs, make, rng):
    assert cr.gradcheck(ours, make(rng, (3, 1)), make(rng, (4,)))


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [
        ((3, 4), (4, 5)),
        ((2, 3, 4), (4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((4,), (4,)),
        ((1, 3, 4), (2, 4, 2)),
        ((4,), (2, 4, 3)),
    ],
)
def test_matmul_matches_torch_and_finite_differences(shape_a, shape_b, rng):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    assert_matches_torch(lambda x, y: x @ y, torch.matmul, a, b)
    assert cr.gradcheck(lambda x, y: x @ y, a, b)


def test_linear_matches_torch(rng):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    assert_matches_torch(F.linear, TF.linear, x, w, b)
    assert cr.gradcheck(F.linear, x, w, b)


@pytest.mark.parametrize("rows", [63, 64, 200])  # from 64 rows the bias gradient is a BLAS product
def test_linear_bias_gradient_of_a_large_batch_matches_torch(rows, rng):
    x, w, b = rng.standard_normal((rows, 7)), rng.standard_normal((5, 7)), rng.standard_normal(5)
    assert_matches_torch(F.linear, TF.linear, x, w, b)


def test_linear_with_leading_batch_dimensions_matches_torch(rng):
    x, w, b = rng.standard_normal((2, 5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    assert_matches_torch(F.linear, TF.linear, x, w, b)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack_match_torch(axis, rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    assert_matches_torch(
        lambda x, y: cr.concatenate([x, y], axis), lambda x, y: torch.cat([x, y], axis), a, b
    )
    assert_matches_torch(
        lambda x, y: cr.stack([x, y], axis), lambda x, y: torch.stack([x, y], axis), a, b
    )


def test_where_matches_torch(rng):
    condition = rng.random((3, 4)) > 0.5
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((1, 4))
    assert_matches_torch(
        lambda x, y: cr.where(condition, x, y),
        lambda x, y: torch.where(torch.tensor(condition), x, y),
        a,
        b,
    )


def test_transpose_with_axes_matches_torch(rng):
    assert_matches_torch(
        lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1), rng.standard_normal((2, 3, 4))
    )


def test_composite_expression_matches_torch(rng):
    def expression(x, w, v):
        return ((x @ w).tanh() * v - (x @ w).sigmoid() / 2).sum(axis=0).log_softmax()

    assert_matches_torch(
        expression,
        lambda x, w, v: ((x @ w).tanh() * v - (x @ w).sigmoid() / 2).sum(0).log_softmax(-1),
        rng.standard_normal((4, 3)),
        rng.standard_normal((3, 5)),
        rng.standard_normal(5),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [1e4, -1e4])
@pytest.mark.parametrize(
    "function",
    [F.sigmoid, F.softplus, F.softmax, F.log_softmax],
    ids=["sigmoid", "softplus", "softmax", "log_softmax"],
)
def test_stable_functions_are_exact_and_finite_at_extreme_inputs(function, value, dtype):
    x = cr.tensor(np.array([value, 0.0, -value / 2], dtype=dtype), requires_grad=True)
    out = function(x)
    expected = {
        F.sigmoid: torch.sigmoid,
        F.softplus: TF.softplus,
        F.softmax: lambda t: torch.softmax(t, -1),
        F.log_softmax: lambda t: torch.log_softmax(t, -1),
    }[function](torch.tensor(x.data.astype(np.float64)))
    assert np.all(np.isfinite(out.data))
    assert out.dtype == dtype
    np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-6)
    out.backward(np.ones_like(out.data))
    assert np.all(np.isfinite(x.grad))


def test_float32_stays_float32_through_ops_and_gradients(rng):
    x = cr.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    w = cr.tensor(rng.standard_normal((3, 2)).astype(np.float32), requires_grad=True)
    out = (((x @ w) * 2.5 + 1).sigmoid() ** 2 / 3.0 - 0.5).log_softmax().mean()
    assert out.dtype == np.float32
    out.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
