"""Training: `fit` (the loop), its settings (`FitConfig`), where a run stands (`TrainState`,
`History`), callbacks, checkpoints, guards and evaluation. Arrows run one way: state ← callbacks ←
checkpoint ← loop.
"""

from chainrule.train.callbacks import Callback, EarlyStopping, LearningRateScheduler
from chainrule.train.checkpoint import CheckpointError
from chainrule.train.config import FitConfig
from chainrule.train.evaluation import evaluate, format_log, predict
from chainrule.train.guards import DivergenceWarning, NonFiniteError
from chainrule.train.loop import fit, fit_config
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
