"""Callbacks for `fit`: early stopping with the best weights kept, and learning-rate schedules.

A callback sees the run's `TrainState` after each step and each epoch and may set `state.stop`.
Callbacks that carry state across epochs give it in `state_dict()` so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import math
from typing import Any

from chainrule.optim import ReduceLROnPlateau
from chainrule.train.state import TrainState


class Callback:
    """A hook into `fit`: override the methods you need; each receives the run's TrainState."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by min_delta for `patience` epochs; by default put back
    the best weights seen (also when training runs to its last epoch — a case Keras long missed)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best_weights: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best_weights = mode, restore_best_weights
        self.best = math.inf if mode == "min" else -math.inf
        self.best_state: dict | None = None
        self.wait = 0

    def on_epoch_end(self, state: TrainState) -> None:
        if self.monitor not in state.logs:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which this run does not compute; "
                f"available: {', '.join(state.logs)}"
            )
        value = state.logs[self.monitor]
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            state.history.best_epoch = state.epoch
            if self.restore_best_weights:
                self.best_state = state.model.state_dict()
            return
        self.wait += 1
        if self.wait > self.patience:
            state.stop = True
            state.history.stopped_early = True

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best_weights and self.best_state is not None:
            state.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.best_state = state["best_state"]


class LearningRateScheduler(Callback):
    """Step a learning-rate schedule (`chainrule.optim.StepLR`, ...) once per epoch, and record
    the learning rate as `lr` in the logs; ReduceLROnPlateau is given the `monitor` metric (the
    training loss when the run has no validation data). Keras's name for the same callback."""

    def __init__(self, scheduler: Any, monitor: str = "val_loss") -> None:
        self.scheduler, self.monitor = scheduler, monitor

    def on_epoch_end(self, state: TrainState) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(state.logs.get(self.monitor, state.logs["loss"]))
        else:
            self.scheduler.step()
        state.logs["lr"] = state.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
