"""Loss modules: each holds its options and calls the matching function in chainrule.functional."""

from __future__ import annotations

from typing import Any

from chainrule import functional as F
from chainrule.nn.module import Module
from chainrule.ops.losses import REDUCTIONS
from chainrule.tensor import Tensor


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
            )
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """mean((ŷ − y)²). The tutorial's L = ½ Σ(ŷ − y)² differs by the constant ½ (and sum vs mean)."""

    def forward(self, prediction: Any, target: Any) -> Tensor:
        return F.mse_loss(prediction, target, self.reduction)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities (after a Sigmoid)."""

    def forward(self, probability: Any, target: Any) -> Tensor:
        return F.binary_cross_entropy(probability, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy from raw scores: stabler than Sigmoid followed by BCELoss."""

    def forward(self, logits: Any, target: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits; targets are class indices or class probabilities."""

    def forward(self, logits: Any, target: Any) -> Tensor:
        return F.cross_entropy(logits, target, self.reduction)


class NLLLoss(_Loss):
    def forward(self, log_probabilities: Any, target: Any) -> Tensor:
        return F.nll_loss(log_probabilities, target, self.reduction)


class HuberLoss(_Loss):
    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if delta <= 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta}")
        self.delta = float(delta)

    def forward(self, prediction: Any, target: Any) -> Tensor:
        return F.huber_loss(prediction, target, self.reduction, self.delta)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"
