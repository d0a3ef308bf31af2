"""The training loop: `fit` returns a History; callbacks stop early, keep the best weights, schedule
the learning rate; every step is guarded against NaN/Inf; checkpoints make a run resumable.

One loop serves the CLI, user scripts and data-parallel runs, so they all train the same way. Each
step is the loop users write by hand — zero_grad, forward, loss, backward, step — plus bookkeeping
that costs O(1) NumPy calls per parameter.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chainrule import functional as F
from chainrule.callbacks import Callback, EarlyStopping, LRScheduler
from chainrule.metrics import to_labels
from chainrule.nn.module import Module
from chainrule.tensor import Tensor, no_grad

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "LRScheduler",
    "NonFiniteError",
    "TrainState",
    "Trainer",
    "evaluate",
    "fit",
    "predict",
]


# Data up to this size is shuffled as a whole once per epoch (a second copy in memory); larger
# data is gathered batch by batch.
_EPOCH_COPY_BYTES = 256 * 2**20


class NonFiniteError(ArithmeticError):
    """Training produced NaN or Inf; the message names the epoch, the step and where it appeared."""


def _half_mse(prediction: Tensor, target: Any) -> Tensor:
    """The founding tutorial's loss: ½·mean((ŷ − y)²)."""
    return 0.5 * F.mse_loss(prediction, target)


LOSSES: dict[str, Callable[[Tensor, Any], Tensor]] = {
    "mse": F.mse_loss,
    "half_mse": _half_mse,
    "bce": F.binary_cross_entropy,
    "bce_logits": F.binary_cross_entropy_with_logits,
    "cross_entropy": F.cross_entropy,
    "huber": F.huber_loss,
}
CLASSIFICATION_LOSSES = ("cross_entropy", "bce", "bce_logits")


def get_loss(loss: str | Callable) -> Callable[[Tensor, Any], Tensor]:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[loss]


def make_optimizer(
    name: str, parameters: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
):
    """An optimizer by name: sgd, adam, adamw, rmsprop, adagrad."""
    from chainrule import optim

    makers = {
        "sgd": lambda p: optim.SGD(p, lr=lr, momentum=momentum, weight_decay=weight_decay),
        "adam": lambda p: optim.Adam(p, lr=lr, weight_decay=weight_decay),
        "adamw": lambda p: optim.AdamW(p, lr=lr, weight_decay=weight_decay or 1e-2),
        "rmsprop": lambda p: optim.RMSprop(p, lr=lr, momentum=momentum, weight_decay=weight_decay),
        "adagrad": lambda p: optim.Adagrad(p, lr=lr, weight_decay=weight_decay),
    }
    if name not in makers:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(makers)}")
    return makers[name](parameters)


@dataclass
class History:
    """Per-epoch records. `metrics` holds e.g. 'accuracy', 'val_loss', 'val_accuracy', 'lr' lists."""

    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False
    best_epoch: int | None = None

    @property
    def val_loss(self) -> list[float]:
        return self.metrics.get("val_loss", [])

    def record(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        self.loss.append(logs["loss"])
        for name, value in logs.items():
            if name != "loss":
                self.metrics.setdefault(name, []).append(value)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "loss": self.loss, **self.metrics}

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "loss": self.loss,
            "metrics": self.metrics,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        return cls(
            list(state["epochs"]),
            list(state["loss"]),
            {k: list(v) for k, v in state["metrics"].items()},
            bool(state["stopped_early"]),
            state["best_epoch"],
        )


@dataclass
class TrainState:
    """What callbacks see and may change (`stop = True` ends training after this epoch)."""

    model: Module
    optimizer: Any
    history: History
    epoch: int = 0
    step: int = 0  # batch index within the epoch
    global_step: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    stop: bool = False


class LocalProcess:
    """The single-process case of the data-parallel protocol that `chainrule.distributed` implements:
    one rank holding every sample, so sharding and reductions change nothing."""

    rank, world_size, is_root = 0, 1, True

    def check_order(self, order: np.ndarray | None, n: int) -> None:
        pass

    def shard(self, selector: Any, count: int) -> Any:
        return selector

    def average_gradients(
        self, parameters: Sequence[Tensor], local_count: int, global_count: int
    ) -> None:
        pass

    def sum(self, values: np.ndarray) -> np.ndarray:
        return values

    def broadcast_parameters(self, model: Module) -> None:
        pass


def _first_non_finite(model: Module) -> str | None:
    for name, parameter in model.named_parameters():
        if not np.isfinite(parameter.data).all():
            return f"weight {name}"
        if parameter.grad is not None and not np.isfinite(parameter.grad).all():
            return f"gradient of {name}"
    return None


def _first_non_finite_output(model: Module, x: np.ndarray) -> str:
    """Which layer first produces NaN/Inf on x (run again layer by layer, without a graph)."""
    from chainrule.nn.module import Sequential

    if not isinstance(model, Sequential):
        return "the model output"
    with no_grad():
        value: Any = x
        for index, layer in enumerate(model):
            value = layer(value)
            if not np.isfinite(value.data).all():
                return f"the output of layer {index} ({type(layer).__name__})"
    return "the loss"


def _weights_finite(parameters: Sequence[Tensor]) -> bool:
    # One BLAS dot per parameter (the fastest full pass NumPy has): a sum of squares is finite
    # unless a weight is NaN/Inf or huge, and for huge weights isfinite() decides.
    for parameter in parameters:
        flat = parameter.data.reshape(-1)
        if not math.isfinite(np.dot(flat, flat)):
            if not np.isfinite(flat).all():
                return False
    return True


def _batches(n: int, batch_size: int, order: np.ndarray | None) -> list[Any]:
    """Index selectors for one epoch: slices of the data in order, or chunks of a permutation."""
    starts = range(0, n, batch_size)
    if order is None:
        return [slice(s, min(s + batch_size, n)) for s in starts]
    return [order[s : s + batch_size] for s in starts]


def _selection_size(selector: Any) -> int:
    return selector.stop - selector.start if isinstance(selector, slice) else len(selector)


def check_training_data(X: np.ndarray, y: np.ndarray) -> None:
    if X.ndim != 2:
        raise ValueError(
            f"training inputs must be a 2-D array (samples, features), got shape {X.shape}"
        )
    if len(X) != len(y):
        raise ValueError(f"{len(X)} input rows but {len(y)} targets")
    if len(X) == 0:
        raise ValueError("no training samples")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"training inputs must be numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        row = int(np.argwhere(~np.isfinite(X))[0][0])
        raise ValueError(f"training inputs contain NaN or Inf (first in row {row})")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("training targets contain NaN or Inf")


def _correct(output: np.ndarray, target: np.ndarray, loss_name: str) -> int:
    threshold = 0.0 if loss_name == "bce_logits" else 0.5
    labels = to_labels(output, threshold)
    if target.ndim == 2 and target.shape[1] > 1:
        target = target.argmax(axis=1)
    return int(np.count_nonzero(labels == target.reshape(len(target))))


def evaluate(
    model: Module,
    X: np.ndarray,
    y: np.ndarray,
    loss: str | Callable = "mse",
    classification: bool = False,
    batch_size: int = 1024,
    process: Any = None,
) -> dict[str, float]:
    """Loss (and accuracy for classification) on (X, y), in eval mode, without a graph.

    With a data-parallel `process`, each rank evaluates its share and the sums are combined.
    """
    process = process or LocalProcess()
    loss_fn = get_loss(loss)
    loss_name = loss if isinstance(loss, str) else ""
    lo, hi = (
        process.rank * len(X) // process.world_size,
        (process.rank + 1) * len(X) // process.world_size,
    )
    was_training = model.training
    model.eval()
    totals = np.zeros(2)
    with no_grad():
        for selector in _batches(hi - lo, batch_size, None):
            rows = slice(lo + selector.start, lo + selector.stop)
            output = model(X[rows])
            totals[0] += loss_fn(output, y[rows]).item() * (rows.stop - rows.start)
            if classification:
                totals[1] += _correct(output.data, y[rows], loss_name)
    model.train(was_training)
    totals = process.sum(totals)
    result = {"loss": float(totals[0] / len(X))}
    if classification:
        result["accuracy"] = float(totals[1] / len(X))
    return result


def predict(model: Module, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X, in eval mode, without recording a graph."""
    was_training = model.training
    model.eval()
    with no_grad():
        outputs = [model(X[s]).data for s in _batches(len(X), batch_size, None)]
    model.train(was_training)
    return np.concatenate(outputs)


def format_log(epoch: int, logs: dict[str, float]) -> str:
    """The founding tutorial's line, `Epoch N, Loss: x.xxxx`, then validation figures if any."""
    parts = [f"Epoch {epoch}, Loss: {logs['loss']:.4f}"]
    for key, label in {"val_loss": "Val loss", "val_accuracy": "Val accuracy"}.items():
        if key in logs:
            parts.append(f"{label}: {logs[key]:.4f}")
    return ", ".join(parts)


class Trainer:
    """Holds everything a run needs, so that it can be checkpointed and resumed mid-way.

    Use `fit(...)`, which builds one and calls `run()`; the arguments are documented there.
    """

    def __init__(
        self,
        model: Module,
        X: np.ndarray,
        y: np.ndarray,
        *,
        loss: str | Callable = "mse",
        optimizer: Any = "sgd",
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        epochs: int = 10,
        batch_size: int | None = None,
        shuffle: bool = True,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        classification: bool | None = None,
        callbacks: Sequence[Callback] = (),
        scheduler: Any = None,
        log_every: int | None = None,
        progress: bool | None = None,
        rng: Any = 0,
        print_fn: Callable[[str], None] = print,
        checkpoint: str | None = None,
        checkpoint_every: int = 1,
        checkpoint_steps: int | None = None,
        resume: bool = False,
        process: Any = None,
    ) -> None:
        X, y = np.asarray(X), np.asarray(y)
        check_training_data(X, y)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.n = len(X)
        self.batch_size = self.n if batch_size is None else int(batch_size)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if checkpoint_every <= 0 or (checkpoint_steps is not None and checkpoint_steps <= 0):
            raise ValueError("checkpoint intervals must be positive")
        if resume and checkpoint is None:
            raise ValueError("resume needs a checkpoint directory")
        self.model, self.epochs, self.shuffle = model, int(epochs), shuffle
        self.loss_fn = get_loss(loss)
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.classification = (
            self.loss_name in CLASSIFICATION_LOSSES if classification is None else classification
        )
        self.optimizer_name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
        self.optimizer = optimizer
        self.callbacks = list(callbacks) + (
            [LRScheduler(scheduler)] if scheduler is not None else []
        )
        dtype = model.dtype
        self.X = X.astype(dtype, copy=False)
        self.y = y.astype(dtype, copy=False) if y.dtype.kind == "f" else y
        self.validation = None
        if validation_data is not None:
            val_y = np.asarray(validation_data[1])
            self.validation = (
                np.asarray(validation_data[0], dtype=dtype),
                val_y.astype(dtype, copy=False) if val_y.dtype.kind == "f" else val_y,
            )
        self.generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.log_every, self.progress, self.print_fn = log_every, progress, print_fn
        self.checkpoint_dir, self.checkpoint_every = checkpoint, checkpoint_every
        self.checkpoint_steps, self.resume = checkpoint_steps, resume
        self.process = process or LocalProcess()
        self.parameters = list(model.parameters())
        self.state = TrainState(model=model, optimizer=self.optimizer, history=History())
        # Where the run stands inside an epoch, saved in mid-epoch checkpoints.
        self.epoch_start_rng: dict | None = None
        self.partial = np.zeros(
            2
        )  # loss · samples, correct predictions, summed over the epoch so far
        # Taken before training changes anything (a schedule changes the learning rate), so the run
        # that saves a checkpoint and the run that resumes from it compute the same hash.
        self.config_sha256 = None
        if checkpoint is not None:
            from chainrule.checkpoint import config_hash

            self.config_sha256 = config_hash(self.configuration())

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> History:
        state = self.state
        start_epoch, start_step = 0, 0
        if self.resume:
            from chainrule.checkpoint import restore

            start_epoch, start_step = restore(self)
        else:
            self.process.broadcast_parameters(self.model)
        bar = self._progress_bar() if self.process.is_root else None
        self.log = bar.write if bar is not None else self.print_fn
        if bar is not None:
            bar.update(start_epoch)
        for callback in self.callbacks:
            callback.on_train_begin(state)
        self.model.train()
        # The loop checks every loss and weight for NaN/Inf itself and stops with the epoch, step
        # and parameter named, so NumPy's overflow warnings on the way would only be noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(start_epoch, self.epochs):
                state.epoch = epoch
                self._train_epoch(epoch, start_step if epoch == start_epoch else 0)
                self._end_epoch(epoch, bar)
                if state.stop:
                    break
        if bar is not None:
            bar.close()
        for callback in self.callbacks:
            callback.on_train_end(state)
        return state.history

    def _train_epoch(self, epoch: int, first_step: int) -> None:
        state, process, model, optimizer = self.state, self.process, self.model, self.optimizer
        if first_step == 0:
            self.epoch_start_rng = self.generator.bit_generator.state
            self.partial = np.zeros(2)
        else:  # resuming mid-epoch: draw this epoch's order again from the state it began with
            self.generator.bit_generator.state = self.epoch_start_rng
        order = (
            self.generator.permutation(self.n)
            if self.shuffle and self.batch_size < self.n
            else None
        )
        process.check_order(order, self.n)
        X, y = self.X, self.y
        if order is not None and X.nbytes + y.nbytes <= _EPOCH_COPY_BYTES:
            # One gather per epoch, then every batch is a slice (a view): the same samples in the
            # same order as indexing each batch, for one NumPy call instead of one per batch.
            X, y, order = X[order], y[order], None
        batches = _batches(self.n, self.batch_size, order)
        loss_sum, correct = (
            0.0,
            0.0,
        )  # this process's running sums (Python floats: cheaper per step)
        if first_step:
            # Go on adding to the saved running sums rather than summing two halves at the end:
            # the additions then happen in the order of a run that was never stopped.
            if process.is_root:
                loss_sum, correct = (float(v) for v in self.partial)
            self.partial = np.zeros(2)
        alone = type(process) is LocalProcess  # then every sample is this process's
        # Only callbacks that define on_step_end are called each step.
        step_callbacks = [
            c
            for c in self.callbacks
            if getattr(type(c), "on_step_end", None) is not Callback.on_step_end
        ]
        for step in range(first_step, len(batches)):
            state.step = step
            global_count = local_count = _selection_size(batches[step])
            selector = batches[step]
            if not alone:
                selector = process.shard(selector, global_count)
                local_count = _selection_size(selector)
            optimizer.zero_grad()
            if local_count:
                xb, yb = X[selector], y[selector]
                output = model(xb)
                batch_loss = self.loss_fn(output, yb)
                value = batch_loss.item()
                if not math.isfinite(value):
                    raise NonFiniteError(
                        f"training stopped at epoch {epoch}, step {step}: the loss is {value}; first "
                        "non-finite value: "
                        f"{_first_non_finite(model) or _first_non_finite_output(model, xb)} "
                        "(try a smaller learning rate)"
                    )
                batch_loss.backward()
                loss_sum += value * local_count
                if self.classification:
                    correct += _correct(output.data, yb, self.loss_name)
            if not alone:
                process.average_gradients(self.parameters, local_count, global_count)
            optimizer.step()
            state.global_step += 1
            for callback in step_callbacks:
                callback.on_step_end(state)
            mid_epoch = step + 1 < len(batches)
            if (
                self.checkpoint_dir
                and self.checkpoint_steps
                and mid_epoch
                and state.global_step % self.checkpoint_steps == 0
            ):
                self._check_weights(epoch, step)
                self.partial_total = self.partial + process.sum(np.array([loss_sum, correct]))
                self._save_checkpoint(epoch, step + 1)
        self._check_weights(epoch, len(batches) - 1)
        self.partial = self.partial + process.sum(np.array([loss_sum, correct]))

    def _check_weights(self, epoch: int, step: int) -> None:
        """Stop if an update made a weight NaN/Inf. Checked once an epoch and before every
        checkpoint, not every step: a non-finite weight makes the next step's loss non-finite,
        and that check (every step) names the same parameter, one step later at most."""
        if not _weights_finite(self.parameters):
            raise NonFiniteError(
                f"training stopped at epoch {epoch}, step {step}: "
                f"{_first_non_finite(self.model)} became NaN or Inf (try a smaller learning rate)"
            )

    def _end_epoch(self, epoch: int, bar: Any) -> None:
        state = self.state
        logs = {"loss": float(self.partial[0] / self.n)}
        if self.classification:
            logs["accuracy"] = float(self.partial[1] / self.n)
        if self.validation is not None:
            val = evaluate(
                self.model,
                *self.validation,
                self.loss_fn,
                self.classification,
                process=self.process,
            )
            logs.update({f"val_{k}": v for k, v in val.items()})
        state.logs = logs
        for callback in self.callbacks:
            callback.on_epoch_end(state)
        state.history.record(epoch, logs)
        if self.log_every and epoch % self.log_every == 0 and self.process.is_root:
            self.log(format_log(epoch, logs))
        if bar is not None:
            bar.set_postfix_str(f"loss {logs['loss']:.4f}", refresh=False)
            bar.update(1)
        last = epoch + 1 == self.epochs or state.stop
        if self.checkpoint_dir and ((epoch + 1) % self.checkpoint_every == 0 or last):
            self.partial_total = np.zeros(2)
            self._save_checkpoint(epoch + 1, 0)

    def _save_checkpoint(self, epoch: int, step: int) -> None:
        from chainrule.checkpoint import save

        if self.process.is_root:
            save(self, epoch, step)

    def _progress_bar(self) -> Any:
        if self.progress is False or (self.progress is None and not sys.stderr.isatty()):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.epochs, unit="epoch", leave=False, dynamic_ncols=True, file=sys.stderr
        )

    def configuration(self) -> dict[str, Any]:
        """What decides the trajectory; a checkpoint refuses to resume a run that differs in any of it."""
        from chainrule.checkpoint import fingerprint
        from chainrule.io import describe_model

        return {
            "model": describe_model(self.model),
            "loss": self.loss_name,
            "optimizer": self.optimizer_name,
            "optimizer_options": [
                {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
            ],
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "classification": self.classification,
            "data": fingerprint(self.X, self.y),
            "validation": None if self.validation is None else fingerprint(*self.validation),
            "callbacks": [type(c).__name__ for c in self.callbacks],
        }


def fit(model: Module, X: np.ndarray, y: np.ndarray, **options: Any) -> History:
    """Train `model` on (X, y) by mini-batch gradient descent and return the History.

    Options (all keyword): loss (a name — mse, half_mse, bce, bce_logits, cross_entropy, huber — or
    a function), optimizer (a name — sgd, adam, adamw, rmsprop, adagrad, built with lr, momentum and
    weight_decay — or an optimizer), epochs, batch_size (None: the full batch, as in the founding
    tutorial), shuffle, validation_data=(X_val, y_val), callbacks, scheduler, rng (seed or Generator
    for the shuffle), log_every N (print `Epoch N, Loss: x.xxxx` every N epochs), progress (a tqdm
    bar; default: only when stderr is a terminal), print_fn, checkpoint (a directory) with
    checkpoint_every (epochs) and checkpoint_steps, resume (continue from the checkpoint: the result
    is bit-identical to a run that was never stopped), process (a `chainrule.distributed` process
    group for data-parallel training).
    """
    return Trainer(model, X, y, **options).run()
