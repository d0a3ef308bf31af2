"""chainrule: train neural networks by backpropagation, with NumPy and nothing else.

This module re-exports the public API; it defines nothing itself. The tensor engine, `compile`
and `explain` (names that are submodules too, so they must be bound here) load with it; the rest
(fit, model files, Predictor) loads at first use, keeping `import chainrule` quick.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from chainrule.compile import CompileError, compile
from chainrule.explain import Explanation, explain
from chainrule.functional import concatenate, maximum, minimum, stack, where
from chainrule.gradcheck import GradcheckError, gradcheck
from chainrule.random import manual_seed
from chainrule.tensor import Tensor, is_grad_enabled, no_grad, tensor

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and editors
    from chainrule.files import load, save
    from chainrule.io import ModelFileError
    from chainrule.predictor import Predictor
    from chainrule.train import History, fit
    from chainrule.version import __version__

# Loaded at first use: name -> the module that defines it.
_LAZY = {
    "load": "chainrule.files",
    "save": "chainrule.files",
    "ModelFileError": "chainrule.io",
    "Predictor": "chainrule.predictor",
    "History": "chainrule.train",
    "fit": "chainrule.train",
    "__version__": "chainrule.version",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'chainrule' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
