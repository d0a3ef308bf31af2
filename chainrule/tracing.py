"""The hooks a compiled step records through: while `chainrule.compile` traces a function, `active`
is its recorder; at every other time it is None, and each hook costs one module-level None check.

This module sits with the engine (it imports nothing from chainrule), so that `tensor.apply`, the
backward walk, the optimizers, clipping, Dropout and BatchNorm can all report to it; the recorder
itself and the replay live in `chainrule.compile`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class CompileError(RuntimeError):
    """A step does something a compiled replay cannot reproduce (it says what, and what to do)."""


class Recorder(Protocol):
    """What the engine and the layers tell a trace (implemented in chainrule.compile)."""

    def op(self, op: Callable, inputs: tuple, params: dict, result: Any) -> None:
        """A primitive ran: `result` (a Tensor) = op(*inputs' arrays, **params)."""

    def backward_node(self, node: Any, parents: tuple, g: np.ndarray, grads: Any) -> None:
        """The backward walk applied node's vector-Jacobian product to g, giving `grads`."""

    def unbroadcast(self, before: np.ndarray, after: np.ndarray) -> None:
        """A gradient was summed back to its input's shape."""

    def pending_sum(self, first: np.ndarray, second: np.ndarray, total: np.ndarray) -> None:
        """Two gradients reaching one node were added."""

    def leaf(self, leaf: Any, g: np.ndarray, incoming: np.ndarray | None, fresh: bool) -> None:
        """A gradient is about to go into `leaf.grad` (`fresh`: it was None, so it is set)."""

    def source(self, array: np.ndarray, make: Callable[[], np.ndarray]) -> None:
        """`array` was made outside the ops by `make()`, to be called again at every replay."""

    def call(self, function: Callable, inputs: tuple, outputs: tuple) -> None:
        """`outputs` = function(*inputs) on arrays outside the ops, to be re-run at replay."""

    def effect(
        self, function: Callable[[], Any], inputs: tuple = (), native: Callable | None = None
    ) -> None:
        """A side effect `function(*inputs)` (optimizer update, clipping, running statistics).

        `native`, where given, describes the same effect to the C interpreter (the optimizers':
        see `Optimizer._native_updates`); without one, a step with this effect replays in NumPy.
        """

    def forget_grads(self, leaves: list) -> None:
        """`zero_grad()` set these leaves' `.grad` to None."""

    def guard(self, read: Callable[[], Any]) -> None:
        """The trace depends on `read()` keeping its current value (a module's train flag)."""


active: Recorder | None = None


def tracing_here() -> bool:
    """Whether the active trace (if any) is this thread's."""
    return active is not None and getattr(active, "thread", None) in (None, threading.get_ident())


def refuse(what: str) -> None:
    """Raise a CompileError if a trace is running in this thread: `what` reads a traced value."""
    if tracing_here():
        raise CompileError(
            f"{what} reads a tensor's value in Python while chainrule.compile traces the step; a "
            "replay cannot run Python that depends on values. Return the tensor from the step "
            "and read it after the call (e.g. `loss = step(x, y); loss.item()`), or call the "
            "function without compile"
        )
