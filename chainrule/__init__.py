"""chainrule: train neural networks by backpropagation, with NumPy and nothing else.

This module re-exports the public API; it defines nothing itself.
"""

from chainrule.functional import concatenate, maximum, minimum, stack, where
from chainrule.gradcheck import GradcheckError, gradcheck
from chainrule.random import manual_seed
from chainrule.tensor import Tensor, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

__all__ = [
    "GradcheckError", "Tensor", "concatenate", "gradcheck", "is_grad_enabled", "manual_seed",
    "maximum", "minimum", "no_grad", "stack", "tensor", "where",
]  # fmt: skip
