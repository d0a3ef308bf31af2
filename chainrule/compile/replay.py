"""Replays of a Trace: a flat list of closures over a list of value slots, run in order.

Two builds from one trace. `python`: each op's own function is called again and each backward
closure it returns, exactly as the eager walk would (no graph, no Tensors, no user code; the
reference replay). `numpy`: ops with a replay kernel (numpy_ops.py) write into preallocated
buffers; the others fall back to the `python` way, so every op stays correct.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from chainrule import kernels
from chainrule.compile import native, numpy_ops
from chainrule.compile.trace import SlotRef, Trace, map_structure
from chainrule.tensor import accumulate_into_leaf, unbroadcast, wrap

MISS = object()  # what a fast path returns when the call is not its common case


class Program:
    """A runnable replay of one trace. `run(arrays)` takes the call's argument arrays; `views`:
    results are the buffers themselves (overwritten by the next run), not fresh Tensors."""

    def __init__(self, trace: Trace, backend: str = "auto", views: bool = False) -> None:
        self.trace = trace
        self.views = views
        self.values: list[Any] = [None] * trace.slot_count
        for slot, array in trace.constants.items():
            self.values[slot] = array
        self._buffers: set[int] = set()
        self.steps = self._build(backend != "python")
        self.native = native.build(trace, views) if backend in ("auto", "c") else None
        self.kind = "c" if self.native is not None else "python" if backend == "python" else "numpy"
        self.fast: Callable[[tuple], Any] | None | bool = False  # built on first use (__init__)

    # ---- guards ----------------------------------------------------------------------------
    def matches(self) -> bool:
        """Whether this trace still describes the step: same parameter arrays, train/eval
        flags, and `.grad` present or absent where the trace depended on it."""
        for tensor, array in self.trace.parameters:
            if tensor.data is not array:
                return False
        for read, value in self.trace.guards:
            if read() != value:
                return False
        for tensor, was_none in self.trace.grad_entry:
            if (tensor.grad is None) != was_none:
                return False
        return True

    # ---- running ---------------------------------------------------------------------------
    def fast_path(self) -> Callable[[tuple], Any] | None:
        """The whole call for its common case, where each call's Python counts (a small network's
        C replay is a few µs): `fast(args)` runs the step and returns its result when `args` are
        arrays of the traced shapes and dtypes and the guards hold, else returns MISS having done
        nothing, and the caller takes the general path."""
        native = self.native
        if native is not None and kernels.replay_at is None:
            return None  # an extension built before replay_at: the general path
        shapes = self.trace.shapes
        arguments = tuple(shapes[slot] for slot in self.trace.arg_slots)
        count = len(arguments)
        parameters = tuple(self.trace.parameters)
        other_guards = bool(self.trace.guards or self.trace.grad_entry)
        ndarray = np.ndarray
        if native is None:
            return self._steps_fast_path(arguments, parameters, other_guards)
        matches, refresh, prologue = self.matches, native.refresh, native.prologue
        replay_at, rerun, finish = kernels.replay_at, native.rerun, native.finish
        code, scalars, is_double = native.code_address, native.scalars_address, native.is_double

        if not prologue:
            # The interpreter checks the arguments' shapes and dtypes itself (-3: not these).
            expected = native.expected_address

            def fast(args: tuple) -> Any:
                for tensor, array in parameters:
                    if tensor.data is not array:
                        return MISS
                if other_guards and not matches():
                    return MISS
                if not refresh():
                    return MISS  # the general path replays in NumPy
                done = replay_at(code, scalars, is_double, expected, *args)
                if done != 1:
                    if done == -3:
                        return MISS
                    rerun(done, args)
                return finish()

            return fast

        def fast(args: tuple) -> Any:
            # A prologue draws from a Generator: the arguments are checked before it runs.
            if len(args) != count:
                return MISS
            for array, (shape, dtype) in zip(args, arguments):
                if type(array) is not ndarray or array.shape != shape or array.dtype is not dtype:
                    return MISS
            for tensor, array in parameters:
                if tensor.data is not array:
                    return MISS
            if other_guards and not matches():
                return MISS
            if not refresh():
                return MISS
            for step in prologue:
                step(args)
            done = replay_at(code, scalars, is_double, 0, *args)
            if done != 1:
                rerun(done, args)
            return finish()

        return fast

    def _steps_fast_path(
        self, arguments: tuple, parameters: tuple, other_guards: bool
    ) -> Callable[[tuple], Any]:
        """fast_path for the NumPy and Python replays: the same checks, then the steps."""
        count, ndarray = len(arguments), np.ndarray
        matches, steps, v, output = self.matches, self.steps, self.values, self.trace.output
        slots, views = tuple(self.trace.arg_slots), self.views

        def fast(args: tuple) -> Any:
            if len(args) != count:
                return MISS
            for array, (shape, dtype) in zip(args, arguments):
                if type(array) is not ndarray or array.shape != shape or array.dtype is not dtype:
                    return MISS
            for tensor, array in parameters:
                if tensor.data is not array:
                    return MISS
            if other_guards and not matches():
                return MISS
            for slot, array in zip(slots, args):
                v[slot] = array
            for step in steps:
                step(v)
            if type(output) is SlotRef and not views:
                return wrap(np.array(v[output.slot], copy=True))
            return _rebuild(output, v, views)

        return fast

    def run(self, arrays: list[np.ndarray]) -> Any:
        if self.native is not None:
            done, result = self.native.run(arrays)
            if done:
                return result
        v = self.values
        for slot, array in zip(self.trace.arg_slots, arrays):
            v[slot] = array
        for step in self.steps:
            step(v)
        return _rebuild(self.trace.output, v, self.views)

    # ---- building ----------------------------------------------------------------------------
    def _buffer(self, slot: int) -> np.ndarray:
        shape, dtype = self.trace.shapes[slot]
        array = np.empty(shape, dtype)
        self.values[slot] = array
        self._buffers.add(slot)
        return array

    def _build(self, fast: bool) -> list[Callable]:
        events = self.trace.events
        kernels: dict[int, tuple] = {}
        if fast:
            vjp_of = {e[1]: e for e in events if e[0] == "vjp"}
            for index, event in enumerate(events):
                if event[0] == "op" and event[1] in numpy_ops.MAKERS:
                    kernel = self._kernel(event, vjp_of.get(index))
                    if kernel is not None:
                        kernels[index] = kernel
        self.kernel_ops = len(kernels)
        self.fallback_ops = sum(1 for e in events if e[0] == "op") - len(kernels)
        steps = []
        for index, event in enumerate(events):
            kind = event[0]
            if kind == "op" and index in kernels:
                steps.append(kernels[index][0])
            elif kind == "vjp" and event[1] in kernels:
                steps.append(kernels[event[1]][1])
            else:
                steps.append(_GENERIC[kind](event, events, self, fast))
        return steps

    def _kernel(self, event: tuple, vjp: tuple | None) -> tuple | None:
        _, op, ins, params, out, _ = event
        if any(isinstance(value, SlotRef) for value in params.values()):
            return None
        spec = numpy_ops.Spec(
            ins=ins,
            params=params,
            out=out,
            g=None if vjp is None else vjp[2],
            grads=(None,) * len(ins) if vjp is None else vjp[3],
            shapes=self.trace.shapes,
            buffer=self._buffer,
        )
        kernel = numpy_ops.MAKERS[op](spec)
        if kernel is None or (vjp is not None and kernel[1] is None):
            return None
        return kernel


def _rebuild(structure: Any, v: list, views: bool = False) -> Any:
    """The call's result: fresh Tensors (copies: a buffer is overwritten by the next replay), or
    with `views` the arrays themselves."""
    if views:
        return map_structure(lambda ref: v[ref.slot], structure, SlotRef)
    return map_structure(lambda ref: wrap(np.array(v[ref.slot], copy=True)), structure, SlotRef)


# ---- the generic steps: one closure per event, calling the engine's own functions ---------------
def _resolve(value: Any, v: list) -> Any:
    if isinstance(value, SlotRef):
        return v[value.slot]
    if isinstance(value, tuple):
        return tuple(_resolve(item, v) for item in value)
    return value


def _has_ref(value: Any) -> bool:
    if isinstance(value, SlotRef):
        return True
    return isinstance(value, tuple) and any(_has_ref(item) for item in value)


def _op(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, op, ins, params, out, closure = event
    if any(_has_ref(value) for value in params.values()):

        def run(v: list) -> None:
            resolved = {key: _resolve(value, v) for key, value in params.items()}
            v[out], v[closure] = op(*[v[i] for i in ins], **resolved)

    elif len(ins) == 1:
        (a,) = ins

        def run(v: list) -> None:
            v[out], v[closure] = op(v[a], **params)

    elif len(ins) == 2:
        a, b = ins

        def run(v: list) -> None:
            v[out], v[closure] = op(v[a], v[b], **params)

    else:

        def run(v: list) -> None:
            v[out], v[closure] = op(*[v[i] for i in ins], **params)

    return run


def _vjp(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, op_index, g, outs = event
    closure = events[op_index][5]
    pairs = [(k, slot) for k, slot in enumerate(outs) if slot is not None]

    def run(v: list) -> None:
        grads = v[closure](v[g])
        for k, slot in pairs:
            v[slot] = grads[k]

    return run


def _unbroadcast(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, before, after = event
    shape = program.trace.shapes[after][0]

    def run(v: list) -> None:
        v[after] = unbroadcast(v[before], shape)

    return run


def _sum(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, a, b, total = event
    if fast:
        out = program._buffer(total)

        def run(v: list) -> None:
            np.add(v[a], v[b], out=out)

    else:

        def run(v: list) -> None:
            v[total] = v[a] + v[b]

    return run


def _leaf(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, tensor, g, incoming = event
    if not fast:

        def run(v: list) -> None:
            accumulate_into_leaf(tensor, v[g], None if incoming is None else v[incoming])

        return run
    # A replay buffer is rewritten by the next replay, so `.grad` keeps one only where a recorded
    # zero_grad resets the leaf before the buffer is written again; otherwise it gets a copy.
    alias = g in program._buffers and _reset_before_written(events, tensor, g)
    dtype = tensor.data.dtype

    def run(v: list) -> None:
        grad = v[g]
        if tensor.grad is None:
            if grad.dtype != dtype:
                tensor.grad = grad.astype(dtype)
            else:
                tensor.grad = grad if alias else grad.copy()
        else:
            tensor.grad += grad if grad.dtype == dtype else grad.astype(dtype)

    return run


def _reset_before_written(events: list, tensor: Any, slot: int) -> bool:
    """Whether a zero_grad of `tensor` comes before the event that writes `slot`, and the slot
    goes to this leaf alone."""
    readers = 0
    for event in events:
        if event[0] == "leaf" and event[2] == slot:
            readers += 1
    if readers != 1:
        return False
    for event in events:
        if event[0] == "forget" and any(t is tensor for t in event[1]):
            return True
        if event[0] == "vjp" and slot in event[3]:
            return False
        if event[0] in ("sum", "unbroadcast") and event[-1] == slot:
            return False
    return False


def _forget(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    tensors = event[1]

    def run(v: list) -> None:
        for tensor in tensors:
            tensor.grad = None

    return run


def _source(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, make, out = event

    def run(v: list) -> None:
        v[out] = make()

    return run


def _call(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, function, ins, outs = event

    def run(v: list) -> None:
        results = function(*[v[i] for i in ins])
        for slot, result in zip(outs, results):
            v[slot] = result

    return run


def _effect(event: tuple, events: list, program: Program, fast: bool) -> Callable:
    _, function, ins, _ = event
    if not ins:

        def run(v: list) -> None:
            function()

    else:

        def run(v: list) -> None:
            function(*[v[i] for i in ins])

    return run


_GENERIC = {
    "op": _op,
    "vjp": _vjp,
    "unbroadcast": _unbroadcast,
    "sum": _sum,
    "leaf": _leaf,
    "forget": _forget,
    "source": _source,
    "call": _call,
    "effect": _effect,
}
