"""The engine's contract: what backward() does, PyTorch's semantics, its errors."""

import numpy as np
import pytest

import chainrule as cr


def test_python_numbers_and_lists_become_float32():
    assert cr.tensor(1.5).dtype == np.float32
    assert cr.tensor([[1, 2], [3, 4]]).dtype == np.float32


def test_numpy_arrays_keep_their_dtype():
    assert cr.tensor(np.zeros(3)).dtype == np.float64
    assert cr.tensor(np.arange(3)).dtype == np.int64
    assert cr.tensor(np.zeros(3), dtype=np.float32).dtype == np.float32


def test_tensor_exposes_array_attributes():
    t = cr.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    assert t.shape == (1, 3) and t.ndim == 2 and t.requires_grad and t.grad is None
    assert isinstance(t.numpy(), np.ndarray)
    assert t.sum().item() == 6.0
    assert not t.detach().requires_grad and t.detach().data is t.data


def test_scalar_backward_seeds_with_one():
    x = cr.tensor(3.0, requires_grad=True)
    (x * x).backward()
    assert x.grad == pytest.approx(6.0)


def test_non_scalar_backward_without_grad_is_a_clear_error():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(
        RuntimeError, match=r"non-scalar tensor of shape \(2,\) needs an explicit grad"
    ):
        (x * 2).backward()


def test_tensor_used_twice_receives_the_sum_of_both_paths():
    x = cr.tensor(2.0, requires_grad=True)
    (x * x + x).backward()  # d/dx (x² + x) = 2x + 1
    assert x.grad == pytest.approx(5.0)


def test_same_tensor_on_both_sides_of_add():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_leaf_grad_does_not_alias_another_leaf_grad():
    a = cr.tensor([1.0, 2.0], requires_grad=True)
    b = cr.tensor([1.0, 2.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad += 10  # an in-place update of one gradient (as an optimizer may do)
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_no_grad_records_nothing():
    x = cr.tensor([1.0], requires_grad=True)
    with cr.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert cr.is_grad_enabled()


def test_no_grad_works_as_a_decorator():
    @cr.no_grad()
    def double(t):
        return t * 2

    assert not double(cr.tensor([1.0], requires_grad=True)).requires_grad


def test_graph_is_freed_after_backward_and_reuse_is_a_clear_error():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


def test_intermediate_grad_is_kept_on_request():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad, 2 * h.data)


def test_two_backward_passes_are_bit_identical(rng):
    data = rng.standard_normal((8, 5))
    weights = rng.standard_normal((5, 3))

    def gradient():
        x = cr.tensor(data, requires_grad=True)
        w = cr.tensor(weights, requires_grad=True)
        ((x @ w).tanh().log_softmax() * 1.7).mean().backward()
        return x.grad, w.grad

    first, second = gradient(), gradient()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize(
    "view", [lambda a: a.T, lambda a: a[:, ::2]], ids=["transposed", "strided"]
)
def test_non_contiguous_inputs_equal_contiguous_copies(view, rng):
    base = rng.standard_normal((6, 6))
    weights = rng.standard_normal((view(base).shape[1], 2))
    results = []
    for array in (view(base), np.ascontiguousarray(view(base))):
        x = cr.tensor(array, requires_grad=True)
        w = cr.tensor(weights, requires_grad=True)
        out = (x @ w).sigmoid().sum()
        out.backward()
        results.append((out.item(), x.grad, w.grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-14)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-14)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-14)


def test_matmul_shape_error_names_both_shapes():
    a, b = cr.tensor(np.zeros((2, 3))), cr.tensor(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ b


def test_broadcasting_error_names_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        cr.tensor(np.zeros((2, 3))) * cr.tensor(np.zeros(4))


def test_non_numeric_array_is_refused_with_its_dtype():
    with pytest.raises(TypeError, match="dtype <U1"):
        cr.tensor(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="dtype <U1"):
        cr.tensor([1.0]) + np.array(["a"])


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        cr.tensor(np.arange(3), requires_grad=True)


def test_python_scalar_does_not_upcast_float32():
    x = cr.tensor([1.0, 2.0])
    for result in (x * 2.0, 2.0 * x, x + 1, x / 3.0, 1.0 - x, x**2):
        assert result.dtype == np.float32


def test_gradcheck_reports_input_index_and_values():
    def wrong_square(x):
        # forward x², but the gradient of x·stop(x) is only x
        return x * cr.tensor(x.data)

    with pytest.raises(
        cr.GradcheckError, match=r"input 0 .* at index \(0,\): analytic 1.*numeric 2"
    ):
        cr.gradcheck(wrong_square, np.array([1.0, 2.0]))


def test_gradcheck_passes_non_float_inputs_through(rng):
    logits = rng.standard_normal((4, 3))
    classes = np.array([0, 2, 1, 1])
    import chainrule.functional as F

    assert cr.gradcheck(lambda z, y: F.cross_entropy(z, y), logits, classes)
