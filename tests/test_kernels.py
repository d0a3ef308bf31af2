"""The fused C kernels give exactly what the NumPy code they replace gives, bit for bit, and decline
(returning False, touching nothing) whatever arrays they cannot take.

The NumPy code is the reference, checked against torch in test_optim.py and test_ops.py; here the
same optimizer (or ReLU) runs twice from the same start, once with the kernels and once without.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import chainrule as cr
from chainrule import kernels, ops, optim
from tests.test_optim import CONFIG_IDS, CONFIGS

# Small shapes are updated as one flat buffer; the large ones, past 2^18 elements, one by one.
SMALL_SHAPES = [(5, 7), (7,), (3, 2, 4)]
LARGE_SHAPES = [(600, 500), (500,)]

# The update rules that have a kernel, in the settings test_optim.py checks against torch.optim.
KERNEL_RULES = ("SGD", "Adam", "AdamW")
SETTINGS = [config for config in CONFIGS if config[0] in KERNEL_RULES]
IDS = [name for config, name in zip(CONFIGS, CONFIG_IDS) if config[0] in KERNEL_RULES]


def without_kernels(monkeypatch):
    for name in ("adam", "sgd", "relu", "relu_backward", "cross_entropy", "cross_entropy_backward"):
        monkeypatch.setattr(kernels, name, kernels._decline)


def train(name, options, shapes, dtype, steps=6):
    """Parameters and optimizer state after `steps` updates with seeded gradients."""
    rng = np.random.default_rng(0)
    params = [cr.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in shapes]
    optimizer = getattr(optim, name)(params, **options)
    for _ in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        optimizer.step()
    state = optimizer.state_dict()["state"]
    arrays = [
        v for index in sorted(state) for v in state[index].values() if isinstance(v, np.ndarray)
    ]
    return [p.data.copy() for p in params], arrays


@pytest.mark.skipif(bool(os.environ.get("CHAINRULE_NO_KERNELS")), reason="kernels switched off")
def test_the_kernels_are_built_where_a_c_compiler_was_present():
    assert kernels.AVAILABLE, "chainrule._kernels did not build: `pip install -e .` with gcc"


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("shapes", [SMALL_SHAPES, LARGE_SHAPES], ids=["flat", "per-parameter"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_kernel_updates_equal_the_numpy_updates_bit_for_bit(
    name, options, dtype, shapes, monkeypatch
):
    fused_params, fused_state = train(name, options, shapes, dtype)
    without_kernels(monkeypatch)
    numpy_params, numpy_state = train(name, options, shapes, dtype)
    assert [p.dtype for p in fused_params] == [np.dtype(dtype)] * len(shapes)
    for ours, reference in zip(fused_params + fused_state, numpy_params + numpy_state, strict=True):
        np.testing.assert_array_equal(ours, reference)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_nan_in_the_second_moment_propagates_as_in_numpy_maximum():
    p, g = np.ones(4), np.array([1.0, np.nan, 2.0, 3.0])
    m, v, v_max = np.zeros(4), np.zeros(4), np.array([0.0, 0.0, np.nan, 0.0])
    assert kernels.adam(p, g, m, v, v_max, 0.0, 0.9, 0.999, 1e-8, 0.001)
    assert np.isnan(v_max[1]) and np.isnan(v_max[2]) and np.isfinite(v_max[[0, 3]]).all()
    assert np.isnan(p[1]) and np.isnan(p[2]) and np.isfinite(p[[0, 3]]).all()


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize(
    "case",
    [
        "float16",
        "integers",
        "mixed dtypes",
        "sizes differ",
        "not contiguous",
        "read-only param",
        "list",
        "gradient is the parameter",
        "overlapping views",
    ],
)
def test_kernels_decline_arrays_they_cannot_take_and_leave_them_untouched(case):
    p, g = np.ones(6), np.full(6, 0.5)
    if case == "float16":
        p, g = p.astype(np.float16), g.astype(np.float16)
    elif case == "integers":
        p, g = p.astype(np.int64), g.astype(np.int64)
    elif case == "mixed dtypes":
        g = g.astype(np.float32)
    elif case == "sizes differ":
        g = np.full(5, 0.5)
    elif case == "not contiguous":
        p = np.ones(12)[::2]
    elif case == "read-only param":
        p.flags.writeable = False
    elif case == "list":
        g = [0.5] * 6
    elif case == "gradient is the parameter":  # the kernels' pointers are `restrict`
        g = p
    elif case == "overlapping views":
        shared = np.ones(9)
        p, g = shared[:6], shared[3:]
    before = np.array(p, copy=True)
    assert kernels.sgd(p, g, None, False, 0.0, 0.0, 0.0, False, 0.1) is False
    assert (
        kernels.adam(p, g, np.zeros_like(p), np.zeros_like(p), None, 0.0, 0.9, 0.999, 1e-8, 0.1)
        is False
    )
    np.testing.assert_array_equal(p, before)
    z = np.linspace(-1, 1, 6)
    assert kernels.relu_backward(z, z, z) is False  # the output may not be an input


def test_an_optimizer_still_updates_a_parameter_the_kernels_decline():
    """A non-contiguous parameter array takes the NumPy path and gets the same update."""
    base = np.arange(12.0).reshape(3, 4)
    strided = cr.Tensor(base.copy().T, requires_grad=True)  # a Fortran-ordered view
    contiguous = cr.Tensor(np.ascontiguousarray(base.T), requires_grad=True)
    assert not strided.data.flags.c_contiguous
    for p in (strided, contiguous):
        p.grad = np.full((4, 3), 0.25)
        optim.SGD([p], lr=0.1, momentum=0.9).step()
    np.testing.assert_array_equal(strided.data, contiguous.data)


SPECIAL_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30]


def relu_inputs(dtype):
    """Random values with every special case mixed in, as z (pre-activation) and g (gradient)."""
    rng = np.random.default_rng(3)
    z, g = rng.standard_normal((2, 37, 11)).astype(dtype)
    z.flat[: len(SPECIAL_VALUES)] = SPECIAL_VALUES
    g.flat[-len(SPECIAL_VALUES) :] = SPECIAL_VALUES
    g.flat[10:20] = np.inf  # where z < 0 these give NaN, as NumPy's g * (z > 0) does
    return z, g


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_equal_numpy_bit_for_bit_special_values_included(dtype, monkeypatch):
    z, g = relu_inputs(dtype)
    a, backward = ops.relu(z)
    (gz,) = backward(g)
    without_kernels(monkeypatch)
    a_numpy, backward_numpy = ops.relu(z)
    with np.errstate(invalid="ignore"):  # NumPy warns of the Inf·0 it turns into NaN
        (gz_numpy,) = backward_numpy(g)
    for ours, reference in ((a, a_numpy), (gz, gz_numpy)):
        assert ours.dtype == reference.dtype == dtype
        np.testing.assert_array_equal(ours, reference)  # NaN where NumPy has NaN, too
    assert not np.signbit(a[z == 0]).any()  # relu(−0.0) is +0.0, as NumPy's maximum gives here


@pytest.mark.parametrize("layout", ["transposed", "integers"])
def test_relu_of_arrays_the_kernels_decline_is_still_right(layout):
    z = np.arange(-6.0, 6.0).reshape(3, 4)
    z = z.T if layout == "transposed" else z.astype(np.int64)
    a, backward = ops.relu(z)
    (gz,) = backward(np.ones_like(z))
    np.testing.assert_array_equal(a, np.maximum(z, 0))
    np.testing.assert_array_equal(gz, (z > 0).astype(z.dtype))


def cross_entropy_inputs(dtype):
    """Logits with a tie, a huge row, a row of -inf and a NaN row, and int64 class targets."""
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((37, 7)) * 4).astype(dtype)
    z[1, 2:4] = z[1].max() + 1  # a tie for the maximum: the first one is the row's top
    z[2] = [1e4, -1e4, 3, 0, 0, 0, 1e4]  # exp of large differences underflows to 0
    z[3, 5] = -np.inf
    z[4, 0] = np.nan
    return z, rng.integers(0, 7, 37)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_kernels_equal_the_numpy_code_to_rounding(dtype, reduction, monkeypatch):
    z, target = cross_entropy_inputs(dtype)
    finite = np.ones(len(z), bool)
    finite[4] = False  # the NaN row: NaN in both, and a NaN loss
    seed = np.array(0.5, dtype=dtype)
    loss, backward = ops.cross_entropy(z, target, reduction=reduction)
    grad, _ = backward(seed)
    without_kernels(monkeypatch)
    loss_numpy, backward_numpy = ops.cross_entropy(z, target, reduction=reduction)
    grad_numpy, _ = backward_numpy(seed)
    assert loss.dtype == grad.dtype == dtype and loss.shape == ()
    assert np.isnan(loss) and np.isnan(loss_numpy)  # the NaN row poisons the total in both
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    eps = np.finfo(dtype).eps  # softmax − 1 cancels: an absolute error of an ulp of 1 there
    np.testing.assert_allclose(grad[finite], grad_numpy[finite], rtol=rtol, atol=eps)
    assert np.isnan(grad[4]).all() and np.isnan(grad_numpy[4]).all()
    kept = np.flatnonzero(finite)  # without the NaN row, the losses agree too
    loss, _ = ops.cross_entropy(z[kept], target[kept], reduction=reduction)
    monkeypatch.undo()
    fused, _ = ops.cross_entropy(z[kept], target[kept], reduction=reduction)
    np.testing.assert_allclose(fused, loss, rtol=rtol)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_cross_entropy_kernel_declines_what_it_cannot_take_and_the_numpy_code_answers():
    z, target = cross_entropy_inputs(np.float64)
    z, batch, classes = z[5:], 32, 7
    target = target[5:]
    e, sums = np.empty_like(z), np.empty(batch)
    assert kernels.cross_entropy(z, target, e, sums, batch, classes) is not False
    declined = {
        "int32 targets": (z, target.astype(np.int32), e, sums),
        "float32 buffers for float64 logits": (z, target, e.astype(np.float32), sums),
        "transposed logits": (np.asfortranarray(z), target, e, sums),
        "e written over the logits": (z, target, z, sums),
        "sums of the wrong size": (z, target, e, sums[:-1]),
    }
    for name, arrays in declined.items():
        assert kernels.cross_entropy(*arrays, batch, classes) is False, name
    out_of_range = target.copy()
    out_of_range[-1] = classes
    assert kernels.cross_entropy(z, out_of_range, e, sums, batch, classes) is False
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 7\)"):
        ops.cross_entropy(z, out_of_range)
    grad = np.empty_like(z)
    assert not kernels.cross_entropy_backward(grad, target, grad, sums, batch, classes, 1.0)
    # Targets the kernel declines still get the loss: the NumPy code's.
    loss, _ = ops.cross_entropy(z, target.astype(np.int32))
    np.testing.assert_allclose(loss, ops.cross_entropy(z, target)[0], rtol=1e-13)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_a_cross_entropy_backward_the_kernel_declines_still_gives_the_gradient(monkeypatch):
    z, target = cross_entropy_inputs(np.float64)
    z, target = z[5:], target[5:]  # finite rows
    loss, backward = ops.cross_entropy(z, target)  # forward in C
    expected, _ = backward(np.array(1.0))
    monkeypatch.setattr(kernels, "cross_entropy_backward", kernels._decline)
    grad, _ = backward(np.array(1.0))
    np.testing.assert_allclose(grad, expected, rtol=1e-15, atol=1e-17)
