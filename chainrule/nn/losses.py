"""Loss modules: each holds its options and calls its function in chainrule.functional."""

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
    """mean((ŷ − y)²), as torch.nn.MSELoss (see `functional.mse_loss`).

    The tutorial's L = ½ Σ(ŷ − y)² differs by the constant ½ (and sum against mean).
    `reduction`: 'mean' (default), 'sum' or 'none', here and in every loss module.
    """

    def forward(self, prediction: Any, target: Any) -> Tensor:
        """The loss of prediction ŷ against target y, both of one shape."""
        return F.mse_loss(prediction, target, self.reduction)


class BCELoss(_Loss):
    """Binary cross-entropy −[y ln p + (1 − y) ln(1 − p)] of probabilities p (after a Sigmoid)."""

    def forward(self, probability: Any, target: Any) -> Tensor:
        """The loss of probabilities p against targets y of p's shape."""
        return F.binary_cross_entropy(probability, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of σ(z) from raw scores z: stabler than Sigmoid followed by BCELoss."""

    def forward(self, logits: Any, target: Any) -> Tensor:
        """The loss of logits z against targets y of z's shape."""
        return F.binary_cross_entropy_with_logits(logits, target, self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits; targets are class indices or class probabilities.

    >>> from chainrule import nn, tensor
    >>> loss = nn.CrossEntropyLoss()(tensor([[2.0, 0.0], [0.0, 2.0]]), [0, 1])
    >>> round(loss.item(), 4)
    0.1269
    """

    def forward(self, logits: Any, target: Any) -> Tensor:
        """The loss of logits (batch, classes) against class indices (batch,) or probabilities."""
        return F.cross_entropy(logits, target, self.reduction)


class NLLLoss(_Loss):
    """Negative log-likelihood of class indices, given log-probabilities (batch, classes).

    `NLLLoss()(F.log_softmax(z), y)` equals `CrossEntropyLoss()(z, y)`; see `functional.nll_loss`.
    """

    def forward(self, log_probabilities: Any, target: Any) -> Tensor:
        """The loss of log-probabilities (batch, classes) against class indices (batch,)."""
        return F.nll_loss(log_probabilities, target, self.reduction)


class HuberLoss(_Loss):
    """½d² where |d| <= delta, else delta·(|d| − ½·delta), d = ŷ − y (`functional.huber_loss`)."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if delta <= 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta}")
        self.delta = float(delta)

    def forward(self, prediction: Any, target: Any) -> Tensor:
        """The loss of prediction ŷ against target y, both of one shape."""
        return F.huber_loss(prediction, target, self.reduction, self.delta)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"
