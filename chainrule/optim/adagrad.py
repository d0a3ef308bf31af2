"""Adagrad: per-coordinate step sizes that shrink with the sum of all past squared gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from chainrule.optim.optimizer import Optimizer
from chainrule.tensor import Tensor
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

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "sum": np.full_like(p.data, group["initial_accumulator_value"])}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr = float(group["lr"])
            lr_decay, weight_decay, eps = group["lr_decay"], group["weight_decay"], group["eps"]
            for p, g, state in self._with_grads(group):
                state["step"] += 1
                if weight_decay != 0:
                    decayed = np.multiply(p, weight_decay)
                    decayed += g
                    g = decayed
                step_size = lr / (1.0 + (state["step"] - 1) * lr_decay)
                total = state["sum"]
                work = np.multiply(g, g)
                total += work
                np.sqrt(total, out=work)
                work += eps
                np.divide(g, work, out=work)
                work *= step_size
                p -= work
        return loss
