"""Training: `fit` (the loop), its settings (`FitConfig`), where a run stands (`TrainState`,
`History`), callbacks, and checkpoints. Arrows run one way: state ← callbacks ← checkpoint ← loop.
"""

from chainrule.train.callbacks import Callback, EarlyStopping, LearningRateScheduler
from chainrule.train.checkpoint import CheckpointError
from chainrule.train.config import FitConfig
from chainrule.train.loop import (
    DivergenceWarning,
    NonFiniteError,
    evaluate,
    fit,
    fit_config,
    format_log,
    predict,
)
from chainrule.train.state import History, TrainState

__all__ = [
    "Callback",
    "CheckpointError",
    "DivergenceWarning",
    "EarlyStopping",
    "FitConfig",
    "History",
    "LearningRateScheduler",
    "NonFiniteError",
    "TrainState",
    "evaluate",
    "fit",
    "fit_config",
    "format_log",
    "predict",
]
