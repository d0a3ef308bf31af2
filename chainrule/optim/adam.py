"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay (one rule)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from chainrule import kernels
from chainrule.optim.optimizer import Optimizer
from chainrule.validation import check_flag, check_number


class Adam(Optimizer):
    r"""Adam, as `torch.optim.Adam` (Kingma & Ba, 2015).

    For each parameter p with gradient g, at step t (β₁, β₂ = betas):

        p ← p·(1 − lr·weight_decay)      if decoupled_weight_decay (AdamW)
        g ← g + weight_decay·p           otherwise
        m ← β₁·m + (1 − β₁)·g
        v ← β₂·v + (1 − β₂)·g²
        v̂ ← max(v̂, v) if amsgrad, else v
        p ← p − lr/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + eps)

    m and v start at zero; the two bias corrections undo that start.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> dict[str, Any]:
        name = self._name
        group = dict(group)
        group["lr"] = check_number(name, "lr", group["lr"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(
            check_number(name, f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
            for i, beta in enumerate(betas)
        )
        group["eps"] = check_number(name, "eps", group["eps"])
        group["weight_decay"] = check_number(name, "weight_decay", group["weight_decay"])
        group["amsgrad"] = check_flag(name, "amsgrad", group["amsgrad"])
        group["decoupled_weight_decay"] = check_flag(
            name, "decoupled_weight_decay", group["decoupled_weight_decay"]
        )
        return group

    def _init_state(self, p: np.ndarray, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": np.array(0),
            "exp_avg": np.zeros_like(p),
            "exp_avg_sq": np.zeros_like(p),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(p)
        return state

    _native_rule = "adam"

    def _native_arrays(self, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        v_max = state["max_exp_avg_sq"] if group["amsgrad"] else None
        return (state["exp_avg"], state["exp_avg_sq"], v_max, state["step"])

    def _native_layout(self, group: dict[str, Any]) -> tuple:
        return (group["amsgrad"],)

    def _native_scalars(self, group: dict[str, Any]) -> tuple:
        beta1, beta2 = group["betas"]
        return (
            float(group["lr"]),
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            float(group["decoupled_weight_decay"]),
        )

    def _update(
        self, p: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        state["step"] += 1  # a 0-d array, shared by a flat group's parameters
        beta1, beta2 = group["betas"]
        adam_update(
            p,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            state["max_exp_avg_sq"] if group["amsgrad"] else None,
            step=int(state["step"]),
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["decoupled_weight_decay"],
        )


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> None:
    """One Adam step (the rule in Adam's docstring) on `param` and the moments, in place.

    `step` is t, counted from 1; `max_exp_avg_sq` is given only with amsgrad. The C kernel does
    the same arithmetic in one pass, bit for bit; this is the reference it mirrors.
    """
    p, g, t = param, grad, step
    if weight_decay != 0 and decoupled:
        p *= 1.0 - lr * weight_decay
    coupled_decay = 0.0 if decoupled else weight_decay
    # lr/c₁ · m / (√v/√c₂ + eps) = (lr·√c₂/c₁) · m / (√v + eps·√c₂): one pass fewer.
    root_c2 = math.sqrt(1.0 - beta2**t)
    step_size = lr * root_c2 / (1.0 - beta1**t)
    m, v, v_max = exp_avg, exp_avg_sq, max_exp_avg_sq
    if kernels.adam(p, g, m, v, v_max, coupled_decay, beta1, beta2, eps * root_c2, step_size):
        return
    if coupled_decay != 0:
        decayed = np.multiply(p, coupled_decay)
        decayed += g
        g = decayed
    work = np.subtract(g, m)  # m ← m + (1 − β₁)(g − m), PyTorch's lerp
    work *= 1.0 - beta1
    m += work
    np.multiply(g, g, out=work)
    work *= 1.0 - beta2
    v *= beta2
    v += work
    if v_max is not None:
        v = np.maximum(v_max, v, out=v_max)
    np.sqrt(v, out=work)
    work += eps * root_c2
    np.divide(m, work, out=work)
    work *= step_size
    p -= work


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as `torch.optim.AdamW`.

    The decay shrinks p directly, p ← p·(1 − lr·weight_decay), instead of being added to the
    gradient, so it is not rescaled by Adam's per-coordinate step sizes.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True)
