"""Adagrad: per-coordinate step sizes that shrink with the sum of all past squared gradients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from chainrule.optim.optimizer import Optimizer
from chainrule.validation import check_number


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), as `torch.optim.Adagrad`.

    For each parameter p with gradient g, at step t:

        g ← g + weight_decay·p
        η ← lr / (1 + (t − 1)·lr_decay)
        s ← s + g²                     (s starts at initial_accumulator_value)
        p ← p − η · g / (√s + eps)

    Coordinates with large past gradients take small steps; s only grows, so every step size
    decays, which suits sparse features and hurts long non-convex runs.
    """

    _state_arrays = ("sum",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> dict[str, Any]:
        name = self._name
        group = dict(group)
        for key in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            group[key] = check_number(name, key, group[key])
        return group

    def _init_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": np.array(0), "sum": np.full_like(p, group["initial_accumulator_value"])}

    def _update(
        self, p: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        state["step"] += 1
        adagrad_update(
            p,
            grad,
            state["sum"],
            step=int(state["step"]),
            lr=float(group["lr"]),
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
        )


def adagrad_update(
    param: np.ndarray,
    grad: np.ndarray,
    total: np.ndarray,
    *,
    step: int,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
) -> None:
    """One Adagrad step (the rule in the class docstring) in place; `total` is the running sum of
    squared gradients, `step` is t counted from 1."""
    p, g = param, grad
    if weight_decay != 0:
        decayed = np.multiply(p, weight_decay)
        decayed += g
        g = decayed
    step_size = lr / (1.0 + (step - 1) * lr_decay)
    work = np.multiply(g, g)
    total += work
    np.sqrt(total, out=work)
    work += eps
    np.divide(g, work, out=work)
    work *= step_size
    p -= work
