"""chainrule: train neural networks by backpropagation, with NumPy and nothing else.

This module re-exports the public API; it defines nothing itself.
"""

from chainrule.compile import CompileError, compile
from chainrule.explain import Explanation, explain
from chainrule.files import load, save
from chainrule.functional import concatenate, maximum, minimum, stack, where
from chainrule.gradcheck import GradcheckError, gradcheck
from chainrule.io import ModelFileError
from chainrule.predictor import Predictor
from chainrule.random import manual_seed
from chainrule.tensor import Tensor, is_grad_enabled, no_grad, tensor
from chainrule.train import History, fit
from chainrule.version import __version__

__all__ = [
    "CompileError",
    "Explanation",
    "GradcheckError",
    "__version__",
    "History",
    "ModelFileError",
    "Predictor",
    "Tensor",
    "compile",
    "concatenate",
    "explain",
    "fit",
    "gradcheck",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "maximum",
    "minimum",
    "no_grad",
    "save",
    "stack",
    "tensor",
    "where",
]
