"""Tensor, the reverse-mode engine that runs backward(), and no_grad().

The math of each operation lives in `chainrule.ops` (forward and vector-Jacobian product side by
side); this module only records which op made which tensor and walks that record backward.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import numpy as np

from chainrule import memory, tracing

DEFAULT_DTYPE = np.float32

_grad_enabled = True


def is_grad_enabled() -> bool:
    """Whether operations record a graph now: False inside `no_grad()`, True elsewhere."""
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) inside which no graph is recorded, as `torch.no_grad()`.

    >>> x = tensor([1.0, 2.0], requires_grad=True)
    >>> with no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __enter__(self) -> None:
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, function: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return function(*args, **kwargs)

        wrapper.__name__ = getattr(function, "__name__", "wrapper")
        wrapper.__doc__ = function.__doc__
        return wrapper


_sequence = itertools.count()

_FREED_MESSAGE = (
    "backward() through a graph that was already freed: a previous backward() released it; "
    "recompute the forward pass, or pass retain_graph=True to the first backward()"
)


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """Python numbers and lists become float32; NumPy arrays keep their dtype unless given one."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) and dtype is None:
        array = data  # the hot path: every op's result passes here
    elif isinstance(data, (np.ndarray, np.generic)):
        if data.dtype.kind == "c":  # before the cast, which would drop the imaginary part
            raise TypeError(
                f"cannot make a Tensor from complex numbers (dtype {data.dtype}): chainrule's "
                "gradients are real; pass .real and .imag as separate tensors"
            )
        array = np.asarray(data, dtype=dtype)
    else:
        try:
            array = np.asarray(data, dtype=DEFAULT_DTYPE if dtype is None else dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"cannot make a Tensor from {type(data).__name__}: {error}") from None
    if array.dtype.kind not in "fiub":
        raise TypeError(
            f"cannot make a Tensor from an array of dtype {array.dtype}: expected numbers "
            "(float, int or bool)"
        )
    return array


class Tensor:
    """A NumPy array that remembers how it was computed, so `backward()` can apply the chain rule.

    `.grad` is filled only for leaves (tensors made by the user with `requires_grad=True`), and for
    non-leaves on which `retain_grad()` was called, as in PyTorch. `.data` is the NumPy array;
    Python numbers and lists become float32, NumPy arrays keep their dtype (see `tensor`).

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> y = (x * x).sum()  # y = Σ x², so dy/dx = 2x
    >>> y
    tensor(14., grad_fn=sum)
    >>> y.backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    # How a non-leaf tensor was made is kept on the tensor itself (no separate node object, to keep
    # each op cheap): the op's name, its input tensors, its vector-Jacobian product, and a sequence
    # number that orders it after every tensor it depends on. Leaves have _op None; backward()
    # frees a graph by dropping _backward and _parents.
    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "_op",
        "_parents",
        "_backward",
        "_sequence",
        "_retain_grad",
        "_pending",
        "__weakref__",
    )
    __array_priority__ = 1000  # so that `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._op: str | None = None
        self._parents: tuple = ()
        self._backward: Callable | None = None
        self._sequence = 0
        self._retain_grad = False
        self._pending: np.ndarray | None = None  # gradient gathered so far during backward()

    # ---- array-like attributes -------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The array's shape, as NumPy's."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype: float32 by default, float64 on request."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return self.data.ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user, not by an op: those whose `.grad` backward() fills."""
        return self._op is None

    @property
    def grad_fn(self) -> str | None:
        """The name of the op that made this tensor (None for leaves)."""
        return self._op

    # Reading a value in Python is refused while a step is traced (tracing.refuse): a replay
    # would not run the Python that depends on it.
    def numpy(self) -> np.ndarray:
        """The underlying array itself (no copy)."""
        if tracing.active is not None:
            tracing.refuse(".numpy()")
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if tracing.active is not None:
            tracing.refuse(".item()")
        if self.data.size != 1:
            raise ValueError(
                f"item() needs a tensor with one element, this one has shape {self.shape}"
            )
        return self.data.item()

    def tolist(self) -> Any:
        """The values as nested Python lists."""
        if tracing.active is not None:
            tracing.refuse(".tolist()")
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory, like PyTorch)."""
        return Tensor(self.data)

    def astype(self, dtype: Any) -> Tensor:
        """A copy in `dtype`, recorded in the graph (the gradient is cast back)."""
        from chainrule.ops import cast

        return apply(cast, self, dtype=np.dtype(dtype))

    def float(self) -> Tensor:
        """A float32 copy (`astype(np.float32)`), recorded in the graph."""
        return self.astype(np.float32)

    def double(self) -> Tensor:
        """A float64 copy (`astype(np.float64)`), recorded in the graph."""
        return self.astype(np.float64)

    def retain_grad(self) -> None:
        """Keep `.grad` on this non-leaf tensor after backward(), to inspect intermediate values."""
        self._retain_grad = True

    def zero_grad(self) -> None:
        """Clear `.grad` (set it to None)."""
        self.grad = None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Set `requires_grad` in place (floating-point tensors only); returns self."""
        if flag and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.requires_grad = flag
        return self

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="tensor(")
        extras = []
        if self.data.dtype != DEFAULT_DTYPE:
            extras.append(f"dtype={self.data.dtype}")
        if self._op is not None:
            extras.append(f"grad_fn={self._op}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    def __bool__(self) -> bool:
        if tracing.active is not None:
            tracing.refuse("bool() (an `if` or `while` on a tensor)")
        return bool(self.data)

    def __float__(self) -> float:
        if tracing.active is not None:
            tracing.refuse("float()")
        return float(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if tracing.active is not None:
            tracing.refuse("np.asarray(tensor)")
        return self.data if dtype is None else self.data.astype(dtype)

    __hash__ = object.__hash__

    # ---- the backward pass -----------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` by the chain rule.

        A scalar's seed gradient is 1; a non-scalar needs `grad` of its own shape. The graph is
        freed afterwards (pass `retain_graph=True` to call backward through it again). Gradients
        add up across calls, as in PyTorch: clear them with `zero_grad()` (or an optimizer's).

        >>> w = tensor([0.5, -1.0], requires_grad=True)
        >>> x = tensor([2.0, 3.0])
        >>> z = (w * x).sum()  # z = w·x, so ∂z/∂w = x
        >>> z.backward()
        >>> w.grad
        array([2., 3.], dtype=float32)
        """
        if self._op is not None and self._backward is None:
            raise RuntimeError(_FREED_MESSAGE)
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True (or it was computed under no_grad())"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs an explicit "
                    "grad of the same shape (the seed of the chain rule)"
                )
            seed = np.empty_like(self.data)  # np.ones is a Python wrapper around these two
            seed.fill(1)
        else:
            seed = _as_array(grad, self.data.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(
                    f"backward(): grad has shape {seed.shape} but the tensor has shape {self.shape}"
                )
        if not _spares.since_backward:
            _run_backward(self, seed, retain_graph)
            return
        _spares.since_backward = False
        previous = memory.use_spares()
        try:
            _run_backward(self, seed, retain_graph)
        finally:
            memory.restore(previous)

    # ---- operators (the math is in chainrule.ops) ------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return apply(_ops().add, self, lift(other, self))

    def __radd__(self, other: Any) -> Tensor:
        return apply(_ops().add, lift(other, self), self)

    def __sub__(self, other: Any) -> Tensor:
        return apply(_ops().sub, self, lift(other, self))

    def __rsub__(self, other: Any) -> Tensor:
        return apply(_ops().sub, lift(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return apply(_ops().mul, self, lift(other, self))

    def __rmul__(self, other: Any) -> Tensor:
        return apply(_ops().mul, lift(other, self), self)

    def __truediv__(self, other: Any) -> Tensor:
        return apply(_ops().div, self, lift(other, self))

    def __rtruediv__(self, other: Any) -> Tensor:
        return apply(_ops().div, lift(other, self), self)

    def __pow__(self, other: Any) -> Tensor:
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return apply(_ops().pow_scalar, self, exponent=other)
        return apply(_ops().pow, self, lift(other, self))

    def __rpow__(self, other: Any) -> Tensor:
        return apply(_ops().pow, lift(other, self), self)

    def __neg__(self) -> Tensor:
        return apply(_ops().neg, self)

    def __matmul__(self, other: Any) -> Tensor:
        other = lift(other, self)
        return apply(_ops().matmul, self, other, needs=(self.requires_grad, other.requires_grad))

    def __rmatmul__(self, other: Any) -> Tensor:
        other = lift(other, self)
        return apply(_ops().matmul, other, self, needs=(other.requires_grad, self.requires_grad))

    def __getitem__(self, index: Any) -> Tensor:
        return apply(_ops().getitem, self, index=_plain_index(index))

    # Comparisons give plain boolean tensors (no gradient), as in PyTorch.
    def __lt__(self, other: Any) -> Tensor:
        return _compare(np.less, self, other)

    def __le__(self, other: Any) -> Tensor:
        return _compare(np.less_equal, self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _compare(np.greater, self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _compare(np.greater_equal, self, other)

    # ---- methods that mirror chainrule.functional ------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over `axis` (all axes by default), as `np.sum`."""
        return apply(_ops().sum, self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over `axis` (all axes by default), as `np.mean`."""
        return apply(_ops().mean, self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Maximum over `axis` (all axes by default); tied maxima share the gradient equally."""
        return apply(_ops().max, self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Minimum over `axis` (all axes by default); tied minima share the gradient equally."""
        return -apply(_ops().max, -self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        """The same values in a new shape: `t.reshape(2, 3)` or `t.reshape((2, 3))`, -1 inferred."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(_ops().reshape, self, shape=shape)

    def flatten(self, start_dim: int = 0) -> Tensor:
        """Merge the axes from `start_dim` on into one: (b, h, w) -> (b, h·w) with start_dim=1."""
        return self.reshape(*self.shape[:start_dim], -1)

    def transpose(self, *axes: Any) -> Tensor:
        """Permute the axes (reverse them when none are given), as `np.transpose`."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return apply(_ops().transpose, self, axes=axes or None)

    @property
    def T(self) -> Tensor:
        """The tensor with its axes reversed: (m, n) -> (n, m)."""
        return apply(_ops().transpose, self, axes=None)

    def exp(self) -> Tensor:
        """eˣ elementwise (see `functional.exp`)."""
        return apply(_ops().exp, self)

    def log(self) -> Tensor:
        """ln x elementwise (see `functional.log`)."""
        return apply(_ops().log, self)

    def sqrt(self) -> Tensor:
        """√x elementwise (see `functional.sqrt`)."""
        return apply(_ops().sqrt, self)

    def abs(self) -> Tensor:
        """|x| elementwise (see `functional.abs`)."""
        return apply(_ops().abs, self)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        """x limited to [min, max] elementwise; `clamp` is the same (see `functional.clip`)."""
        return apply(_ops().clip, self, low=min, high=max)

    clamp = clip

    def sigmoid(self) -> Tensor:
        """σ(x) = 1 / (1 + e⁻ˣ) elementwise (see `functional.sigmoid`)."""
        return apply(_ops().sigmoid, self)

    def tanh(self) -> Tensor:
        """tanh(x) elementwise (see `functional.tanh`)."""
        return apply(_ops().tanh, self)

    def relu(self) -> Tensor:
        """max(x, 0) elementwise (see `functional.relu`)."""
        return apply(_ops().relu, self)

    def leaky_relu(self, negative_slope: float = 0.01) -> Tensor:
        """x where x > 0, else negative_slope·x (see `functional.leaky_relu`)."""
        return apply(_ops().leaky_relu, self, negative_slope=negative_slope)

    def gelu(self, approximate: str = "none") -> Tensor:
        """x·Φ(x) elementwise (see `functional.gelu`)."""
        return apply(_ops().gelu, self, approximate=approximate)

    def softplus(self) -> Tensor:
        """ln(1 + eˣ) elementwise (see `functional.softplus`)."""
        return apply(_ops().softplus, self)

    def softmax(self, axis: int = -1) -> Tensor:
        """softmax along `axis`: each slice sums to 1 (see `functional.softmax`)."""
        return apply(_ops().softmax, self, axis=axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        """ln softmax along `axis`, computed stably (see `functional.log_softmax`)."""
        return apply(_ops().log_softmax, self, axis=axis)

    def argmax(self, axis: Any = None) -> np.ndarray:
        """Indices of the maxima along `axis`, as a NumPy array (no gradient)."""
        return self.data.argmax(axis=axis)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Make a Tensor. Python floats and lists become float32; NumPy arrays keep their dtype.

    `dtype` converts on the way in; `requires_grad=True` (floating point only) makes it a leaf whose
    `.grad` `backward()` fills.

    >>> import numpy as np
    >>> tensor([1, 2])
    tensor([1., 2.])
    >>> tensor(np.array([1.0, 2.0]))
    tensor([1., 2.], dtype=float64)
    >>> tensor([1.0, 2.0], requires_grad=True)
    tensor([1., 2.], requires_grad=True)
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _ops():
    # Imported lazily once: chainrule.ops imports nothing from here, but this keeps the import
    # order free of cycles. After the first call it is a dictionary lookup.
    from chainrule import ops

    return ops


def _raw(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value


def _compare(ufunc: Callable, a: Tensor, other: Any) -> Tensor:
    b = _raw(other)
    out = ufunc(a.data, b)
    if tracing.active is not None:  # not an op (no gradient), so a compiled step re-runs it
        inputs = (a.data, b) if isinstance(b, np.ndarray) else (a.data,)
        tracing.active.call(
            (lambda x, y: (ufunc(x, y),)) if len(inputs) == 2 else (lambda x: (ufunc(x, b),)),
            inputs,
            (out,),
        )
    return Tensor(out)


def _plain_index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def lift(value: Any, like: Tensor) -> Tensor:
    """A Python number or array as a constant tensor; numbers take `like`'s dtype (no upcast)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (numbers.Number, np.generic)) and like.data.dtype.kind == "f":
        return Tensor(np.asarray(value, dtype=like.data.dtype))
    return Tensor(value)


class _Spares:
    """When the engine allocates through memory's block cache (chainrule/memory.py). Switching
    NumPy's allocator costs 1-2 µs, 7% of a small network's eager step, and only blocks of 256 KiB
    or more are kept: an op switches when its first input has `smallest_input` bytes or more (a
    first convolution's input is 200 KiB, its output 6 MiB), and a backward pass when such an op
    ran since the last one."""

    smallest_input = 1 << 16
    since_backward = False


_spares = _Spares()


def apply(op: Callable, *inputs: Tensor, **params: Any) -> Tensor:
    """Run a primitive op on the inputs' arrays and, if any input needs a gradient, record it.

    An op takes arrays and keyword parameters and returns `(out, backward)`, where `backward(g)`
    returns one gradient per input (None where an input has none). Gradients may keep the broadcast
    shape; the engine sums them back to each input's shape.
    """
    arrays = [t.data for t in inputs]
    if memory.AVAILABLE and arrays and arrays[0].nbytes >= _spares.smallest_input:
        _spares.since_backward = True
        previous = memory.use_spares()
        try:
            out, backward = op(*arrays, **params)
        finally:
            memory.restore(previous)
    else:
        out, backward = op(*arrays, **params)
    result = wrap(out)
    if tracing.active is not None:
        tracing.active.op(op, inputs, params, result)
    if _grad_enabled:
        for t in inputs:
            if t.requires_grad:
                result.requires_grad = True
                result._op = op.__name__
                result._parents = inputs
                result._backward = backward
                result._sequence = next(_sequence)
                break
    return result


def wrap(array: np.ndarray) -> Tensor:
    """A constant Tensor around an array known to be numeric, skipping `Tensor()`'s checks and
    conversions: the constructor of the hot paths (every op's output goes through it)."""
    t = Tensor.__new__(Tensor)
    t.data = array
    t.grad = None
    t.requires_grad = False
    t._op = None
    t._parents = ()
    t._backward = None
    t._sequence = 0
    t._retain_grad = False
    t._pending = None
    return t


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient over the axes NumPy broadcasting added or stretched, back to `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


def _run_backward(root: Tensor, seed: np.ndarray, retain_graph: bool) -> None:
    """Apply each node's vector-Jacobian product, newest node first.

    A node's gradient is complete once every node made after it has run, so processing nodes in
    decreasing creation order (a heap keyed by sequence number, as PyTorch's engine does) needs no
    separate topological sort.
    """
    recorder = tracing.active  # a compiled step's trace hears each event of the walk
    if root._op is None:  # backward() called on a leaf itself
        if recorder is not None:
            recorder.leaf(root, seed, None, root.grad is None)
        accumulate_into_leaf(root, seed, None)
        return
    # Each non-leaf gathers its incoming gradient in `_pending` until it is popped from the queue.
    root._pending = seed
    queue: list[tuple[int, Tensor]] = [(-root._sequence, root)]
    while queue:
        tensor_ = heappop(queue)[1]
        backward, parents, g = tensor_._backward, tensor_._parents, tensor_._pending
        tensor_._pending = None
        if backward is None:
            raise RuntimeError(_FREED_MESSAGE)
        if not retain_graph:
            tensor_._backward = None
            tensor_._parents = ()
        if tensor_._retain_grad:
            if recorder is not None:
                recorder.leaf(tensor_, g, g, tensor_.grad is None)
            accumulate_into_leaf(tensor_, g, g)
        grads = backward(g)
        if recorder is not None:
            recorder.backward_node(tensor_, parents, g, grads)
        for parent, parent_grad in zip(parents, grads):
            if parent_grad is None or not parent.requires_grad:
                continue
            if parent_grad.shape != parent.data.shape:
                before, parent_grad = parent_grad, unbroadcast(parent_grad, parent.data.shape)
                if recorder is not None:
                    recorder.unbroadcast(before, parent_grad)
            if parent._op is None:
                if recorder is not None:
                    recorder.leaf(parent, parent_grad, g, parent.grad is None)
                accumulate_into_leaf(parent, parent_grad, g)
            elif parent._pending is None:
                parent._pending = parent_grad
                heappush(queue, (-parent._sequence, parent))
            else:
                total = parent._pending + parent_grad
                if recorder is not None:
                    recorder.pending_sum(parent._pending, parent_grad, total)
                parent._pending = total


def accumulate_into_leaf(leaf: Tensor, g: np.ndarray, incoming: np.ndarray | None) -> None:
    """Add the gradient `g` to `leaf.grad` (in the leaf's dtype); `incoming` is the array that
    arrived at the node, which the leaf must not keep as its own .grad."""
    if g.dtype != leaf.data.dtype:
        g = g.astype(leaf.data.dtype)
    if leaf.grad is None:
        # The leaf owns its .grad (optimizers and users may update it in place), so an array that is
        # shared with another tensor's gradient or is a view of one is copied; fresh arrays are not.
        if g is incoming or g.base is not None:
            g = g.copy()
        leaf.grad = g
    else:
        leaf.grad += g
