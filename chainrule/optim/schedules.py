"""Learning-rate schedules, stepped once per epoch as in PyTorch: StepLR, ExponentialLR,
CosineAnnealingLR (one base class), and ReduceLROnPlateau, which follows a metric instead.
"""

from __future__ import annotations

import math
from typing import Any

from chainrule.optim.optimizer import Optimizer
from chainrule.validation import check_int, check_number


def _check_optimizer(owner: str, optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner} needs a chainrule Optimizer, got {type(optimizer).__name__}")
    return optimizer


class LRScheduler:
    """Base for schedules that set each group's lr from its current lr and the epoch count.

    As in PyTorch the rules are recursive (lr ← f(lr)), so schedules chain with each other and
    with manual changes. Construction leaves the lr alone (epoch 0); each `step()` advances one
    epoch. Subclasses store their options and list them in `_options`.
    """

    _options: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = _check_optimizer(type(self).__name__, optimizer)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = [float(group["lr"]) for group in optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group after the latest step."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch; call it after the epoch's `optimizer.step()` calls."""
        self.last_epoch += 1
        groups = self.optimizer.param_groups
        for group, base_lr in zip(groups, self.base_lrs):
            group["lr"] = float(self._next_lr(float(group["lr"]), base_lr))
        self._last_lr = [group["lr"] for group in groups]

    def _next_lr(self, lr: float, base_lr: float) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Epoch, base and latest learning rates and options, as plain numbers and lists."""
        state = {key: getattr(self, key) for key in self._options}
        return {
            **state,
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved position, and put the saved learning rates into the optimizer.

        Unlike PyTorch the optimizer's lrs are set too, so a resumed run is at the right lr even
        when only the scheduler's state was restored.
        """
        _restore(self, state_dict, ("last_epoch", "base_lrs", "last_lr", *self._options))
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        for key in self._options:
            setattr(self, key, state_dict[key])
        for group, base_lr, lr in zip(self.optimizer.param_groups, self.base_lrs, self._last_lr):
            group["initial_lr"] = base_lr
            group["lr"] = lr

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={getattr(self, key)}" for key in self._options)
        return f"{type(self).__name__}({options}, last_epoch={self.last_epoch})"


def _restore(scheduler: Any, state_dict: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Check a saved scheduler state and restore its latest lrs (the rest is up to the caller)."""
    name = type(scheduler).__name__
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ValueError(f"{name}.load_state_dict: the state lacks {missing[0]!r}")
    groups = len(scheduler.optimizer.param_groups)
    if len(state_dict["last_lr"]) != groups:
        raise ValueError(
            f"{name}.load_state_dict: the state has learning rates for {len(state_dict['last_lr'])}"
            f" parameter groups, the optimizer has {groups}"
        )
    scheduler._last_lr = [float(lr) for lr in state_dict["last_lr"]]


class StepLR(LRScheduler):
    """Multiply the lr by gamma every `step_size` epochs: lr = base_lr·γ^⌊epoch/step_size⌋."""

    _options = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_int("StepLR", "step_size", step_size, low=1)
        self.gamma = check_number("StepLR", "gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self, lr: float, base_lr: float) -> float:
        return lr * self.gamma if self.last_epoch % self.step_size == 0 else lr


class ExponentialLR(LRScheduler):
    """Multiply the lr by gamma every epoch: lr = base_lr·γ^epoch."""

    _options = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = check_number("ExponentialLR", "gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self, lr: float, base_lr: float) -> float:
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    r"""Anneal the lr along a half cosine from base_lr to eta_min over T_max epochs.

        lr = eta_min + (base_lr − eta_min)·(1 + cos(π·epoch/T_max))/2

    computed recursively as PyTorch does; past T_max it climbs back along the cosine.
    """

    _options = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = check_int("CosineAnnealingLR", "T_max", T_max, low=1)
        self.eta_min = check_number("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer)

    def _next_lr(self, lr: float, base_lr: float) -> float:
        epoch, T_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - T_max) % (2 * T_max) == 0:
            # The ratio below is 0/0 just after the minimum; step up from it directly.
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        ratio = (1 + math.cos(math.pi * epoch / T_max)) / (
            1 + math.cos(math.pi * (epoch - 1) / T_max)
        )
        return ratio * (lr - eta_min) + eta_min


class ReduceLROnPlateau:
    """Multiply the lr by `factor` when a metric stops improving for `patience` epochs.

    `step(metric)` once per epoch. In mode 'min' a metric improves when it is below
    best·(1 − threshold) ('rel') or best − threshold ('abs'); 'max' mirrors that. After a cut,
    `cooldown` epochs pass before bad epochs count again; the lr never goes below `min_lr` (one
    value, or one per group), and cuts smaller than `eps` are skipped.
    """

    _options = (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lrs",
        "eps",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        name = "ReduceLROnPlateau"
        self.optimizer = _check_optimizer(name, optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"{name}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = check_number(name, "factor", factor, 0.0, 1.0, high_open=True)
        self.patience = check_int(name, "patience", patience, low=0)
        self.threshold = check_number(name, "threshold", threshold)
        self.cooldown = check_int(name, "cooldown", cooldown, low=0)
        self.eps = check_number(name, "eps", eps)
        groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != groups:
                raise ValueError(
                    f"{name}: min_lr has {len(min_lr)} values but the optimizer has {groups} "
                    "parameter groups"
                )
            self.min_lrs = [check_number(name, f"min_lr[{i}]", v) for i, v in enumerate(min_lr)]
        else:
            self.min_lrs = [check_number(name, "min_lr", min_lr)] * groups
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [float(group["lr"]) for group in optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def _is_better(self, metric: float) -> bool:
        if self.mode == "min":
            bar = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return metric < bar
        bar = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return metric > bar

    def step(self, metrics: Any) -> None:
        """Record this epoch's metric (a number, or a one-element Tensor) and cut the lr if due.

        A NaN metric never improves, so it counts as a bad epoch (as in PyTorch).
        """
        try:
            metric = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(
                f"ReduceLROnPlateau.step needs a number, got {type(metrics).__name__}"
            ) from None
        self.last_epoch += 1
        if self._is_better(metric):
            self.best = metric
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old_lr = float(group["lr"])
                new_lr = max(old_lr * self.factor, min_lr)
                if old_lr - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Counters, best metric (±inf before the first step) and options, as plain values."""
        state = {key: getattr(self, key) for key in self._options}
        state["min_lrs"] = list(self.min_lrs)
        return {
            **state,
            "last_epoch": self.last_epoch,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved position, and put the saved learning rates into the optimizer."""
        counters = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "last_lr")
        _restore(self, state_dict, (*counters, *self._options))
        for key in self._options:
            setattr(self, key, state_dict[key])
        self.min_lrs = [float(v) for v in self.min_lrs]
        self.last_epoch = int(state_dict["last_epoch"])
        self.best = float(state_dict["best"])
        self.num_bad_epochs = int(state_dict["num_bad_epochs"])
        self.cooldown_counter = int(state_dict["cooldown_counter"])
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
            f"patience={self.patience}, "
            f"best={self.best}, num_bad_epochs={self.num_bad_epochs})"
        )
