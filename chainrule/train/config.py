"""`FitConfig`: every setting of a `fit` run as one frozen value, checked when it is made.

`fit` takes these as named parameters and builds one; the checkpoint's configuration hash and the
data-parallel agreement check read it, so what decides a run is written down in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chainrule.registry import LOSSES, OPTIMIZERS, SCHEDULES
from chainrule.validation import check_choice, check_flag, check_int, check_number

__all__ = ["FitConfig"]

_OWNER = "fit"


@dataclass(frozen=True)
class FitConfig:
    """The settings of one training run (see `chainrule.fit` for each one's meaning)."""

    loss: str | Callable = "mse"  # a registry name or a function (output, target) -> Tensor
    optimizer: Any = "sgd"  # a registry name or an Optimizer over the model's parameters
    lr: float = 0.01  # with momentum and weight_decay: used when `optimizer` is a name
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int | None = None  # None: the full batch, as in the founding tutorial
    shuffle: bool = True
    classification: bool | None = None  # None: from the loss (cross-entropy, bce: yes)
    scheduler: Any = None  # a registry name, a schedule object, or None
    log_every: int | None = None  # print `Epoch N, Loss: x.xxxx` every N epochs
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    checkpoint: str | None = None  # a directory
    checkpoint_every: int = 1  # epochs
    checkpoint_steps: int | None = None  # also every N optimizer steps, mid-epoch
    resume: bool = False
    overwrite: bool = False  # start over in a checkpoint directory that holds another run
    compile: bool = True  # trace the step once and replay it (chainrule.compile)

    def __post_init__(self) -> None:
        if isinstance(self.loss, str):
            check_choice(_OWNER, "loss", self.loss, LOSSES)
        elif not callable(self.loss):
            raise TypeError(f"fit: loss must be a name or a function, got {self.loss!r}")
        if isinstance(self.optimizer, str):
            check_choice(_OWNER, "optimizer", self.optimizer, OPTIMIZERS)
            check_number(_OWNER, "lr", self.lr)
            check_number(_OWNER, "momentum", self.momentum)
            check_number(_OWNER, "weight_decay", self.weight_decay)
        if isinstance(self.scheduler, str):
            check_choice(_OWNER, "scheduler", self.scheduler, SCHEDULES)
        check_int(_OWNER, "epochs", self.epochs, low=0)
        if self.batch_size is not None:
            check_int(_OWNER, "batch_size", self.batch_size, low=1)
        if self.log_every is not None:
            check_int(_OWNER, "log_every", self.log_every, low=1)
        check_int(_OWNER, "checkpoint_every", self.checkpoint_every, low=1)
        if self.checkpoint_steps is not None:
            check_int(_OWNER, "checkpoint_steps", self.checkpoint_steps, low=1)
        for name in ("shuffle", "resume", "overwrite", "compile"):
            check_flag(_OWNER, name, getattr(self, name))
        if self.resume and self.checkpoint is None:
            raise ValueError("fit: resume needs a checkpoint directory")

    @property
    def loss_name(self) -> str:
        """The loss's registry name, or the function's own name."""
        if isinstance(self.loss, str):
            return self.loss
        return getattr(self.loss, "__name__", "custom")

    @property
    def is_classification(self) -> bool:
        """Whether accuracy is computed: as given, else from the loss's registry entry."""
        if self.classification is not None:
            return bool(self.classification)
        entry = LOSSES.get(self.loss_name) if isinstance(self.loss, str) else None
        return entry is not None and entry.classification
