"""RMSprop: divide each step by a running root-mean-square of recent gradients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from chainrule.optim.optimizer import Optimizer
from chainrule.validation import check_flag, check_number


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, 2012), as `torch.optim.RMSprop`.

    For each parameter p with gradient g:

        g ← g + weight_decay·p
        v ← α·v + (1 − α)·g²
        ḡ ← α·ḡ + (1 − α)·g,   d ← √(v − ḡ²) + eps     if centered
                               d ← √v + eps             otherwise
        b ← momentum·b + g/d,  p ← p − lr·b             if momentum > 0
        p ← p − lr·g/d                                  otherwise

    Unlike Adam there is no bias correction: v starts at zero, so early steps are large.
    `centered` divides by an estimate of the gradient's variance instead of its second moment.
    """

    _state_arrays = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> dict[str, Any]:
        name = self._name
        group = dict(group)
        group["lr"] = check_number(name, "lr", group["lr"])
        group["alpha"] = check_number(name, "alpha", group["alpha"], 0.0, 1.0)
        group["eps"] = check_number(name, "eps", group["eps"])
        group["weight_decay"] = check_number(name, "weight_decay", group["weight_decay"])
        group["momentum"] = check_number(name, "momentum", group["momentum"])
        group["centered"] = check_flag(name, "centered", group["centered"])
        return group

    def _init_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {"step": np.array(0), "square_avg": np.zeros_like(p)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = np.zeros_like(p)
        return state

    def _update(
        self, p: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        state["step"] += 1
        momentum = group["momentum"]
        rmsprop_update(
            p,
            grad,
            state["square_avg"],
            state["grad_avg"] if group["centered"] else None,
            state["momentum_buffer"] if momentum > 0 else None,
            lr=float(group["lr"]),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=momentum,
        )


def rmsprop_update(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    grad_avg: np.ndarray | None,
    momentum_buffer: np.ndarray | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
) -> None:
    """One RMSprop step (the rule in the class docstring) in place: centered when `grad_avg` is
    given, with momentum when `momentum_buffer` is."""
    p, g, v = param, grad, square_avg
    if weight_decay != 0:
        decayed = np.multiply(p, weight_decay)
        decayed += g
        g = decayed
    work = np.multiply(g, g)
    work *= 1.0 - alpha
    v *= alpha
    v += work
    if grad_avg is not None:
        mean = grad_avg  # ḡ ← ḡ + (1 − α)(g − ḡ), PyTorch's lerp
        np.subtract(g, mean, out=work)
        work *= 1.0 - alpha
        mean += work
        np.multiply(mean, mean, out=work)
        np.subtract(v, work, out=work)
        np.sqrt(work, out=work)
    else:
        np.sqrt(v, out=work)
    work += eps
    np.divide(g, work, out=work)
    if momentum_buffer is not None:
        buffer = momentum_buffer
        buffer *= momentum
        buffer += work
        work = np.multiply(buffer, lr, out=work)
    else:
        work *= lr
    p -= work
