"""Tracing: run a step once with `tracing.active` set, and keep what it did as a flat list of
events over numbered value slots (a `Trace`). Replays are built from it in replay.py.

Every array that flows through the step gets a slot: the call's arguments, each op's output, each
gradient of the backward walk, arrays drawn by Dropout. Arrays the step did not compute (the
parameters, constants such as a Python number lifted to a tensor) are kept by reference as
constants; parameters are guarded by identity, so replacing their arrays makes a new trace.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chainrule import tracing
from chainrule.tensor import Tensor

CompileError = tracing.CompileError


@dataclass(eq=False)
class SlotRef:
    """A parameter of an op that is an array computed in the step (an index of class labels)."""

    slot: int


@dataclass
class Trace:
    """What one traced call did. `events` are tuples whose first item names the kind:

    ("op", op, in_slots, params, out_slot, closure_slot)   out, backward = op(*ins, **params)
    ("vjp", op_event, g_slot, out_slots)                    grads = backward(g) (None: unused)
    ("unbroadcast", in_slot, out_slot)                      summed back to the out slot's shape
    ("sum", a_slot, b_slot, out_slot)                       two gradients of one node added
    ("leaf", tensor, g_slot, incoming_slot)                 into tensor.grad (set, or +=)
    ("forget", tensors)                                     zero_grad: tensor.grad = None
    ("source", make, out_slot)                              out = make() (Dropout's mask)
    ("call", function, in_slots, out_slots)                 outs = function(*ins)
    ("effect", function, in_slots, native)                  function(*ins), for its side effect
    """

    events: list[tuple] = field(default_factory=list)
    shapes: list[tuple] = field(default_factory=list)  # per slot: (shape, dtype), or None
    constants: dict[int, Any] = field(default_factory=dict)  # slot -> array kept by reference
    arg_slots: list[int] = field(default_factory=list)
    guards: list[tuple[Callable[[], Any], Any]] = field(default_factory=list)
    parameters: list[tuple[Tensor, np.ndarray]] = field(default_factory=list)
    grad_entry: list[tuple[Tensor, bool]] = field(default_factory=list)  # leaf, grad is None
    output: Any = None  # the result's structure, with slot numbers for its tensors

    @property
    def slot_count(self) -> int:
        return len(self.shapes)


def _traced_thread_only(method: Callable) -> Callable:
    """Hooks reached from other threads (a server answering requests while a step is traced) are
    not part of the step: they are ignored."""

    @functools.wraps(method)
    def hook(self: Recorder, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self.thread:
            return method(self, *args, **kwargs)
        return None

    return hook


class Recorder:
    """Implements `tracing.Recorder`: maps arrays to slots (by identity; every array seen is kept
    alive until the trace ends, so no id is reused) and appends events."""

    def __init__(self, arguments: list[np.ndarray]) -> None:
        self.thread = threading.get_ident()
        self.trace = Trace()
        self._slot: dict[int, int] = {}
        self._alive: list[Any] = []
        self._node: dict[int, int] = {}  # id(tensor) -> index of the "op" event that made it
        self._forgotten: set[int] = set()  # leaves whose .grad a recorded zero_grad reset
        self._guarded: set[int] = set()
        self._guarded_grads: set[int] = set()
        self._arguments = arguments
        self.argument_tensors: list[Tensor] = []  # the call's Tensor arguments (set by record)
        for array in arguments:
            self.trace.arg_slots.append(self._new(array))

    # ---- slots ------------------------------------------------------------------------------
    def _new(self, array: Any) -> int:
        slot = len(self.trace.shapes)
        if isinstance(array, (np.ndarray, np.generic)):  # an op may return a NumPy scalar
            self.trace.shapes.append((np.shape(array), array.dtype))
        else:
            self.trace.shapes.append(None)
        self._slot[id(array)] = slot
        self._alive.append(array)
        return slot

    def _find(self, array: Any, owner: Tensor | None = None) -> int:
        """The slot of an array the step reads: one seen before, or a new constant."""
        slot = self._slot.get(id(array))
        if slot is not None:
            return slot
        if isinstance(array, np.ndarray):
            for i, argument in enumerate(self._arguments):
                if np.shares_memory(array, argument):
                    raise CompileError(
                        f"argument {i} of the compiled function was sliced or reshaped outside "
                        "chainrule's ops, so a replay cannot follow it; wrap it in a Tensor first "
                        "(chainrule.tensor(x)[...]) or pass the part as its own argument"
                    )
            sources = {id(a): i for i, a in enumerate(self._arguments) if _derived_from(array, a)}
            if len(sources) > 1:
                raise CompileError(
                    "an argument was converted to another dtype outside chainrule's ops, and "
                    "several arguments hold the same values, so a replay cannot tell which; pass "
                    "the arguments in the network's dtype"
                )
            if sources:
                # An argument converted outside the ops (a float64 batch given to a float32
                # layer): replayed as the same conversion of the new argument.
                (i,) = sources.values()
                slot = self._new(array)
                convert = functools.partial(_converted, dtype=array.dtype)
                self.trace.events.append(("call", convert, (self.trace.arg_slots[i],), (slot,)))
                return slot
        slot = self._new(array)
        self.trace.constants[slot] = array
        if owner is not None and owner.requires_grad and owner.is_leaf:
            if id(owner) not in self._guarded:
                self._guarded.add(id(owner))
                self.trace.parameters.append((owner, array))
        return slot

    def _param(self, value: Any) -> Any:
        if isinstance(value, np.ndarray) and id(value) in self._slot:
            return SlotRef(self._slot[id(value)])
        if isinstance(value, tuple):
            return tuple(self._param(v) for v in value)
        return value

    # ---- the tracing.Recorder protocol -------------------------------------------------------
    @_traced_thread_only
    def op(self, op: Callable, inputs: tuple, params: dict, result: Tensor) -> None:
        ins = tuple(self._find(t.data, t) for t in inputs)
        params = {key: self._param(value) for key, value in params.items()}
        out = self._new(result.data)
        closure = self._new(None)
        self._node[id(result)] = len(self.trace.events)
        self._alive.append(result)
        self.trace.events.append(("op", op, ins, params, out, closure))

    @_traced_thread_only
    def backward_node(self, node: Tensor, parents: tuple, g: np.ndarray, grads: Any) -> None:
        event = self._node.get(id(node))
        if event is None:
            raise CompileError(
                "backward() reached a tensor computed before the compiled function was called; "
                "compute the whole forward pass inside it"
            )
        g_slot = self._find(g)
        outs = []
        for parent, grad in zip(parents, grads):
            used = grad is not None and parent.requires_grad
            outs.append(self._new(grad) if used else None)
        self.trace.events.append(("vjp", event, g_slot, tuple(outs)))

    @_traced_thread_only
    def unbroadcast(self, before: np.ndarray, after: np.ndarray) -> None:
        self.trace.events.append(("unbroadcast", self._find(before), self._new(after)))

    @_traced_thread_only
    def pending_sum(self, first: np.ndarray, second: np.ndarray, total: np.ndarray) -> None:
        self.trace.events.append(("sum", self._find(first), self._find(second), self._new(total)))

    @_traced_thread_only
    def leaf(self, leaf: Tensor, g: np.ndarray, incoming: np.ndarray | None, fresh: bool) -> None:
        if any(leaf is argument for argument in self.argument_tensors):
            raise CompileError(
                "the step takes a gradient with respect to one of its arguments; a replay gets "
                "new argument tensors each call and could not give them .grad. Compute input "
                "gradients without compile"
            )
        if id(leaf) not in self._forgotten and id(leaf) not in self._guarded_grads:
            # The gradient did (or did not) exist before the step: a replay needs the same.
            self._guarded_grads.add(id(leaf))
            self.trace.grad_entry.append((leaf, leaf.grad is None))
        incoming_slot = None if incoming is None else self._find(incoming)
        self.trace.events.append(("leaf", leaf, self._find(g), incoming_slot))

    @_traced_thread_only
    def forget_grads(self, leaves: list) -> None:
        self._forgotten.update(id(t) for t in leaves)
        self.trace.events.append(("forget", list(leaves)))

    @_traced_thread_only
    def source(self, array: np.ndarray, make: Callable[[], np.ndarray]) -> None:
        self.trace.events.append(("source", make, self._new(array)))

    @_traced_thread_only
    def call(self, function: Callable, inputs: tuple, outputs: tuple) -> None:
        ins = tuple(self._find(a) for a in inputs)
        self.trace.events.append(("call", function, ins, tuple(self._new(a) for a in outputs)))

    @_traced_thread_only
    def effect(
        self, function: Callable[[], Any], inputs: tuple = (), native: Callable | None = None
    ) -> None:
        ins = tuple(self._find(a) for a in inputs)
        self.trace.events.append(("effect", function, ins, native))

    @_traced_thread_only
    def guard(self, read: Callable[[], Any]) -> None:
        self.trace.guards.append((read, read()))

    # ---- the end of the trace ------------------------------------------------------------
    def finish(self, result: Any) -> Trace:
        self.trace.output = self._structure(result)
        self._slot.clear()
        self._alive.clear()
        self._node.clear()
        return self.trace

    def _structure(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Tensor):
            return SlotRef(self._find(value.data, value))
        if isinstance(value, (tuple, list)):
            return type(value)(self._structure(v) for v in value)
        if isinstance(value, dict):
            return {key: self._structure(v) for key, v in value.items()}
        raise CompileError(
            f"a compiled function must return tensors (or tuples, lists and dicts of them, or "
            f"None), got a {type(value).__name__}: a replay cannot recompute Python values. "
            "Return it as a tensor, or compute it outside the compiled function"
        )


def map_structure(
    function: Callable[[Any], Any], structure: Any, leaf: type | tuple[type, ...]
) -> Any:
    """A call's result (tuples, lists and dicts of `leaf`s, or None) with each `leaf` replaced by
    `function(leaf)`; anything else kept as it is. The one walk over results that tracing,
    replays and scans share."""
    if isinstance(structure, leaf):
        return function(structure)
    if isinstance(structure, (tuple, list)):
        return type(structure)(map_structure(function, item, leaf) for item in structure)
    if isinstance(structure, dict):
        return {key: map_structure(function, item, leaf) for key, item in structure.items()}
    return structure


def leaves(structure: Any, leaf: type | tuple[type, ...]) -> list[Any]:
    """The `leaf`s of a result, in order."""
    found: list[Any] = []
    map_structure(found.append, structure, leaf)
    return found


def _converted(array: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray]:
    return (array.astype(dtype),)


def _derived_from(array: np.ndarray, argument: np.ndarray) -> bool:
    """Whether `array` is `argument` converted to another dtype (equal values, same shape)."""
    return (
        array.shape == argument.shape
        and array.dtype != argument.dtype
        and array.size > 0
        and not np.shares_memory(array, argument)
        and np.array_equal(array, argument.astype(array.dtype))
    )


def record(
    function: Callable, arguments: list[Any], arrays: list[np.ndarray], tensors: list[Tensor] = ()
) -> tuple[Any, Trace]:
    """Run `function(*arguments)` once, eagerly, while recording; return its result and trace.
    `tensors` are the call's Tensor arguments (a step may not take gradients into them)."""
    if tracing.active is not None:
        raise CompileError("a compiled function was called while another one was being traced")
    recorder = Recorder(arrays)
    recorder.argument_tensors = list(tensors)
    tracing.active = recorder
    try:
        result = function(*arguments)
    finally:
        tracing.active = None
    return result, recorder.finish(result)
