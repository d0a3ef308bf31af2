"""Every loss, as a module and as a function, against PyTorch, finite differences and extremes."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr
import chainrule.functional as F
from chainrule import nn
from tests.oracle import assert_matches_torch

TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]
CLASS_LOSS_IDS = ["cross_entropy", "nll"]


# ---- inputs: (prediction, target) for a batch of 5 rows and 4 columns ----------------------------
def regression(rng, shape=(5, 4)):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def probabilities(rng, shape=(5, 4)):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0.0, 1.0, shape)


def logits_and_soft_labels(rng, shape=(5, 4)):
    return rng.standard_normal(shape) * 3, rng.uniform(0.0, 1.0, shape)


def logits_and_classes(rng, shape=(5, 4)):
    return rng.standard_normal(shape) * 3, rng.integers(0, shape[1], shape[0])


def logits_and_class_probabilities(rng, shape=(5, 4)):
    weights = np.exp(rng.standard_normal(shape))
    return rng.standard_normal(shape) * 3, weights / weights.sum(axis=1, keepdims=True)


def log_probabilities_and_classes(rng, shape=(5, 4)):
    logits, classes = logits_and_classes(rng, shape)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), classes


def huber_row(delta):
    return (
        f"huber_delta_{delta}",
        lambda r="mean": nn.HuberLoss(r, delta=delta),
        lambda p, t, r: F.huber_loss(p, t, r, delta=delta),
        lambda p, t, r: TF.huber_loss(p, t, reduction=r, delta=delta),
        regression,
    )


# (name, module(reduction), functional(p, t, reduction), torch functional(p, t, reduction), inputs).
LOSSES = [
    ("mse", nn.MSELoss, F.mse_loss, lambda p, t, r: TF.mse_loss(p, t, reduction=r), regression),
    *[huber_row(delta) for delta in (0.5, 1.0, 2.5)],
    (
        "bce",
        nn.BCELoss,
        F.binary_cross_entropy,
        lambda p, t, r: TF.binary_cross_entropy(p, t, reduction=r),
        probabilities,
    ),
    (
        "bce_with_logits",
        nn.BCEWithLogitsLoss,
        F.binary_cross_entropy_with_logits,
        lambda p, t, r: TF.binary_cross_entropy_with_logits(p, t, reduction=r),
        logits_and_soft_labels,
    ),
    (
        "cross_entropy_indices",
        nn.CrossEntropyLoss,
        F.cross_entropy,
        lambda p, t, r: TF.cross_entropy(p, t, reduction=r),
        logits_and_classes,
    ),
    (
        "cross_entropy_probabilities",
        nn.CrossEntropyLoss,
        F.cross_entropy,
        lambda p, t, r: TF.cross_entropy(p, t, reduction=r),
        logits_and_class_probabilities,
    ),
    (
        "nll",
        nn.NLLLoss,
        F.nll_loss,
        lambda p, t, r: TF.nll_loss(p, t, reduction=r),
        log_probabilities_and_classes,
    ),
]
LOSS_IDS = [row[0] for row in LOSSES]
# Losses whose target is a float array that takes part in the gradient (as in torch).
DIFFERENTIABLE_TARGET = [
    "mse",
    "huber_delta_0.5",
    "huber_delta_1.0",
    "huber_delta_2.5",
    "bce",
    "bce_with_logits",
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, module, functional, theirs, make", LOSSES, ids=LOSS_IDS)
def test_loss_module_matches_torch(name, module, functional, theirs, make, reduction, rng):
    prediction, target = make(rng)
    loss = module(reduction)
    assert_matches_torch(
        lambda p: loss(p, target),
        lambda p: theirs(p, torch.as_tensor(target), reduction),
        prediction,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, module, functional, theirs, make", LOSSES, ids=LOSS_IDS)
def test_functional_loss_matches_torch(name, module, functional, theirs, make, reduction, rng):
    prediction, target = make(rng)
    assert_matches_torch(
        lambda p: functional(p, target, reduction),
        lambda p: theirs(p, torch.as_tensor(target), reduction),
        prediction,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, module, functional, theirs, make", LOSSES, ids=LOSS_IDS)
def test_loss_matches_finite_differences(name, module, functional, theirs, make, reduction, rng):
    prediction, target = make(rng)
    loss = module(reduction)
    assert cr.gradcheck(lambda p: loss(p, target), prediction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, module, functional, theirs, make",
    [row for row in LOSSES if row[0] in DIFFERENTIABLE_TARGET],
    ids=DIFFERENTIABLE_TARGET,
)
def test_loss_target_gradient_matches_torch_and_finite_differences(
    name, module, functional, theirs, make, reduction, rng
):
    prediction, target = make(rng)
    assert_matches_torch(
        lambda p, t: functional(p, t, reduction),
        lambda p, t: theirs(p, t, reduction),
        prediction,
        target,
    )
    assert cr.gradcheck(lambda p, t: functional(p, t, reduction), prediction, target)


@pytest.mark.parametrize(
    "as_target", [np.asarray, lambda t: t.tolist(), cr.tensor], ids=["numpy", "list", "tensor"]
)
@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.NLLLoss()], ids=CLASS_LOSS_IDS)
def test_class_index_targets_may_be_an_array_a_list_or_a_tensor(loss, as_target, rng):
    logits, classes = log_probabilities_and_classes(rng)
    theirs = {nn.CrossEntropyLoss: TF.cross_entropy, nn.NLLLoss: TF.nll_loss}[type(loss)]
    assert_matches_torch(
        lambda p: loss(p, as_target(classes)), lambda p: theirs(p, torch.tensor(classes)), logits
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, module, functional, theirs, make", LOSSES, ids=LOSS_IDS)
def test_loss_and_gradient_keep_the_input_dtype(name, module, functional, theirs, make, dtype, rng):
    prediction, target = make(rng)
    x = cr.tensor(prediction.astype(dtype), requires_grad=True)
    out = module()(x, target)
    assert out.dtype == dtype
    out.backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape


# ---- stability at the edges ----------------------------------------------------------------
DTYPES = [np.float32, np.float64]


def assert_finite_and_matches_torch(ours, theirs, x, target, dtype):
    """No warning, finite loss and gradient, equal to torch's float64 result."""
    x_ours = cr.tensor(np.asarray(x, dtype=dtype), requires_grad=True)
    x_theirs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ours(x_ours, target)
        out.backward(np.ones(out.shape))
    float_target = target.dtype.kind == "f"
    expected = theirs(
        x_theirs, torch.as_tensor(target.astype(np.float64) if float_target else target)
    )
    expected.backward(torch.ones(expected.shape, dtype=torch.float64))
    assert out.dtype == dtype and x_ours.grad.dtype == dtype
    assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(x_ours.grad))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(x_ours.grad, x_theirs.grad.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_at_probabilities_zero_and_one_is_finite_and_equals_torch_clamped_value(
    dtype, reduction
):
    # Each log term is clamped at -100 as torch does: a confident wrong answer costs exactly 100.
    probability = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    target = np.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype)
    assert_finite_and_matches_torch(
        nn.BCELoss(reduction),
        lambda p, t: TF.binary_cross_entropy(p, t, reduction=reduction),
        probability,
        target,
        dtype,
    )


def test_bce_of_a_confident_wrong_answer_is_exactly_100():
    loss = nn.BCELoss("none")(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    np.testing.assert_array_equal(loss.data, [100.0, 100.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_at_logits_1e4_is_finite_and_equals_torch(dtype, reduction):
    logits = np.array([1e4, -1e4, 1e4, -1e4, 0.0])
    target = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    assert_finite_and_matches_torch(
        nn.BCEWithLogitsLoss(reduction),
        lambda p, t: TF.binary_cross_entropy_with_logits(p, t, reduction=reduction),
        logits,
        target,
        dtype,
    )


EXTREME_LOGITS = np.array(
    [[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]]
)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "target", [np.array([0, 0, 2, 1]), np.eye(3)[[0, 2, 1, 1]]], ids=["indices", "probabilities"]
)
def test_cross_entropy_at_logits_1e4_is_finite_and_equals_torch(target, dtype, reduction):
    if target.dtype.kind == "f":
        target = target.astype(dtype)
    assert_finite_and_matches_torch(
        nn.CrossEntropyLoss(reduction),
        lambda p, t: TF.cross_entropy(p, t, reduction=reduction),
        EXTREME_LOGITS,
        target,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_of_log_softmax_at_logits_1e4_is_finite_and_equals_torch(dtype):
    def ours(x, target):
        return nn.NLLLoss()(F.log_softmax(x, axis=1), target)

    def theirs(x, target):
        return TF.nll_loss(torch.log_softmax(x, 1), target)

    assert_finite_and_matches_torch(ours, theirs, EXTREME_LOGITS, np.array([0, 0, 2, 1]), dtype)


# ---- properties ----------------------------------------------------------------------------
@st.composite
def extreme_logits_and_classes(draw):
    dtype = draw(st.sampled_from(DTYPES))
    batch, classes = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    elements = st.floats(-1e4, 1e4, width=32)
    logits = draw(hnp.arrays(dtype, (batch, classes), elements=elements))
    labels = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    return logits, labels


def binary_targets(labels, logits):
    """0/1 targets of the logits' shape and dtype, one value per row."""
    return np.broadcast_to(labels[:, None] % 2, logits.shape).astype(logits.dtype)


def finite_loss_and_gradient(loss, logits, target):
    x = cr.tensor(logits, requires_grad=True)
    out = loss(x, target)
    out.backward()
    return np.all(np.isfinite(out.data)) and np.all(np.isfinite(x.grad))


@given(extreme_logits_and_classes())
def test_cross_entropy_is_finite_for_any_logits_up_to_1e4(case):
    logits, labels = case
    assert finite_loss_and_gradient(nn.CrossEntropyLoss(), logits, labels)


@given(extreme_logits_and_classes())
def test_bce_with_logits_is_finite_for_any_logits_up_to_1e4(case):
    logits, labels = case
    assert finite_loss_and_gradient(nn.BCEWithLogitsLoss(), logits, binary_targets(labels, logits))


@given(extreme_logits_and_classes())
def test_bce_of_sigmoid_is_finite_for_any_logits_up_to_1e4(case):
    logits, labels = case
    target = binary_targets(labels, logits)
    assert finite_loss_and_gradient(lambda x, t: nn.BCELoss()(F.sigmoid(x), t), logits, target)


@given(
    shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
    dtype=st.sampled_from(DTYPES),
    row=st.sampled_from(LOSSES),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_loss_gradient_has_the_input_shape_and_dtype(shape, dtype, row, reduction, seed):
    module, make = row[1], row[4]
    prediction, target = make(np.random.default_rng(seed), shape)
    x = cr.tensor(prediction.astype(dtype), requires_grad=True)
    out = module(reduction)(x, target)
    out.backward(np.ones(out.shape, dtype=dtype))
    assert x.grad.shape == x.shape
    assert x.grad.dtype == dtype


@given(extreme_logits_and_classes(), st.sampled_from([0, 1, -1]))
def test_softmax_rows_sum_to_one(case, dim):
    logits, _ = case
    probabilities = nn.Softmax(dim=dim)(logits).data
    tolerance = 1e-5 if logits.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(probabilities.sum(axis=dim), 1.0, rtol=tolerance)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


# ---- bad input -----------------------------------------------------------------------------
LOSS_MODULES = [
    nn.MSELoss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.CrossEntropyLoss,
    nn.NLLLoss,
]
FUNCTIONS = [
    F.mse_loss,
    F.huber_loss,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
    F.cross_entropy,
    F.nll_loss,
]


def assert_lists_the_valid_reductions(error):
    message = str(error.value)
    assert "'avg'" in message
    assert all(reduction in message for reduction in REDUCTIONS)


@pytest.mark.parametrize("module", LOSS_MODULES, ids=lambda m: m.__name__)
def test_loss_module_with_an_unknown_reduction_lists_the_valid_ones(module):
    with pytest.raises(ValueError) as raised:
        module(reduction="avg")
    assert_lists_the_valid_reductions(raised)


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
def test_loss_function_with_an_unknown_reduction_lists_the_valid_ones(function):
    with pytest.raises(ValueError) as raised:
        function(np.full((2, 2), 0.5), np.array([0, 1]), reduction="avg")
    assert_lists_the_valid_reductions(raised)


@pytest.mark.parametrize(
    "loss",
    [nn.CrossEntropyLoss(), nn.NLLLoss()],
    ids=CLASS_LOSS_IDS,
)
@pytest.mark.parametrize("bad_class", [3, -1])
def test_class_index_out_of_range_names_the_range(loss, bad_class):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss(np.zeros((2, 3)), np.array([0, bad_class]))


@pytest.mark.parametrize(
    "loss",
    [nn.CrossEntropyLoss(), nn.NLLLoss()],
    ids=CLASS_LOSS_IDS,
)
def test_class_index_count_must_match_the_batch(loss):
    with pytest.raises(ValueError) as raised:
        loss(np.zeros((5, 3)), np.array([0, 1]))
    assert "5" in str(raised.value) and "2" in str(raised.value)


@pytest.mark.parametrize(
    "module", [nn.MSELoss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss], ids=lambda m: m.__name__
)
def test_elementwise_loss_shape_mismatch_names_both_shapes(module):
    with pytest.raises(ValueError) as raised:
        module()(np.full((3, 4), 0.5), np.zeros((3, 1)))
    assert "(3, 4)" in str(raised.value) and "(3, 1)" in str(raised.value)


def test_cross_entropy_of_a_realistic_batch_matches_torch(rng):
    """200 rows of 10 classes: row maxima and row sums take the fast paths (argmax, BLAS)."""
    logits, classes = logits_and_classes(rng, (200, 10))
    assert_finite_and_matches_torch(
        nn.CrossEntropyLoss(), TF.cross_entropy, logits, classes, np.float64
    )
    # float32 to float32's precision (the target class's gradient, softmax − 1, loses digits to
    # cancellation in any implementation).
    x32 = cr.tensor(logits.astype(np.float32), requires_grad=True)
    x64 = cr.tensor(logits, requires_grad=True)
    for x in (x32, x64):
        F.cross_entropy(x, classes).backward()
    np.testing.assert_allclose(x32.grad, x64.grad, rtol=1e-4, atol=1e-8)


def test_cross_entropy_turns_nan_logits_into_a_nan_loss_as_torch_does():
    logits = np.array([[0.5, np.nan, 1.0], [0.1, 0.2, 0.3]])
    ours = F.cross_entropy(logits, np.array([0, 2]), reduction="none").data
    theirs = TF.cross_entropy(torch.tensor(logits), torch.tensor([0, 2]), reduction="none").numpy()
    assert np.isnan(ours[0]) and np.isnan(theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)


def test_cross_entropy_without_classes_is_a_clear_error():
    with pytest.raises(ValueError, match=r"at least one class, got shape \(3, 0\)"):
        F.cross_entropy(np.zeros((3, 0)), np.zeros(3, dtype=np.int64))


def test_cross_entropy_probability_target_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as raised:
        nn.CrossEntropyLoss()(np.zeros((4, 3)), np.full((4, 2), 0.5))
    assert "(4, 2)" in str(raised.value) and "(4, 3)" in str(raised.value)


def test_bce_rejects_values_outside_zero_to_one_and_suggests_logits():
    with pytest.raises(ValueError, match="with_logits"):
        nn.BCELoss()(np.array([0.5, 1.5]), np.array([0.0, 1.0]))


@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_huber_rejects_a_non_positive_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        nn.HuberLoss(delta=delta)


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "uint64"])
@pytest.mark.parametrize("labels", [[0, 3], [-1, 1], [0, 2, 1, -128]])
def test_cross_entropy_checks_class_labels_of_every_integer_dtype(dtype, labels):
    labels = np.array(labels).astype(dtype)  # unsigned: a negative label wraps to a large one
    logits = cr.tensor(np.zeros((len(labels), 3)), requires_grad=True)
    if labels.astype(np.int64).min() >= 0 and labels.astype(np.int64).max() < 3:
        F.cross_entropy(logits, labels).backward()
        return
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 3\)"):
        F.cross_entropy(logits, labels)
