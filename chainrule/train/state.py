"""Where a training run stands, as values: `History` (the per-epoch record) and `TrainState` (the
position — epoch, step, generator states, the epoch's running sums — plus what callbacks read).

Checkpoints save and load exactly `TrainState.position()`; nothing else about a run is hidden
in the loop's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chainrule.nn.module import Module

__all__ = ["History", "TrainState"]


@dataclass
class History:
    """Per-epoch records of a run: `loss`, and in `metrics` e.g. 'accuracy', 'val_loss',
    'val_accuracy', 'lr' lists, one value per epoch in `epochs`."""

    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False
    best_epoch: int | None = None

    @property
    def val_loss(self) -> list[float]:
        """The validation loss per epoch ([] without validation data)."""
        return self.metrics.get("val_loss", [])

    def record(self, epoch: int, logs: dict[str, float]) -> None:
        """Append one epoch's figures (`logs` holds 'loss' and any metrics)."""
        self.epochs.append(epoch)
        self.loss.append(logs["loss"])
        for name, value in logs.items():
            if name != "loss":
                self.metrics.setdefault(name, []).append(value)

    def to_dict(self) -> dict[str, Any]:
        """Every series by name: {'epochs': [...], 'loss': [...], 'val_loss': [...], ...}."""
        return {"epochs": self.epochs, "loss": self.loss, **self.metrics}

    def state_dict(self) -> dict[str, Any]:
        """Everything, as plain JSON values (for checkpoints)."""
        return {
            "epochs": self.epochs,
            "loss": self.loss,
            "metrics": self.metrics,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        """The History that `state_dict()` described."""
        return cls(
            list(state["epochs"]),
            list(state["loss"]),
            {name: list(values) for name, values in state["metrics"].items()},
            bool(state["stopped_early"]),
            state["best_epoch"],
        )


@dataclass
class TrainState:
    """A run's position and what callbacks see; callbacks may set `stop = True` to end training
    after the current epoch.

    `epoch` and `step` (the batch index within the epoch) say where the run is; the shuffle
    generator's state now and at the start of the epoch, and `running` (the epoch's loss·samples
    and correct predictions so far, over all ranks) let a run stopped mid-epoch continue exactly.
    """

    model: Module
    optimizer: Any
    history: History
    generator: np.random.Generator  # the shuffle's
    epoch: int = 0
    step: int = 0
    global_step: int = 0  # optimizer steps since the run began
    epoch_start_generator: dict[str, Any] | None = None
    running: tuple[float, float] = (0.0, 0.0)
    logs: dict[str, float] = field(default_factory=dict)
    stop: bool = False

    def position(self) -> dict[str, Any]:
        """The run's position as plain JSON values: what a checkpoint stores besides arrays."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "generator": self.generator.bit_generator.state,
            "epoch_start_generator": self.epoch_start_generator,
            "running": [float(value) for value in self.running],
            "history": self.history.state_dict(),
        }

    def restore_position(self, position: dict[str, Any]) -> None:
        """Continue from a `position()`; KeyError or TypeError if it is incomplete."""
        epoch, step = int(position["epoch"]), int(position["step"])
        global_step = int(position["global_step"])
        running = tuple(float(value) for value in position["running"])
        history = History.from_state_dict(position["history"])
        if len(running) != 2 or min(epoch, step, global_step) < 0:
            raise ValueError("the saved position is out of range")
        self.generator.bit_generator.state = position["generator"]
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.epoch_start_generator = position["epoch_start_generator"]
        self.running = running  # type: ignore[assignment]
        self.history = history
