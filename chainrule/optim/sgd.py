"""SGD: stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from chainrule import kernels
from chainrule.optim.optimizer import Optimizer
from chainrule.validation import check_flag, check_number


class SGD(Optimizer):
    r"""Stochastic gradient descent, as `torch.optim.SGD`.

    For each parameter p with gradient g, at step t:

        g ← g + weight_decay·p
        b ← g                                   (t = 1)
        b ← momentum·b + (1 − dampening)·g      (t > 1)
        g ← g + momentum·b   if nesterov,  else  g ← b        (only when momentum ≠ 0)
        p ← p − lr·g

    Example: one step with lr=0.1 and no momentum on p = [1, 2], g = [0.5, −1] gives [0.95, 2.1].
    """

    _state_arrays = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> dict[str, Any]:
        name = self._name
        group = dict(group)
        group["lr"] = check_number(name, "lr", group["lr"])
        group["momentum"] = check_number(name, "momentum", group["momentum"])
        group["dampening"] = check_number(name, "dampening", group["dampening"], 0.0, 1.0)
        group["weight_decay"] = check_number(name, "weight_decay", group["weight_decay"])
        group["nesterov"] = check_flag(name, "nesterov", group["nesterov"])
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError(
                f"{name}: nesterov=True needs momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']:g}, dampening={group['dampening']:g}"
            )
        return group

    def _init_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        # The momentum buffer starts as the first gradient (not zeros), so it is made on step 1.
        return {}

    _native_rule = "sgd"

    def _native_arrays(self, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        return (state.get("momentum_buffer") if group["momentum"] != 0 else None,)

    def _native_layout(self, group: dict[str, Any]) -> tuple:
        return (group["momentum"] != 0,)

    def _native_scalars(self, group: dict[str, Any]) -> tuple:
        return (
            float(group["lr"]),
            group["momentum"],
            group["dampening"],
            group["weight_decay"],
            float(group["nesterov"]),
        )

    def _update(
        self, p: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        momentum = group["momentum"]
        buffer, first = None, False
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            first = buffer is None
            if first:
                buffer = state["momentum_buffer"] = np.empty_like(p)
        sgd_update(
            p,
            grad,
            buffer,
            lr=float(group["lr"]),
            momentum=momentum,
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            first=first,
            work=self._scratch_like(p),
        )


def sgd_update(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    first: bool = False,
    work: np.ndarray | None = None,
) -> None:
    """One SGD step on `param` in place (the rule in the class docstring); `grad` is only read.

    `momentum_buffer` is None without momentum; with it, `first` fills the buffer with the
    (decayed) gradient instead of decaying it. `work`, an array like `param`, saves an allocation.
    The C kernel does this arithmetic in one pass, bit for bit (see kernels.py); this is the
    reference it mirrors and the code that runs where it declines.
    """
    p, buffer = param, momentum_buffer
    if kernels.sgd(p, grad, buffer, first, weight_decay, momentum, dampening, nesterov, lr):
        return
    g = grad
    if weight_decay != 0:
        g = np.multiply(p, weight_decay)
        g += grad
    direction = g
    if buffer is not None:
        if first:
            np.copyto(buffer, g)
        else:
            buffer *= momentum
            buffer += g if dampening == 0 else (1.0 - dampening) * g
        if nesterov:
            direction = np.multiply(buffer, momentum)
            direction += g
        else:
            direction = buffer
    work = np.multiply(direction, lr, out=work)
    p -= work
