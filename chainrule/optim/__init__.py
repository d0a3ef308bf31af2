"""Optimizers with PyTorch's names and update rules, learning-rate schedules, gradient clipping.

Each rule is also a pure function over arrays (`sgd_update`, `adam_update`, ...) that `step` calls.
"""

from chainrule.optim.adagrad import Adagrad, adagrad_update
from chainrule.optim.adam import Adam, AdamW, adam_update
from chainrule.optim.clip import clip_grad_norm_, clip_grad_value_
from chainrule.optim.optimizer import Optimizer
from chainrule.optim.rmsprop import RMSprop, rmsprop_update
from chainrule.optim.schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
)
from chainrule.optim.sgd import SGD, sgd_update

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "adagrad_update",
    "adam_update",
    "clip_grad_norm_",
    "clip_grad_value_",
    "rmsprop_update",
    "sgd_update",
]
