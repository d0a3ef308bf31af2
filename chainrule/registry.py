"""The one table of names: every loss, activation, optimizer and schedule a user can ask for by
name, with what it means. `fit`, the command line's `choices=`, `explain`, the playground and the
scikit-learn adapter all read these tables, so a name means one thing everywhere.

Layer types of model files are in `chainrule.architecture` (they carry argument checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chainrule import functional as F
from chainrule import nn, optim
from chainrule.tensor import Tensor
from chainrule.validation import check_choice

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Activation",
    "Loss",
    "OptimizerEntry",
    "Schedule",
    "activation_for",
    "get_loss",
    "help_text",
    "make_optimizer",
    "make_schedule",
]


# ---- losses -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loss:
    """A loss by name. Every built-in averages over the samples, L = (1/N)·Σ_n L_n."""

    function: Callable[[Tensor, Any], Tensor]
    formula: str  # what L is, in words and symbols
    gradient: str  # ∂L_n/∂ŷ as `explain` writes it
    # What the model's output is taken to be: "values", "probabilities" (after a sigmoid or
    # softmax head), "logits" (raw scores; the loss applies the sigmoid or softmax itself).
    output: str
    classification: bool  # targets are classes (fit then reports accuracy)


def half_mse_loss(prediction: Tensor, target: Any) -> Tensor:
    """The founding tutorial's loss: ½·mean((ŷ − y)²), whose gradient is ŷ − y (no factor 2)."""
    return 0.5 * F.mse_loss(prediction, target)


LOSSES: dict[str, Loss] = {
    "mse": Loss(
        F.mse_loss,
        "mean((ŷ − y)²), PyTorch's MSELoss (no ½)",
        "2·(ŷ − y)",
        "values",
        False,
    ),
    "half_mse": Loss(
        half_mse_loss,
        "½·mean((ŷ − y)²), the founding tutorial's halved MSE",
        "ŷ − y",
        "values",
        False,
    ),
    "bce": Loss(
        F.binary_cross_entropy,
        "−mean(y·ln ŷ + (1 − y)·ln(1 − ŷ)) for probabilities ŷ",
        "(ŷ − y)/(ŷ·(1 − ŷ))",
        "probabilities",
        True,
    ),
    "bce_logits": Loss(
        F.binary_cross_entropy_with_logits,
        "binary cross-entropy of sigmoid(ŷ) for logits ŷ",
        "sigmoid(ŷ) − y",
        "logits",
        True,
    ),
    "cross_entropy": Loss(
        F.cross_entropy,
        "mean(−ln softmax(ŷ)_y) for logits ŷ and class indices y",
        "softmax(ŷ) − onehot(y)",
        "logits",
        True,
    ),
    "huber": Loss(
        F.huber_loss,
        "mean(huber(ŷ − y)) with δ = 1: squared near 0, linear beyond",
        "clip(ŷ − y, −1, 1)",
        "values",
        False,
    ),
}


def get_loss(loss: str | Callable, owner: str = "") -> Callable[[Tensor, Any], Tensor]:
    """The loss function for a registry name; a callable is returned as it is."""
    if callable(loss):
        return loss
    return LOSSES[check_choice(owner, "loss", loss, LOSSES)].function


# ---- activations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """An activation by name: its module, and its derivative as `explain` writes it."""

    module: type[nn.Module]
    formula: str
    derivative: str
    hidden: bool = True  # offered between hidden layers (Softmax is an output head only)
    kinked: bool = False  # a kink at 0, where finite differences are not meaningful


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(nn.Sigmoid, "1/(1 + e^(−z))", "a·(1 − a)"),
    "tanh": Activation(nn.Tanh, "tanh(z)", "1 − a²"),
    "relu": Activation(nn.ReLU, "max(z, 0)", "1 if z > 0 else 0", kinked=True),
    "leaky_relu": Activation(
        nn.LeakyReLU, "z if z > 0 else 0.01·z", "1 if z > 0 else slope", kinked=True
    ),
    "gelu": Activation(nn.GELU, "z·Φ(z)", "gelu′(z)"),
    "softplus": Activation(nn.Softplus, "ln(1 + e^z)", "sigmoid(z)"),
    "identity": Activation(nn.Identity, "z", "1"),
    "softmax": Activation(nn.Softmax, "e^(z_k)/Σ_j e^(z_j)", "a_k·(δ_kj − a_j)", hidden=False),
}
HIDDEN_ACTIVATIONS = tuple(name for name, entry in ACTIVATIONS.items() if entry.hidden)


def activation_for(module: nn.Module) -> tuple[str, Activation] | None:
    """The registry name and entry of an activation module, or None for any other module."""
    for name, entry in ACTIVATIONS.items():
        if type(module) is entry.module:
            return name, entry
    return None


# ---- optimizers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer by name, built from the few options every face offers."""

    build: Callable[[Iterable, float, float, float], optim.Optimizer]
    description: str


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry(
        lambda p, lr, momentum, decay: optim.SGD(p, lr=lr, momentum=momentum, weight_decay=decay),
        "stochastic gradient descent, w ← w − η·∂L/∂w (with momentum if given)",
    ),
    "adam": OptimizerEntry(
        lambda p, lr, momentum, decay: optim.Adam(p, lr=lr, weight_decay=decay),
        "Adam: steps scaled by running averages of the gradient and its square",
    ),
    "adamw": OptimizerEntry(
        # AdamW's point is its decoupled decay: 0 would make it Adam, so 0 means its default.
        lambda p, lr, momentum, decay: optim.AdamW(p, lr=lr, weight_decay=decay or 1e-2),
        "Adam with decoupled weight decay (0.01 unless given)",
    ),
    "rmsprop": OptimizerEntry(
        lambda p, lr, momentum, decay: optim.RMSprop(
            p, lr=lr, momentum=momentum, weight_decay=decay
        ),
        "RMSprop: steps scaled by a running average of the squared gradient",
    ),
    "adagrad": OptimizerEntry(
        lambda p, lr, momentum, decay: optim.Adagrad(p, lr=lr, weight_decay=decay),
        "Adagrad: steps scaled by the sum of all squared gradients so far",
    ),
}


def make_optimizer(
    name: str,
    parameters: Iterable,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    owner: str = "",
) -> optim.Optimizer:
    """An optimizer by registry name (momentum is used by sgd and rmsprop only)."""
    entry = OPTIMIZERS[check_choice(owner, "optimizer", name, OPTIMIZERS)]
    return entry.build(parameters, lr, momentum, weight_decay)


# ---- learning-rate schedules --------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule by name, built for a run of `epochs` epochs."""

    build: Callable[[optim.Optimizer, int], Any]
    description: str


SCHEDULES: dict[str, Schedule] = {
    "step": Schedule(
        lambda opt, epochs: optim.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1),
        "lr × 0.1 after each third of the epochs",
    ),
    "exponential": Schedule(
        lambda opt, epochs: optim.ExponentialLR(opt, gamma=0.01 ** (1 / max(1, epochs))),
        "lr × γ each epoch, down to lr/100 at the end",
    ),
    "cosine": Schedule(
        lambda opt, epochs: optim.CosineAnnealingLR(opt, T_max=max(1, epochs)),
        "lr along half a cosine, from lr to 0 over the run",
    ),
    "plateau": Schedule(
        lambda opt, epochs: optim.ReduceLROnPlateau(opt),
        "lr × 0.1 when the validation loss (else the loss) stops improving for 10 epochs",
    ),
}


def make_schedule(name: str, optimizer: optim.Optimizer, epochs: int, owner: str = "") -> Any:
    """A learning-rate schedule by registry name for a run of `epochs` epochs."""
    return SCHEDULES[check_choice(owner, "scheduler", name, SCHEDULES)].build(optimizer, epochs)


def help_text(table: dict[str, Any]) -> str:
    """`name: description` for each entry, for the command line's --help and `chainrule
    datasets`-style listings."""
    lines = []
    for name, entry in table.items():
        text = getattr(entry, "description", None) or getattr(entry, "formula", "")
        lines.append(f"{name}: {text}")
    return "; ".join(lines)
