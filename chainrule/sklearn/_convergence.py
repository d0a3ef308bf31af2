"""_ConvergenceMonitor: the callback that applies sklearn's end-of-epoch rules to a stochastic
fit. The improvement bookkeeping it calls, and the fit itself, live on the estimator (_base.py).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from sklearn.exceptions import ConvergenceWarning

from chainrule.train.callbacks import Callback

if TYPE_CHECKING:
    from chainrule.sklearn._base import _BaseMLP


class _ConvergenceMonitor(Callback):
    """sklearn's end-of-epoch rules: loss_curve_, tol over n_iter_no_change epochs (of the training
    loss, or of the validation score with early_stopping), learning-rate schedules, warnings."""

    def __init__(
        self, estimator: _BaseMLP, n_samples: int, validation: tuple | None, incremental: bool
    ) -> None:
        self.estimator, self.n_samples = estimator, n_samples
        self.validation, self.incremental = validation, incremental

    def on_epoch_end(self, state: Any) -> None:
        mlp = self.estimator
        mlp.n_iter_ += 1
        mlp.t_ += self.n_samples
        # fit averaged the data loss over the epoch's samples; the L2 term joins it here.
        mlp.loss_ = state.logs["loss"] + mlp._penalty_total / self.n_samples
        mlp._penalty_total = 0.0
        mlp.loss_curve_.append(mlp.loss_)
        if mlp.verbose:
            print(f"Iteration {mlp.n_iter_}, loss = {mlp.loss_:.8f}")
        mlp._count_no_improvement(self.validation)
        groups = state.optimizer.param_groups
        schedule = mlp.learning_rate if mlp.solver == "sgd" else "constant"
        if schedule == "invscaling":  # sklearn: lr_init / (samples seen + 1)^power_t
            for group in groups:
                group["lr"] = mlp.learning_rate_init / (mlp.t_ + 1) ** mlp.power_t
        if mlp._no_improvement_count > mlp.n_iter_no_change:
            watched = "Validation score" if self.validation else "Training loss"
            message = (
                f"{watched} did not improve more than tol={mlp.tol:f} for "
                f"{mlp.n_iter_no_change} consecutive epochs."
            )
            if schedule == "adaptive" and groups[0]["lr"] > 1e-6:
                for group in groups:
                    group["lr"] /= 5.0
                mlp._no_improvement_count = 0
                if mlp.verbose:
                    print(f"{message} Setting learning rate to {groups[0]['lr']:f}")
            else:
                if mlp.verbose:
                    print(f"{message} Stopping.")
                state.stop = True
                return
        if not self.incremental and mlp.n_iter_ == mlp.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({mlp.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )
