"""Convolution, pooling and their layers: against PyTorch (values and every gradient, float64) over
random shapes, against finite differences, C kernels against the NumPy reference, the errors, and a
small CNN that learns the 8×8 digits."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import chainrule as cr
import chainrule.functional as F
from chainrule import datasets, kernels, nn, optim
from chainrule.data import train_test_split
from chainrule.ops import conv as conv_ops
from tests.oracle import assert_matches_torch
from tests.test_nn import assert_layer_matches_torch, randomize_parameters

TF = torch.nn.functional
TNN = torch.nn
F64, D64, T64 = np.float64, {"dtype": np.float64}, {"dtype": torch.float64}


def without_kernels(monkeypatch):
    for name in (
        "im2col",
        "col2im",
        "max_pool2d",
        "max_pool2d_backward",
        "max_pool2x2",
        "max_pool2x2_backward",
    ):
        monkeypatch.setattr(kernels, name, kernels._decline)


# ---- convolution against torch --------------------------------------------------------------
@st.composite
def convolutions(draw, dims=2):
    """Shapes and options of a valid convolution: input, weight, bias or None, and the options."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    sizes = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 5))
        for k, d, p in zip(kernel, dilation, padding)
    )
    n = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, *sizes))
    w = rng.standard_normal((c_out, c_in // groups, *kernel))
    b = rng.standard_normal(c_out) if bias else None
    if dims == 1:
        stride, dilation, padding = stride[0], dilation[0], padding[0]
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, options


def assert_convolution_matches_torch(ours, theirs, x, w, b, options):
    if b is None:
        assert_matches_torch(
            lambda x, w: ours(x, w, None, **options),
            lambda x, w: theirs(x, w, None, **options),
            x,
            w,
        )
    else:
        assert_matches_torch(
            lambda x, w, b: ours(x, w, b, **options),
            lambda x, w, b: theirs(x, w, b, **options),
            x,
            w,
            b,
        )


@given(convolutions())
def test_conv2d_matches_torch(case):
    assert_convolution_matches_torch(F.conv2d, TF.conv2d, *case)


@given(convolutions(dims=1))
def test_conv1d_matches_torch(case):
    assert_convolution_matches_torch(F.conv1d, TF.conv1d, *case)


@pytest.mark.parametrize(
    "options",
    [dict(padding=1), dict(stride=(2, 1), dilation=(1, 2)), dict(groups=2, padding=(2, 0))],
    ids=["padded", "strided-dilated", "groups"],
)
def test_conv2d_with_long_columns_matches_torch(options, rng):
    """64 or more taps per output (C/groups·kh·kw) run the products the other way round."""
    groups = options.get("groups", 1)
    x, w = rng.standard_normal((2, 16, 7, 8)), rng.standard_normal((6, 16 // groups, 3, 4))
    assert_convolution_matches_torch(F.conv2d, TF.conv2d, x, w, rng.standard_normal(6), options)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel, dilation", [(3, 1), (4, 1), ((2, 5), (2, 1)), (3, 2)])
def test_conv2d_same_padding_keeps_the_size_like_torch(kernel, dilation, rng):
    x, w = (
        rng.standard_normal((2, 2, 7, 6)),
        rng.standard_normal((3, 2, *np.broadcast_to(kernel, 2))),
    )
    options = dict(padding="same", dilation=dilation)
    assert_convolution_matches_torch(F.conv2d, TF.conv2d, x, w, rng.standard_normal(3), options)
    assert F.conv2d(x, w, **options).shape == (2, 3, 7, 6)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv1d_same_padding_matches_torch(rng):
    x, w = rng.standard_normal((2, 2, 9)), rng.standard_normal((4, 2, 4))
    assert_convolution_matches_torch(F.conv1d, TF.conv1d, x, w, None, dict(padding="same"))


@pytest.mark.parametrize(
    "x_shape, w_shape, options",
    [
        ((2, 8, 30, 30), (16, 8, 3, 3), dict(padding=1)),  # long columns: pixels · Wᵀ
        ((2, 3, 40, 41), (32, 3, 3, 3), dict(stride=(1, 2))),  # short columns: W · columns
        ((2, 2, 9, 9), (3, 2, 3, 3), dict(padding=2, dilation=2)),  # one product per sample
    ],
    ids=["one_product_long_columns", "one_product_short_columns", "per_sample"],
)
def test_conv2d_matches_torch_whichever_way_the_product_runs(x_shape, w_shape, options, rng):
    x, w, b = (
        rng.standard_normal(x_shape),
        rng.standard_normal(w_shape),
        rng.standard_normal(w_shape[0]),
    )
    assert_convolution_matches_torch(F.conv2d, TF.conv2d, x, w, b, options)
    # A first layer (no input gradient) takes a product per sample where it is small.
    w_grad, b_grad = (cr.tensor(a, requires_grad=True) for a in (w, b))
    F.conv2d(cr.tensor(x), w_grad, b_grad, **options).sum().backward()
    expected = [torch.tensor(a, requires_grad=True) for a in (w, b)]
    TF.conv2d(torch.tensor(x), *expected, **options).sum().backward()
    np.testing.assert_allclose(w_grad.grad, expected[0].grad.numpy(), rtol=1e-7)
    np.testing.assert_allclose(b_grad.grad, expected[1].grad.numpy(), rtol=1e-7)


def test_conv2d_skips_the_input_gradient_when_the_input_needs_none(rng, monkeypatch):
    def fail(*args):
        raise AssertionError("col2im ran for an input that needs no gradient")

    monkeypatch.setattr(conv_ops, "col2im", fail)
    x = cr.tensor(rng.standard_normal((2, 3, 6, 6)))
    w = cr.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    expected = torch.tensor(w.data, requires_grad=True)
    TF.conv2d(torch.tensor(x.data), expected, padding=1).sum().backward()
    np.testing.assert_allclose(w.grad, expected.grad.numpy(), rtol=1e-7)
    assert x.grad is None


def test_conv2d_keeps_float32(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = cr.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    out = F.conv2d(x, w, stride=2)
    out.sum().backward()
    assert out.dtype == np.float32 and w.grad.dtype == np.float32


# ---- pooling against torch ------------------------------------------------------------------
@st.composite
def poolings(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = tuple(max(1, k - 2 * p) + draw(st.integers(0, 5)) for k, p in zip(kernel, padding))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *sizes)
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    return x, dict(kernel_size=kernel, stride=stride, padding=padding)


@given(poolings())
def test_max_pool2d_matches_torch(case):
    x, options = case
    assert_matches_torch(
        lambda x: F.max_pool2d(x, **options), lambda x: TF.max_pool2d(x, **options), x
    )


@given(poolings(), st.booleans())
def test_avg_pool2d_matches_torch(case, count_include_pad):
    x, options = case
    options["count_include_pad"] = count_include_pad
    assert_matches_torch(
        lambda x: F.avg_pool2d(x, **options), lambda x: TF.avg_pool2d(x, **options), x
    )


@given(
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_adaptive_avg_pool2d_matches_torch(shape, oh, ow):
    x = np.random.default_rng(0).standard_normal(shape)
    assert_matches_torch(
        lambda x: F.adaptive_avg_pool2d(x, (oh, ow)),
        lambda x: TF.adaptive_avg_pool2d(x, (oh, ow)),
        x,
    )


def test_max_pool2d_sends_a_tied_gradient_to_the_first_maximum_like_torch():
    x = np.zeros((1, 1, 4, 4))
    assert_matches_torch(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), x)
    assert_matches_torch(lambda x: F.max_pool2d(x, 3, 1), lambda x: TF.max_pool2d(x, 3, 1), x)


# ---- batch normalisation --------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(training, affine, rng):
    x = rng.standard_normal((3, 4, 5, 2)) * 2 + 1
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    params = [rng.standard_normal(4), rng.standard_normal(4)] if affine else []

    def ours(x, *wb):
        return F.batch_norm(x, mean.copy(), var.copy(), *wb, training=training)

    def theirs(x, *wb):
        return TF.batch_norm(x, torch.tensor(mean), torch.tensor(var), *wb, training=training)

    assert_matches_torch(ours, theirs, x, *params)


def train_both_batchnorms(rng, batches, momentum=0.1):
    ours, theirs = (
        nn.BatchNorm2d(3, momentum=momentum, **D64),
        TNN.BatchNorm2d(3, momentum=momentum, **T64),
    )
    randomize_parameters(ours, rng)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    for _ in range(batches):
        x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
        assert_layer_matches_torch(ours, theirs, x)
    return ours, theirs


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batchnorm2d_running_statistics_after_several_batches_equal_torch(momentum, rng):
    ours, theirs = train_both_batchnorms(rng, batches=3, momentum=momentum)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-7)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-7)


def test_batchnorm2d_in_eval_mode_uses_running_statistics_like_torch(rng):
    ours, theirs = train_both_batchnorms(rng, batches=2)
    before = ours.state_dict()
    assert_layer_matches_torch(ours.eval(), theirs.eval(), rng.standard_normal((2, 3, 4, 4)))
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# ---- finite differences ---------------------------------------------------------------------
GRADCHECKS = [
    (
        "conv2d",
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=(1, 2)),
        [(2, 2, 5, 6), (3, 2, 2, 2), (3,)],
    ),
    (
        "conv2d_groups",
        lambda x, w: F.conv2d(x, w, groups=2, padding=(0, 1)),
        [(1, 4, 4, 4), (4, 2, 3, 2)],
    ),
    (
        "conv1d",
        lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2),
        [(2, 2, 7), (3, 2, 3), (3,)],
    ),
    ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1), [(2, 2, 5, 5)]),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1), [(2, 2, 5, 5)]),
    ("avg_pool2d_exclude_pad", lambda x: F.avg_pool2d(x, 3, 2, 1, False), [(2, 2, 5, 5)]),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [(2, 2, 5, 7)]),
    (
        "batch_norm",
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True) ** 2,
        [(3, 2, 3, 3), (2,), (2,)],
    ),
]


@pytest.mark.parametrize("name, fn, shapes", GRADCHECKS, ids=[row[0] for row in GRADCHECKS])
def test_gradients_match_finite_differences(name, fn, shapes, rng):
    assert cr.gradcheck(fn, *[rng.standard_normal(shape) for shape in shapes])


# ---- C kernels against the NumPy reference ----------------------------------------------------
def run_op(fn, arrays, seed=1):
    leaves = [cr.tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*leaves)
    out.backward(np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype))
    return [out.data] + [leaf.grad for leaf in leaves]


KERNEL_CASES = [
    (
        "conv2d",
        lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=1),
        [(2, 3, 9, 8), (4, 3, 3, 3)],
        True,
    ),
    (
        "conv2d_dilated",
        lambda x, w: F.conv2d(x, w, stride=2, dilation=2, groups=3),
        [(2, 3, 9, 9), (6, 1, 2, 3)],
        True,
    ),
    (
        "conv2d_long_columns",
        lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=1),
        [(2, 8, 7, 6), (4, 8, 3, 3)],
        True,
    ),
    (
        "conv2d_same_even_kernel",
        lambda x, w: F.conv2d(x, w, padding="same", dilation=(1, 2)),
        [(2, 2, 5, 7), (3, 2, 4, 2)],
        True,
    ),
    (
        "conv2d_strided_padded_dilated",
        lambda x, w: F.conv2d(x, w, stride=(3, 2), padding=(2, 3), dilation=(2, 1)),
        [(3, 2, 7, 5), (2, 2, 3, 4)],
        True,
    ),
    (
        "conv2d_padding_wider_than_the_input",
        lambda x, w: F.conv2d(x, w, stride=2, padding=(3, 4), groups=2),
        [(1, 4, 2, 3), (4, 2, 2, 5)],
        True,
    ),
    (
        "conv1d_strided",
        lambda x, w: F.conv1d(x, w, stride=3, padding=2),
        [(2, 3, 11), (2, 3, 4)],
        True,
    ),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), [(3, 4, 8, 7)], True),
    ("max_pool2d_odd_height", lambda x: F.max_pool2d(x, 2), [(2, 3, 7, 6)], True),
    ("max_pool2d_2x3", lambda x: F.max_pool2d(x, (2, 3), 2), [(2, 3, 6, 9)], True),
    ("max_pool2d_padded", lambda x: F.max_pool2d(x, (3, 2), (3, 2), (1, 1)), [(2, 3, 7, 9)], True),
    ("max_pool2d_overlapping", lambda x: F.max_pool2d(x, 3, 1, 1), [(2, 3, 6, 6)], False),
    ("max_pool2d_narrow", lambda x: F.max_pool2d(x, (3, 5), 1, (1, 2)), [(2, 2, 1, 2)], False),
]


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, fn, shapes, exact", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernels_give_what_the_numpy_reference_gives(
    name, fn, shapes, exact, dtype, monkeypatch, rng
):
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    fused = run_op(fn, arrays)
    without_kernels(monkeypatch)
    reference = run_op(fn, arrays)
    for ours, expected in zip(fused, reference, strict=True):
        assert ours.dtype == dtype
        if exact:
            np.testing.assert_array_equal(ours, expected)
        else:
            np.testing.assert_allclose(ours, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_kernels_decline_arrays_that_do_not_fit():
    # im2col / col2im arguments after the two arrays: N, C, H, W, kh, kw, Ho, Wo, pt, pl, sh, sw,
    # dh, dw (a 3×3 kernel over 1 sample of 2 channels 4×4 padded by 1: 4×4 outputs)
    geometry = (1, 2, 4, 4, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1)
    cols, image = np.ones((2, 3, 3, 1, 4, 4)), np.full((1, 2, 4, 4), 7.0)
    assert kernels.col2im(cols, image.copy(), *geometry)
    assert not kernels.col2im(cols, image.astype(np.float32), *geometry)
    assert not kernels.col2im(cols, image[..., ::2].copy(), *geometry)
    assert not kernels.col2im(cols, image, *geometry[:6], 5, *geometry[7:])  # columns too few
    assert not kernels.col2im(cols, image, *geometry[:8], -1, *geometry[9:])  # negative padding
    np.testing.assert_array_equal(image, 7.0)
    assert kernels.im2col(image, cols.copy(), *geometry)
    assert not kernels.im2col(image, cols.astype(np.float32), *geometry)
    assert not kernels.im2col(image[..., ::2], cols, *geometry)
    assert not kernels.im2col(image, cols[..., ::2], *geometry)
    assert not kernels.im2col(image, cols, *geometry[:10], 0, *geometry[11:])  # stride 0
    np.testing.assert_array_equal(cols, 1.0)
    x, out, index = np.ones((2, 4, 4)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2), dtype=np.int64)
    assert not kernels.max_pool2d(x[:, ::2], out, index, 2, 2, 4, 2, 2, 2, 2, 2, 2, 0, 0)
    assert not kernels.max_pool2d(x, out, index.astype(np.int32), 2, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0)
    assert not kernels.max_pool2d(x, out.astype(np.float32), index, 2, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0)
    gx = np.full((2, 4, 4), 7.0)
    assert not kernels.max_pool2d_backward(out, index - 1, gx, 2, 4, 4, 2, 2)  # outside the image
    np.testing.assert_array_equal(gx, 7.0)
    np.testing.assert_array_equal(out, 0.0)


def special_values(shape, dtype, rng):
    """Ties, NaN, ±inf, ±0 and plain numbers, mixed at random."""
    specials = np.array([0.0, -0.0, 1.0, 1.0, np.nan, np.inf, -np.inf], dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    chosen = rng.random(shape) < 0.5
    x[chosen] = rng.choice(specials, size=int(chosen.sum()))
    return x


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 8, 8), (1, 2, 5, 7), (3, 1, 2, 3), (2, 2, 3, 2), (1, 3, 9, 33), (2, 2, 6, 17)],
)
def test_the_2x2_pooling_kernels_equal_the_numpy_reference_bit_for_bit_special_values_included(
    shape, dtype, monkeypatch, rng
):
    x = special_values(shape, dtype, rng)
    ho, wo = shape[2] // 2, shape[3] // 2
    g = special_values((shape[0], shape[1], ho, wo), dtype, rng)  # -0.0 must come back as +0.0
    out, backward = conv_ops.max_pool2d(x)
    (gx,) = backward(g)
    without_kernels(monkeypatch)
    expected_out, expected_backward = conv_ops.max_pool2d(x)
    (expected_gx,) = expected_backward(g)
    assert out.tobytes() == expected_out.tobytes()
    assert gx.tobytes() == expected_gx.tobytes()


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 1, 3, 5), (1, 2, 4, 14), (3, 2, 5, 19)])
def test_the_2x2_pooling_kernels_touch_nothing_past_their_arrays(shape, dtype, rng):
    # (the float kernels do a row's last windows 8 at a time where the arrays go on: see
    # _pool_kernels.c)
    planes, h, w = shape[0] * shape[1], shape[2], shape[3]
    ho, wo = h // 2, w // 2

    def inside(size, fill, kind=dtype):  # an array of `size` followed by 64 guards
        memory = np.full(size + 64, fill, dtype=kind)
        return memory, memory[:size].reshape(shape[:2] + (-1,))

    x_memory, x = inside(planes * h * w, np.inf)
    x[...] = rng.standard_normal(x.shape)
    out_memory, out = inside(planes * ho * wo, 5.0)
    taps_memory, taps = inside(planes * ho * wo, 9, np.uint8)
    assert kernels.max_pool2x2(x.reshape(shape), out, taps, planes, h, w, ho, wo)
    gx_memory, gx = inside(planes * h * w, 5.0)
    assert kernels.max_pool2x2_backward(out, taps, gx, planes, h, w, ho, wo)
    for memory, guard in [(out_memory, 5.0), (taps_memory, 9), (gx_memory, 5.0)]:
        np.testing.assert_array_equal(memory[-64:], guard)
    np.testing.assert_array_equal(x_memory[-64:], np.inf)


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_a_2x2_pooling_gradient_the_kernel_declines_is_still_the_reference(monkeypatch, rng):
    x = special_values((2, 3, 6, 5), np.float32, rng)
    g = rng.standard_normal((2, 3, 3, 2))  # float64 into a float32 pooling: the kernel declines
    _, backward = conv_ops.max_pool2d(x)
    (gx,) = backward(g)
    without_kernels(monkeypatch)
    (expected,) = conv_ops.max_pool2d(x)[1](g)
    assert gx.dtype == expected.dtype == np.float64
    assert gx.tobytes() == expected.tobytes()


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
def test_the_2x2_pooling_kernels_decline_arrays_that_do_not_fit():
    # arguments after the three arrays: planes, H, W, Ho, Wo
    x, out, taps = np.ones((2, 4, 5)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2), dtype=np.uint8)
    assert kernels.max_pool2x2(x, out.copy(), taps.copy(), 2, 4, 5, 2, 2)
    assert not kernels.max_pool2x2(x, out, taps, 2, 4, 5, 2, 3)  # Ho, Wo must be H // 2, W // 2
    assert not kernels.max_pool2x2(x, out, taps, 2, 1, 5, 0, 2)  # no window fits
    assert not kernels.max_pool2x2(x[:, :, ::2], out, taps, 2, 4, 3, 2, 1)
    assert not kernels.max_pool2x2(x, out.astype(np.float32), taps, 2, 4, 5, 2, 2)
    assert not kernels.max_pool2x2(x, out, taps.astype(np.int64), 2, 4, 5, 2, 2)
    shared = out.view(np.uint8).reshape(-1)[:8].reshape(2, 2, 2)  # taps inside out
    assert not kernels.max_pool2x2(x, out, shared, 2, 4, 5, 2, 2)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(taps, 0)
    gx = np.full((2, 4, 5), 7.0)
    assert not kernels.max_pool2x2_backward(out, taps, gx.astype(np.float32), 2, 4, 5, 2, 2)
    assert not kernels.max_pool2x2_backward(out, taps, gx, 2, 4, 4, 2, 2)  # gx of another size
    assert not kernels.max_pool2x2_backward(gx.reshape(-1)[:8], taps, gx, 2, 4, 5, 2, 2)
    np.testing.assert_array_equal(gx, 7.0)


IM2COL_CASES = [  # x shape, kernel, stride, padding ((top, bottom), (left, right)), dilation
    ((2, 3, 7, 6), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((1, 2, 5, 9), (2, 4), (2, 3), ((0, 1), (2, 1)), (1, 1)),
    ((3, 1, 8, 5), (3, 2), (1, 2), ((2, 2), (0, 3)), (2, 2)),
    ((1, 1, 1, 1), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((2, 2, 3, 2), (1, 1), (2, 2), ((3, 2), (4, 1)), (1, 1)),
]


@pytest.mark.skipif(not kernels.AVAILABLE, reason="kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", IM2COL_CASES)
def test_im2col_and_col2im_kernels_equal_the_numpy_reference_bit_for_bit(
    shape, kernel, stride, padding, dilation, dtype, monkeypatch, rng
):
    x = rng.standard_normal(shape).astype(dtype)
    weight_shape = (1, shape[1], *kernel)
    _, _, ho, wo = conv_ops.conv_output_shape(
        shape, weight_shape, None, stride, padding, dilation, 1, "test"
    )
    arguments = (kernel, stride, padding, dilation, (ho, wo))
    cols = conv_ops.im2col(x, *arguments).copy()
    gcols = rng.standard_normal(cols.shape).astype(dtype)
    gx = conv_ops.col2im(gcols, shape, padding, stride, dilation)
    without_kernels(monkeypatch)
    np.testing.assert_array_equal(cols, conv_ops.im2col(x, *arguments))
    np.testing.assert_array_equal(gx, conv_ops.col2im(gcols, shape, padding, stride, dilation))


def test_a_convolution_keeps_its_columns_while_another_runs(rng):
    # Scratch arrays are reused from one convolution to the next; the columns a backward needs
    # must survive other convolutions of the same shape run before it (and a second backward).
    x1, x2 = (cr.tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32)) for _ in "12")
    w = cr.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    first = F.conv2d(x1, w, padding=1).sum()
    F.conv2d(x2, w, padding=1).sum().backward()
    w.grad = None
    first.backward(retain_graph=True)
    F.conv2d(x2, w, padding=1).sum()
    once = w.grad.copy()
    w.grad = None
    first.backward()
    expected = torch.tensor(w.data, requires_grad=True)
    TF.conv2d(torch.tensor(x1.data), expected, padding=1).sum().backward()
    np.testing.assert_allclose(once, expected.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(w.grad, once)


# ---- layers -----------------------------------------------------------------------------------
LAYERS = [
    (
        "Conv2d",
        lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2, **D64),
        lambda: TNN.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2, **T64),
        (2, 4, 7, 6),
    ),
    (
        "Conv2d_same",
        lambda: nn.Conv2d(2, 3, 3, padding="same", dilation=2, bias=False, **D64),
        lambda: TNN.Conv2d(2, 3, 3, padding="same", dilation=2, bias=False, **T64),
        (2, 2, 6, 5),
    ),
    (
        "Conv1d",
        lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, **D64),
        lambda: TNN.Conv1d(3, 4, 3, stride=2, padding=1, **T64),
        (2, 3, 9),
    ),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), lambda: TNN.MaxPool2d(2), (2, 3, 6, 5)),
    ("AvgPool2d", lambda: nn.AvgPool2d(3, 2, 1), lambda: TNN.AvgPool2d(3, 2, 1), (2, 3, 6, 5)),
    (
        "AdaptiveAvgPool2d",
        lambda: nn.AdaptiveAvgPool2d(1),
        lambda: TNN.AdaptiveAvgPool2d(1),
        (2, 3, 6, 5),
    ),
    (
        "BatchNorm2d",
        lambda: nn.BatchNorm2d(3, **D64),
        lambda: TNN.BatchNorm2d(3, **T64),
        (2, 3, 4, 5),
    ),
]


@pytest.mark.parametrize("name, ours, theirs, shape", LAYERS, ids=[row[0] for row in LAYERS])
def test_layer_matches_torch(name, ours, theirs, shape, rng):
    layer = ours()
    randomize_parameters(layer, rng)
    assert_layer_matches_torch(layer, theirs(), rng.standard_normal(shape))


@pytest.mark.parametrize("name, ours, theirs, shape", LAYERS, ids=[row[0] for row in LAYERS])
def test_layer_state_dict_names_and_shapes_match_torch(name, ours, theirs, shape):
    expected = {
        key: tuple(value.shape)
        for key, value in theirs().state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    assert {key: value.shape for key, value in ours().state_dict().items()} == expected


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda rng: nn.Conv2d(8, 16, 3, rng=rng), 72),
        (lambda rng: nn.Conv1d(6, 8, 5, groups=2, rng=rng), 15),
    ],
)
def test_convolutions_start_uniform_within_one_over_root_fan_in_like_torch(make, fan_in):
    layer = make(0)
    bound = 1 / np.sqrt(fan_in)
    for parameter in (layer.weight, layer.bias):
        assert parameter.dtype == np.float32
        assert np.abs(parameter.data).max() <= bound
        assert np.abs(parameter.data).max() > 0.8 * bound  # the whole range is used
    np.testing.assert_array_equal(make(0).weight.data, layer.weight.data)  # seeded
    assert not np.array_equal(make(1).weight.data, layer.weight.data)


def test_conv2d_holds_float64_on_request():
    layer = nn.Conv2d(1, 2, 3, dtype=np.float64, rng=0)
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    assert layer(np.zeros((1, 1, 3, 3), np.float32)).dtype == np.float64


def test_conv_repr_names_the_options():
    assert (
        repr(nn.Conv2d(1, 16, 3, padding="same", rng=0))
        == "Conv2d(1, 16, kernel_size=(3, 3), padding='same')"
    )
    assert (
        repr(nn.Conv1d(2, 4, 3, stride=2, bias=False, rng=0))
        == "Conv1d(2, 4, kernel_size=3, stride=2, bias=False)"
    )


# ---- Dropout2d --------------------------------------------------------------------------------
def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    x = np.ones((50, 20, 3, 3), np.float32)
    out = nn.Dropout2d(0.4, rng=0)(x).data
    per_channel = out.reshape(50, 20, 9)
    assert set(np.unique(per_channel)) <= {0.0, np.float32(1 / 0.6)}
    assert (per_channel.min(axis=2) == per_channel.max(axis=2)).all()
    assert abs((per_channel[:, :, 0] == 0).mean() - 0.4) < 0.05


def test_dropout2d_is_reproducible_from_its_seed_and_identity_in_eval():
    x = np.random.default_rng(0).standard_normal((4, 5, 2, 2))
    np.testing.assert_array_equal(
        nn.Dropout2d(0.5, rng=3)(x).data, nn.Dropout2d(0.5, rng=3)(x).data
    )
    np.testing.assert_array_equal(nn.Dropout2d(0.5, rng=3).eval()(x).data, x)


def test_dropout2d_gradient_is_its_mask():
    x = cr.tensor(np.ones((4, 6, 2, 2)), requires_grad=True)
    out = F.dropout2d(x, 0.5, rng=1)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, out.data)


# ---- errors -----------------------------------------------------------------------------------
ERRORS = [
    (
        lambda: nn.Conv2d(1, 16, 3, rng=0)(np.zeros((32, 3, 8, 8))),
        ["Conv2d(1, 16, kernel_size=(3, 3))", "(32, 3, 8, 8)", "(batch, 1, height, width)"],
    ),
    (
        lambda: nn.Conv2d(1, 4, 5, padding=1, rng=0)(np.zeros((2, 1, 2, 2))),
        [
            "Conv2d(1, 4, kernel_size=(5, 5), padding=(1, 1))",
            "larger than the padded input",
            "(4×4",
            "(2, 1, 2, 2)",
        ],
    ),
    (lambda: nn.Conv2d(1, 4, 3, rng=0)(np.zeros((1, 8, 8))), ["Conv2d(1, 4", "(1, 8, 8)"]),
    (lambda: nn.Conv2d(1, -3, 3), ["Conv2d(1, -3, kernel_size=3)", "out_channels", "-3"]),
    (lambda: nn.Conv2d(1, 4, 0), ["Conv2d(1, 4, kernel_size=0)", "kernel_size", "at least 1"]),
    (lambda: nn.Conv2d(1, 4, 3, padding=-1), ["Conv2d(1, 4, kernel_size=3)", "padding", "-1"]),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ["groups (2)", "in_channels (3)"]),
    (lambda: nn.Conv2d(1, 4, 3, stride=2, padding="same"), ["padding='same' needs stride 1"]),
    (
        lambda: nn.Conv1d(2, 4, 3, rng=0)(np.zeros((1, 3, 8))),
        ["Conv1d(2, 4, kernel_size=3)", "(batch, 2, length)", "(1, 3, 8)"],
    ),
    (
        lambda: nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2))),
        ["MaxPool2d(kernel_size=(3, 3)", "larger than the padded input", "(1, 1, 2, 2)"],
    ),
    (lambda: nn.MaxPool2d(2, padding=2), ["MaxPool2d(kernel_size=2)", "at most half"]),
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5))), ["BatchNorm2d(3)", "(2, 4, 5, 5)"]),
    (
        lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 2, 3, 3))),
        ["conv2d", "(1, 3, 5, 5)", "(2, 2, 3, 3)"],
    ),
    (
        lambda: F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((2, 2, 3, 3)), np.zeros(3)),
        ["conv2d", "bias", "(2,)"],
    ),
    (lambda: F.max_pool2d(np.zeros((2, 5, 5)), 2), ["max_pool2d", "(2, 5, 5)"]),
    (
        lambda: F.conv1d(np.zeros((1, 3, 5)), np.zeros((2, 2, 3))),
        ["conv1d", "(batch, 2, length)", "(1, 3, 5)", "(2, 2, 3)"],
    ),
    (lambda: F.dropout2d(np.zeros((2, 5)), 0.5), ["dropout2d", "(2, 5)"]),
    (
        lambda: F.batch_norm(np.zeros((1, 3, 1, 1)), None, None, training=True),
        ["batch_norm", "more than one value"],
    ),
]


@pytest.mark.parametrize("make, fragments", ERRORS)
def test_errors_name_the_layer_and_the_shapes(make, fragments):
    with pytest.raises(ValueError) as error:
        make()
    for fragment in fragments:
        assert fragment in str(error.value)


# ---- data and a whole network -----------------------------------------------------------------
def test_digits_as_images_are_the_flat_digits_reshaped():
    X, y = datasets.digits()
    images, labels = datasets.digits(images=True)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images.reshape(1797, 64), X)
    np.testing.assert_array_equal(labels, y)


def test_a_cnn_trained_for_k_sgd_steps_matches_torch(rng):
    ours = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=F64, rng=rng),
        nn.BatchNorm2d(4, dtype=F64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, dtype=F64, rng=rng),
        nn.ReLU(),
        nn.AvgPool2d(2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3, dtype=F64, rng=rng),
    )
    theirs = TNN.Sequential(
        TNN.Conv2d(2, 4, 3, padding=1, **T64),
        TNN.BatchNorm2d(4, **T64),
        TNN.ReLU(),
        TNN.MaxPool2d(2),
        TNN.Conv2d(4, 6, 3, stride=2, groups=2, **T64),
        TNN.ReLU(),
        TNN.AvgPool2d(2, 1),
        TNN.AdaptiveAvgPool2d(1),
        TNN.Flatten(),
        TNN.Linear(6, 3, **T64),
    )
    with torch.no_grad():
        for mine, theirs_ in zip(ours.parameters(), theirs.parameters(), strict=True):
            theirs_.copy_(torch.tensor(mine.data))
    our_optimizer = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    their_optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x, y = rng.standard_normal((5, 2, 10, 10)), rng.integers(0, 3, 5)
        our_optimizer.zero_grad()
        F.cross_entropy(ours(x), y).backward()
        our_optimizer.step()
        their_optimizer.zero_grad()
        TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        their_optimizer.step()
    their_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, their_state[name].numpy(), rtol=1e-7, atol=1e-12)


def small_cnn(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same", rng=rng),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding="same", rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64, rng=rng),
        nn.ReLU(),
        nn.Linear(64, 10, rng=rng),
    )


def test_a_small_cnn_learns_the_digits_in_a_few_seconds():
    X, y = datasets.digits(images=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, test_size=0.25, rng=0)
    model = small_cnn(0)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    order = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(8):
        batches = order.permutation(len(X_train))
        for i in range(0, len(batches), 32):
            batch = batches[i : i + 32]
            optimizer.zero_grad()
            F.cross_entropy(model(X_train[batch]), y_train[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with cr.no_grad():
        accuracy = (model.eval()(X_test).data.argmax(axis=1) == y_test).mean()
    assert accuracy >= 0.97, f"test accuracy {accuracy:.3f} after {seconds:.1f} s"
