"""`chainrule.compile`: trace a step once, then replay it without building a graph or running the
step's Python per op. Knows the engine and the ops; never nn, optim or train by name (they report
what they do through `chainrule.tracing`).

    step = chainrule.compile(train_step)     # or @chainrule.compile above `def train_step`
    loss = step(x, y)                        # first call with these shapes: traced (eager run)
    loss = step(x, y)                        # later calls: replayed

What a replay reproduces: every op, the backward walk, `optimizer.step()` (hyper-parameters read
from `param_groups` at each replay, so schedules and changed learning rates apply), `zero_grad`,
`optim.clip_grad_norm_`/`clip_grad_value_`, Dropout's draws (the same Generator, the same order as
eager) and BatchNorm's running statistics.

What it cannot: Python that depends on a value computed in the step. `.item()`, `float()`,
`bool()` (an `if` on a tensor), `.numpy()`, `.tolist()` or `np.asarray` on a tensor while
tracing raise `CompileError`, as does creating a Parameter (build the model and the optimizer
before compiling). Other Python in the step runs once, at the trace: a branch on a Python value
other than the arguments' shapes and dtypes and the layers' train/eval mode is frozen, and an
array made outside chainrule's ops (other than from the arguments) is a constant.
"""

from __future__ import annotations

import functools
import numbers
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from chainrule import tracing
from chainrule.compile.replay import MISS, Program
from chainrule.compile.trace import leaves, map_structure, record
from chainrule.tensor import Tensor

CompileError = tracing.CompileError

BACKENDS = ("auto", "c", "numpy", "python")
RESULTS = ("tensors", "views")

__all__ = ["BACKENDS", "RESULTS", "CompileError", "CompiledFunction", "compile"]


class CompiledFunction:
    """A function traced once per signature and replayed after; see `chainrule.compile`.

    `last_replay` says how the latest call ran: "trace" (the eager run that recorded it), or the
    replay used: "c" (the C interpreter, one call for the whole step), "numpy" (NumPy with
    preallocated buffers), "python" (each op's own function). `cache_info()` counts them, and the
    scans the C interpreter ran in one call.
    """

    def __init__(
        self,
        function: Callable,
        cache_size: int = 8,
        backend: str = "auto",
        results: str = "tensors",
    ) -> None:
        if not callable(function):
            raise TypeError(f"compile expects a function, got {type(function).__name__}")
        if backend not in BACKENDS:
            raise ValueError(
                f"compile: backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"compile: cache_size must be a positive int, got {cache_size!r}")
        if results not in RESULTS:
            raise ValueError(
                f"compile: results must be one of {', '.join(RESULTS)}, got {results!r}"
            )
        self.function = function
        self.results = results
        self.cache_size = cache_size
        self.backend = backend
        self._cache: OrderedDict[tuple, list[Program]] = OrderedDict()
        self.last_replay: str | None = None
        self._traces = self._replays = self._scans = 0
        self._last: tuple[tuple, Program] | None = None  # the latest replayed, checked first
        # The latest replayed's fast path (arrays only, a C replay): checks and runs in one go.
        self._fast: Callable[[tuple], Any] | None = None
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._fast
        if fast is not None and not kwargs and tracing.active is None:
            result = fast(args)
            if result is not MISS:
                self._replays += 1
                return result
        if tracing.active is not None and tracing.tracing_here():
            raise CompileError(
                "a compiled function was called inside another one being traced; compile only "
                "the outer function"
            )
        arguments, arrays, signature = _signature(args, kwargs)
        last = self._last
        if last is not None and last[0] == signature and last[1].matches():
            self._replays += 1
            self._fast = _fast_path(last[1], args, kwargs)
            return last[1].run(arrays)
        programs = self._cache.get(signature)
        if programs is not None:
            for program in programs:
                if program.matches():
                    self._cache.move_to_end(signature)
                    self._replays += 1
                    self._last = (signature, program)
                    self._fast = _fast_path(program, args, kwargs)
                    self.last_replay = program.kind
                    return program.run(arrays)
        names = list(kwargs)
        positional = arguments[: len(args)]
        keywords = dict(zip(names, arguments[len(args) :]))
        tensors = [a for a in arguments if isinstance(a, Tensor)]
        result, trace = record(lambda: self.function(*positional, **keywords), [], arrays, tensors)
        self._store(signature, Program(trace, self.backend, self.results == "views"))
        self._traces += 1
        self._last = self._fast = None
        self.last_replay = "trace"
        return _arrays_of(result) if self.results == "views" else result

    def scan(self, *arrays: np.ndarray, batch_size: int, repeat: int = 1) -> Any:
        """Call the function on consecutive batches of `arrays` (rows [k·b, (k+1)·b) of each, every
        full batch in order, all of that `repeat` times) and return its results stacked: each
        result gains a first axis, one entry per call. The same calls as the loop
        `for batch in batches: f(*batch)`, the same numbers; where the C interpreter runs the
        step (traced already, no Dropout), all of them in one call into C: a small network's
        epoch without Python per step. Rows past the last full batch are left out.

        >>> import numpy as np, chainrule as cr
        >>> double = cr.compile(lambda x: cr.tensor(x) * 2.0)
        >>> double.scan(np.arange(4.0), batch_size=2).tolist()
        [[0.0, 2.0], [4.0, 6.0]]
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"scan: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"scan: repeat must be a positive int, got {repeat!r}")
        if not arrays or not all(type(a) is np.ndarray and a.ndim >= 1 for a in arrays):
            raise TypeError("scan: pass the arguments as NumPy arrays with a batch axis")
        rows = len(arrays[0])
        if any(len(a) != rows for a in arrays):
            lengths = ", ".join(str(len(a)) for a in arrays)
            raise ValueError(f"scan: the arrays must have as many rows each, got {lengths}")
        per_pass = rows // batch_size
        if per_pass == 0:
            raise ValueError(f"scan: batch_size {batch_size} is larger than the {rows} rows")
        first = tuple(a[:batch_size] for a in arrays)
        steps, done, stacked = per_pass * repeat, 0, None
        if self._ready(first) is None:  # no C program yet: the first call traces (or replays)
            stacked = _Stacked(_arrays_of(self(*first)), steps)
            done = 1
        program = self._ready(first)
        if program is not None and (repeat == 1 or per_pass == 1):
            rest = tuple(a[done * batch_size :] for a in arrays) if per_pass > 1 else arrays
            strides = tuple(0 if per_pass == 1 else a[:batch_size].nbytes for a in arrays)
            scanned = program.native.scan(rest, strides, steps - done)
            if scanned is not None:
                self._replays += steps - done
                self._scans += 1
                if stacked is not None:
                    stacked.put_stacked(1, scanned)
                    scanned = stacked.result()
                return scanned if self.results == "views" else _tensors_of(scanned)
        for k in range(done, steps):  # one call per batch, each result copied into its place
            at = (k % per_pass) * batch_size
            result = _arrays_of(self(*(a[at : at + batch_size] for a in arrays)))
            if stacked is None:
                stacked = _Stacked(result, steps)
            else:
                stacked.put(k, result)
        result = stacked.result()
        return result if self.results == "views" else _tensors_of(result)

    def _ready(self, arrays: tuple) -> Program | None:
        """The kept C program for these arguments, its guards holding; else None."""
        if tracing.active is not None:
            return None
        _, _, signature = _signature(arrays, {})
        for program in self._cache.get(signature, ()):
            if program.native is not None and program.matches():
                return program
        return None

    def _store(self, signature: tuple, program: Program) -> None:
        self._cache.setdefault(signature, []).insert(0, program)
        self._cache.move_to_end(signature)
        while sum(len(programs) for programs in self._cache.values()) > self.cache_size:
            oldest = next(iter(self._cache))
            self._cache[oldest].pop()
            if not self._cache[oldest]:
                del self._cache[oldest]
        self._last = self._fast = None

    def cache_info(self) -> dict[str, Any]:
        """Traces made, replays run (a scan's steps included), scans run in one call into C,
        traces kept, and how each kept trace replays."""
        kept = [program for programs in self._cache.values() for program in programs]
        return {
            "traces": self._traces,
            "replays": self._replays,
            "scans": self._scans,
            "cached": len(kept),
            "replay": [program.kind for program in kept],
        }

    def clear(self) -> None:
        """Forget every trace (the next call traces again)."""
        self._cache.clear()
        self._last = self._fast = None


def compile(
    function: Callable | None = None,
    *,
    cache_size: int = 8,
    backend: str = "auto",
    results: str = "tensors",
) -> Any:
    """Compile a step (or any function of tensors): trace on the first call per signature, then
    replay. Usable as `compile(f)`, `@compile` or `@compile(backend="numpy")`.

    The signature is the arguments' kinds, shapes and dtypes (Python numbers and strings by
    value); a trace is also redone when a parameter's array is replaced, a layer switches between
    train and eval, or a `.grad` the step adds to appears or disappears. The `cache_size` latest
    traces are kept. `backend`: "auto" (the C interpreter where the extension was built and the
    step fits it, else NumPy), "numpy", "python" (each op's own function; the slowest replay and
    the reference), or "c" (as auto). CHAINRULE_NO_KERNELS=1 disables the C interpreter too.

    `results`: "tensors" (fresh Tensors without a graph, each call's its own) or "views": NumPy
    arrays that are the replay's own buffers, overwritten by the next call. Views save a copy and
    a Tensor per result each call, which counts when the step takes a few µs; they suit a loop
    that reads each result before the next call (as `fit` does: `loss.item()`, an accuracy).

    Returns a `CompiledFunction`.

    >>> import numpy as np, chainrule as cr
    >>> double = cr.compile(lambda x: cr.tensor(x) * 2.0)
    >>> double(np.ones(2)).tolist(), double(np.arange(2.0)).tolist()
    ([2.0, 2.0], [0.0, 2.0])
    """
    if function is None:
        return lambda f: CompiledFunction(f, cache_size, backend, results)
    return CompiledFunction(function, cache_size, backend, results)


def _fast_path(program: Program, args: tuple, kwargs: dict) -> Callable[[tuple], Any] | None:
    """The program's fast path where this call is its kind (arrays only), else None. Built once
    per program: a replay switching between two traces would otherwise rebuild it per call."""
    if kwargs or not all(type(value) is np.ndarray for value in args):
        return None
    if program.fast is False:
        program.fast = program.fast_path()
    return program.fast


def _signature(args: tuple, kwargs: dict) -> tuple[Any, list[np.ndarray], tuple]:
    """The arguments as the function will get them, their arrays (slots of the trace), and the
    hashable key a trace is cached under."""
    if not kwargs:  # the usual call: arrays only
        key: list[Any] = [()]
        for value in args:
            if type(value) is not np.ndarray:
                break
            key.append((value.shape, value.dtype))
        else:
            return args, list(args), tuple(key)
    arguments, arrays, key = [], [], [tuple(kwargs)]
    for value in (*args, *kwargs.values()) if kwargs else args:
        kind = type(value)
        if kind is np.ndarray:
            arrays.append(value)
            key.append((value.shape, value.dtype))
        elif isinstance(value, Tensor):
            data = value.data
            arrays.append(data)
            key.append((data.shape, data.dtype, value.requires_grad))
        elif value is None or isinstance(value, (numbers.Number, str, bytes)):
            key.append(("value", kind, value))
        else:
            value = _as_array(value)
            arrays.append(value)
            key.append((value.shape, value.dtype))
        arguments.append(value)
    return arguments, arrays, tuple(key)


def _arrays_of(result: Any) -> Any:
    """A call's result as `results="views"` gives it: each Tensor as its array, and each NumPy
    scalar an op may leave as a 0-d array (so that a scan can stack every result)."""
    return map_structure(
        lambda value: np.asarray(getattr(value, "data", value)), result, (Tensor, np.generic)
    )


class _Stacked:
    """A scan's results: each array result of the first call gets an array with room for every
    step (a new first axis), which later calls' results are copied into."""

    def __init__(self, first: Any, steps: int) -> None:
        self.structure = first
        self.leaves = [
            np.empty((steps, *leaf.shape), leaf.dtype) for leaf in leaves(first, np.ndarray)
        ]
        self.put(0, first)

    def put(self, step: int, result: Any) -> None:
        for stacked, leaf in zip(self.leaves, leaves(result, np.ndarray)):
            stacked[step] = leaf

    def put_stacked(self, start: int, result: Any) -> None:
        for stacked, part in zip(self.leaves, leaves(result, np.ndarray)):
            stacked[start : start + len(part)] = part

    def result(self) -> Any:
        stacked = iter(self.leaves)
        return map_structure(lambda _: next(stacked), self.structure, np.ndarray)


def _tensors_of(result: Any) -> Any:
    return map_structure(Tensor, result, np.ndarray)


def _as_array(value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"compiled function: an argument of type {type(value).__name__} is neither a tensor, "
            f"an array nor a number: {error}"
        ) from None
    if array.dtype == object:
        raise TypeError("compiled function: an argument converts to an object array")
    return array
