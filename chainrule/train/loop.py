"""The training loop: `fit` returns a History; callbacks stop early, keep the best weights, schedule
the learning rate; every step is guarded against NaN/Inf (guards.py); checkpoints make a run
resumable (checkpoint.py); evaluation.py evaluates without a graph.

One loop serves the CLI, user scripts, the scikit-learn adapter and data-parallel runs, so they all
train the same way. Each step is the loop users write by hand — zero_grad, forward, loss,
backward, step — compiled once by `chainrule.compile` where it can be, plus bookkeeping that costs
O(1) NumPy calls per parameter.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from chainrule import registry
from chainrule.architecture import describe_model
from chainrule.compile import CompileError
from chainrule.compile import compile as compile_step
from chainrule.nn.module import Module
from chainrule.tensor import Tensor
from chainrule.train import checkpoint
from chainrule.train.callbacks import Callback, LearningRateScheduler
from chainrule.train.config import FitConfig
from chainrule.train.evaluation import (
    LocalProcess,
    batch_selectors,
    correct_count,
    evaluate,
    format_log,
    selection_size,
)
from chainrule.train.guards import (
    DivergenceWarning,
    NonFiniteError,
    check_training_data,
    first_non_finite,
    first_non_finite_output,
    weights_finite,
)
from chainrule.train.state import History, TrainState

__all__ = ["fit", "fit_config"]

# Data up to this size is shuffled as a whole once per epoch (a second copy in memory); larger
# data is gathered batch by batch.
_EPOCH_COPY_BYTES = 256 * 2**20
# Epochs of one batch run as one scan of the compiled step up to this many rows in all (the scan
# keeps every step's output).
_SCAN_ROWS = 2**16
# ... and at most this many epochs at once where a progress bar is shown.
_SCAN_EPOCHS_WITH_A_BAR = 100
# An epoch's loss this many times its first epoch's is a run going the wrong way.
_DIVERGENCE_FACTOR = 1e3
# A run that ends this far above its first step's loss made things worse.
_WORSE_FACTOR = 1.5


# ---- the run -----------------------------------------------------------------------------------
def _model_signature(model: Module) -> Any:
    """The model as JSON: its model-file architecture, or for modules of the user's own their
    types and parameter shapes (what two runs must share to be the same run)."""
    try:
        return describe_model(model)
    except (TypeError, ValueError):
        return {
            "modules": [
                f"{name}: {type(module).__name__}" for name, module in model.named_modules()
            ],
            "parameters": {
                name: [list(p.shape), p.dtype.name] for name, p in model.named_parameters()
            },
        }


def _as_float_targets(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return y.astype(dtype, copy=False) if y.dtype.kind == "f" else y


class _Run:
    """One call of `fit`: the data, the objects it trains, and the loop over epochs and steps.

    Everything a checkpoint needs lives in `self.state` (a TrainState); this class only holds
    what the caller passed in.
    """

    def __init__(
        self,
        model: Module,
        X: np.ndarray,
        y: np.ndarray,
        config: FitConfig,
        validation_data: tuple[np.ndarray, np.ndarray] | None,
        callbacks: Sequence[Callback],
        rng: Any,
        print_fn: Callable[[str], None],
        process: Any,
    ) -> None:
        X, y = np.asarray(X), np.asarray(y)
        check_training_data(X, y)
        dtype = model.dtype
        self.model, self.config = model, config
        # C-contiguous (a copy only where they are not), so that an epoch's batches can be read
        # in place by one scan of the compiled step.
        self.X = np.ascontiguousarray(X.astype(dtype, copy=False))
        self.y = np.ascontiguousarray(_as_float_targets(y, dtype))
        self.n = len(X)
        self.batch_size = self.n if config.batch_size is None else int(config.batch_size)
        self.loss_fn = registry.get_loss(config.loss, "fit")
        self.classification = config.is_classification
        optimizer = config.optimizer
        if isinstance(optimizer, str):
            optimizer = registry.make_optimizer(
                optimizer, model.parameters(), config.lr, config.momentum, config.weight_decay
            )
        self.optimizer = optimizer
        scheduler = config.scheduler
        if isinstance(scheduler, str):
            scheduler = registry.make_schedule(scheduler, optimizer, config.epochs, "fit")
        self.callbacks = list(callbacks)
        if scheduler is not None:
            self.callbacks.append(LearningRateScheduler(scheduler))
        self.validation = None
        if validation_data is not None:
            val_X, val_y = (np.asarray(a) for a in validation_data)
            self.validation = (val_X.astype(dtype, copy=False), _as_float_targets(val_y, dtype))
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.print_fn = self.log = print_fn
        self.process = process or LocalProcess()
        self.parameters = list(model.parameters())
        self.state = TrainState(model, self.optimizer, History(), generator)
        # Taken before training changes anything (a schedule changes the learning rate), so the
        # run that saves a checkpoint and the run that resumes from it compute the same hash.
        self.config_sha256 = ""
        if config.checkpoint is not None:
            self.config_sha256 = checkpoint.config_hash(self.configuration())
        self.step = self._make_step()
        self.epoch_outputs: np.ndarray | None = None  # one epoch's outputs, for its accuracy
        self.warned_of_divergence = False
        self.first_loss: float | None = None
        # Between epochs only what reads the weights needs them checked (validation, callbacks
        # that keep the best ones, checkpoints); otherwise the next step's loss check catches a
        # non-finite weight, and the run's end checks the last update.
        self.batches_in_order = batch_selectors(self.n, self.batch_size, None)
        self.batch_sizes = [selection_size(s) for s in self.batches_in_order]
        self.shuffled = config.shuffle and self.batch_size < self.n
        self.check_weights_each_epoch = bool(
            self.validation is not None or self.callbacks or config.checkpoint
        )
        # Only callbacks that define on_step_end are called each step.
        self.step_callbacks = [
            c
            for c in self.callbacks
            if getattr(type(c), "on_step_end", None) is not Callback.on_step_end
        ]

    def configuration(self) -> dict[str, Any]:
        """What decides the trajectory; a checkpoint refuses to resume a run that differs in any
        of it."""
        optimizer = self.config.optimizer
        return {
            "model": _model_signature(self.model),
            "loss": self.config.loss_name,
            "optimizer": optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
            "optimizer_options": [
                {k: v for k, v in group.items() if k != "params"}
                for group in self.optimizer.param_groups
            ],
            "batch_size": self.batch_size,
            "shuffle": self.config.shuffle,
            "classification": self.classification,
            "data": checkpoint.fingerprint(self.X, self.y),
            "validation": None
            if self.validation is None
            else checkpoint.fingerprint(*self.validation),
            "callbacks": [type(c).__name__ for c in self.callbacks],
        }

    def _check_ranks_agree(self) -> None:
        """Every rank must run the same configuration on the same data, or they train apart
        (or hang, or crash in MPI): one small collective compares them all before any step."""
        settings = {
            key: json.dumps(value, sort_keys=True, default=str)
            for key, value in self.configuration().items()
        }
        settings["epochs"] = self.config.epochs
        settings["steps_per_epoch"] = -(-self.n // self.batch_size)
        self.process.check_agreement(settings)

    def _make_step(self) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The training step as users write it, compiled (`chainrule.compile`) unless the run
        says not to. It returns the loss and the output as arrays, which the loop reads before
        the next step: the compiled step hands back its own buffers (no copy, no Tensor).

        Eagerly, a non-finite loss returns before the update, so the weights stay as they were
        and the guard can say where NaN began; a compiled step has applied its update by then.
        """
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn

        def eager_step(xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            optimizer.zero_grad()
            output = model(xb)
            loss = loss_fn(output, yb)
            if math.isfinite(loss.item()):
                loss.backward()
                optimizer.step()
            return loss.data, output.data

        self.eager_step = eager_step
        self.compiled_step: Any = None
        if (
            not self.config.compile
            or self.config.checkpoint is not None
            or not isinstance(self.config.loss, str)
        ):
            # A trace runs its step eagerly and replays then run compiled, whose sums may round
            # differently; a resumed run would trace at another step than the run it continues,
            # so checkpointed runs step eagerly to stay bit-identical to one never stopped. A
            # loss function of the caller's may compute with arrays outside chainrule's ops
            # (indexing its own targets by the batch, as the scikit-learn adapter does), which a
            # replay would keep as constants: it steps eagerly too.
            return eager_step

        def train_step(xb: np.ndarray, yb: np.ndarray) -> tuple[Tensor, Tensor]:
            optimizer.zero_grad()
            output = model(xb)
            loss = loss_fn(output, yb)
            loss.backward()
            optimizer.step()
            return loss, output

        # A CompileError comes from the first trace, before the step changed anything: the loop
        # then steps eagerly (see _train_epoch).
        self.compiled_step = compile_step(train_step, results="views")
        return self.compiled_step

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> History:
        state, config = self.state, self.config
        if config.resume:
            path = checkpoint.restore(config.checkpoint, state, self.callbacks, self.config_sha256)
            self.resumed_from = path
        else:
            if config.checkpoint is not None and not config.overwrite:
                checkpoint.check_unused(config.checkpoint)
            self.process.broadcast_parameters(self.model)
        if not isinstance(self.process, LocalProcess):
            self._check_ranks_agree()
        start_epoch, start_step = state.epoch, state.step
        bar = self._progress_bar() if self.process.is_root else None
        self.log = bar.write if bar is not None else self.print_fn
        if bar is not None:
            bar.update(start_epoch)
        for callback in self.callbacks:
            callback.on_train_begin(state)
        if not weights_finite(self.parameters):
            raise NonFiniteError(
                f"training stopped at epoch {start_epoch}, step {start_step}: "
                f"{first_non_finite(self.model)} is NaN or Inf before the first step"
            )
        self.model.train()
        # The loop checks every loss and weight for NaN/Inf itself and stops with the epoch, step
        # and parameter named, so NumPy's overflow warnings on the way would only be noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            epoch = start_epoch
            while epoch < config.epochs and not state.stop:
                span = self._epochs_in_one_go(epoch, start_step if epoch == start_epoch else 0)
                if bar is not None:
                    span = min(span, _SCAN_EPOCHS_WITH_A_BAR)  # the bar moves between scans
                if span > 1 and self._train_epochs_in_one_go(epoch, span, bar):
                    epoch += span
                    continue
                state.epoch = epoch
                self._train_epoch(epoch, start_step if epoch == start_epoch else 0)
                self._end_epoch(epoch, bar)
                epoch += 1
        if bar is not None:
            bar.close()
        self._watch_the_ending()
        for callback in self.callbacks:
            callback.on_train_end(state)
        self._say_how_it_ended()
        return state.history

    def _train_epoch(self, epoch: int, first_step: int) -> None:
        state, process, config = self.state, self.process, self.config
        generator = state.generator
        if first_step == 0:
            # Only a resume into the middle of this epoch draws its order again from here.
            if config.checkpoint_steps:
                state.epoch_start_generator = generator.bit_generator.state
            state.running = (0.0, 0.0)
        else:  # resuming mid-epoch: draw this epoch's order again from the state it began with
            generator.bit_generator.state = state.epoch_start_generator
        order = generator.permutation(self.n) if self.shuffled else None
        process.check_order(order, self.n)
        X, y = self.X, self.y
        if order is not None and X.nbytes + y.nbytes <= _EPOCH_COPY_BYTES:
            # One gather per epoch, then every batch is a slice (a view): the same samples in the
            # same order as indexing each batch, for one NumPy call instead of one per batch.
            X, y, order = X[order], y[order], None
        in_order = self.batches_in_order  # also where each batch sits in the epoch
        batches = in_order if order is None else batch_selectors(self.n, self.batch_size, order)
        # This process's running sums (Python floats: cheaper per step than arrays).
        loss_sum, correct = 0.0, 0.0
        if first_step:
            # Go on adding to the saved running sums rather than summing two halves at the end:
            # the additions then happen in the order of a run that was never stopped.
            if process.is_root:
                loss_sum, correct = state.running
        alone = type(process) is LocalProcess  # then every sample is this process's
        # Alone, each step's output is kept in the epoch's place and the epoch's accuracy counted
        # once at its end (one argmax for the epoch, not one per step).
        outputs = self.epoch_outputs if alone and self.classification else None
        counted = in_order[first_step].start if first_step else 0  # rows counted so far
        step_callbacks = self.step_callbacks
        checkpoint_steps = config.checkpoint_steps if config.checkpoint else None
        # Locals: this loop's own Python is a share of a small network's compiled step.
        sizes, isfinite, step_fn = self.batch_sizes, math.isfinite, self.step
        classification, last = self.classification, len(batches) - 1
        if (
            alone
            and not first_step
            and order is None
            and len(batches) > 2
            and self.step is self.compiled_step
            and not step_callbacks
            and not checkpoint_steps
        ):
            first_step, loss_sum, correct = self._scan_full_batches(X, y, epoch)
            counted = in_order[first_step - 1].stop if first_step else 0
        for step in range(first_step, len(batches)):
            state.step = step
            selector = batches[step]
            if alone:
                xb = X[selector]
                try:
                    loss, output = step_fn(xb, y[selector])
                except CompileError:  # from the first trace, before the step changed anything
                    step_fn = self.step = self.eager_step
                    loss, output = step_fn(xb, y[selector])
                value = loss.item()
                if not isfinite(value):
                    self._stop_on_non_finite(value, xb, epoch, step)
                if self.first_loss is None:
                    self.first_loss = value  # the loss before any update: where it started
                loss_sum += value * sizes[step]
                if classification:
                    if outputs is None:
                        outputs = self.epoch_outputs = np.empty(
                            (self.n, *output.shape[1:]), output.dtype
                        )
                    outputs[in_order[step]] = output
            else:
                selector = process.shard(selector, sizes[step])
                local_count = selection_size(selector)
                value, output, yb = self._take_distributed_step(
                    X[selector], y[selector], local_count, sizes[step], epoch, step
                )
                if local_count:
                    loss_sum += value * local_count
                    if classification:
                        correct += correct_count(output.data, yb, config.loss_name)
            state.global_step += 1
            if step_callbacks:
                for callback in step_callbacks:
                    callback.on_step_end(state)
            if checkpoint_steps and step < last and state.global_step % checkpoint_steps == 0:
                self._check_weights(epoch, step)
                if outputs is not None:
                    done = in_order[step].stop
                    correct += self._correct(outputs, y, order, counted, done)
                    counted = done
                state.running = tuple(process.sum(np.array([loss_sum, correct])))
                self._save_checkpoint(epoch, step + 1)
        if self.check_weights_each_epoch or epoch + 1 == config.epochs:
            self._check_weights(epoch, len(batches) - 1)
        if outputs is not None:
            correct += self._correct(outputs, y, order, counted, self.n)
        if alone:
            state.running = (loss_sum, correct)
        else:
            state.running = tuple(process.sum(np.array([loss_sum, correct])))

    def _scan_full_batches(self, X: np.ndarray, y: np.ndarray, epoch: int) -> tuple:
        """Every full batch of the epoch in one `scan` of the compiled step (one call into C where
        the interpreter runs it): (steps taken, loss sum, correct count), the sums added in the
        per-step loop's order. (0, 0.0, 0.0) where the step turned out not to compile."""
        size = self.batch_size
        try:
            losses, outputs = self.step.scan(X, y, batch_size=size)
        except CompileError:  # from the first trace, before the step changed anything
            self.step = self.eager_step
            return 0, 0.0, 0.0
        values = losses.tolist()
        loss_sum, isfinite = 0.0, math.isfinite
        for step, value in enumerate(values):
            if not isfinite(value):
                self.state.step = step
                self._stop_on_non_finite(value, X[step * size : (step + 1) * size], epoch, step)
            loss_sum += value * size
        if self.first_loss is None:
            self.first_loss = values[0]
        correct = 0.0
        if self.classification:
            rows = outputs.reshape(len(values) * size, *outputs.shape[2:])
            correct += correct_count(rows, y[: len(rows)], self.config.loss_name)
        self.state.step = len(values) - 1
        self.state.global_step += len(values)
        return len(values), loss_sum, correct

    def _epochs_in_one_go(self, epoch: int, first_step: int) -> int:
        """How many epochs from `epoch` can run as one scan: where an epoch is one full batch and
        nothing looks at the run between epochs (callbacks, validation, checkpoints), up to the
        next epoch that logs; 1 otherwise."""
        if (
            first_step
            or len(self.batches_in_order) != 1
            or self.step is not self.compiled_step
            or self.callbacks
            or self.validation is not None
            or self.config.checkpoint
            or type(self.process) is not LocalProcess
        ):
            return 1
        span = min(self.config.epochs - epoch, max(1, _SCAN_ROWS // self.n))
        log_every = self.config.log_every
        if log_every:
            span = min(span, log_every - epoch % log_every if epoch % log_every else 1)
        return span

    def _train_epochs_in_one_go(self, epoch: int, span: int, bar: Any) -> bool:
        """`span` one-batch epochs as one scan of the compiled step, then each epoch's ending as
        if stepped alone; False (nothing done) where the step turned out not to compile."""
        state, n = self.state, self.n
        try:
            losses, outputs = self.step.scan(self.X, self.y, batch_size=n, repeat=span)
        except CompileError:  # from the first trace, before the step changed anything
            self.step = self.eager_step
            return False
        for k, value in enumerate(losses.tolist()):
            state.epoch = epoch + k
            state.step = 0
            if not math.isfinite(value):
                self._stop_on_non_finite(value, self.X, epoch + k, 0)
            if self.first_loss is None:
                self.first_loss = value
            correct = 0.0
            if self.classification:
                correct += correct_count(outputs[k], self.y, self.config.loss_name)
            state.running = (0.0 + value * n, correct)
            state.global_step += 1
            if epoch + k + 1 == self.config.epochs:
                self._check_weights(epoch + k, 0)
            self._end_epoch(epoch + k, bar)
        return True

    def _correct(
        self, outputs: np.ndarray, y: np.ndarray, order: np.ndarray | None, start: int, stop: int
    ) -> int:
        """How many of the epoch's rows start:stop the kept outputs classify right (`y` in the
        epoch's order, or in the data's with `order` the epoch's permutation)."""
        targets = y[start:stop] if order is None else y[order[start:stop]]
        return correct_count(outputs[start:stop], targets, self.config.loss_name)

    def _take_distributed_step(
        self,
        xb: np.ndarray,
        yb: np.ndarray,
        local_count: int,
        global_count: int,
        epoch: int,
        step: int,
    ) -> tuple[float, Tensor | None, np.ndarray]:
        """The step with the ranks' gradients averaged between backward and the update."""
        self.optimizer.zero_grad()
        value, output = 0.0, None
        if local_count:
            output = self.model(xb)
            loss = self.loss_fn(output, yb)
            value = loss.item()
            if not math.isfinite(value):
                self._stop_on_non_finite(value, xb, epoch, step)
            loss.backward()
        self.process.average_gradients(self.parameters, local_count, global_count)
        self.optimizer.step()
        return value, output, yb

    def _stop_on_non_finite(self, value: float, xb: np.ndarray, epoch: int, step: int) -> None:
        where = first_non_finite(self.model) or first_non_finite_output(self.model, xb)
        raise NonFiniteError(
            f"training stopped at epoch {epoch}, step {step}: the loss is {value}; first "
            f"non-finite value: {where} (try a smaller learning rate)"
        )

    def _check_weights(self, epoch: int, step: int) -> None:
        """Stop if an update made a weight NaN/Inf. Checked at the end of the run, before every
        checkpoint, and once an epoch when something reads the weights between epochs; not
        every step: a non-finite weight makes the next step's loss non-finite, and that check
        (every step) names the same parameter, one step later at most."""
        if not weights_finite(self.parameters):
            raise NonFiniteError(
                f"training stopped at epoch {epoch}, step {step}: "
                f"{first_non_finite(self.model)} became NaN or Inf (try a smaller learning rate)"
            )

    def _end_epoch(self, epoch: int, bar: Any) -> None:
        state, config = self.state, self.config
        logs = {"loss": float(state.running[0] / self.n)}
        if self.classification:
            logs["accuracy"] = float(state.running[1] / self.n)
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
        self._watch_divergence(epoch)
        if config.log_every and epoch % config.log_every == 0 and self.process.is_root:
            self.log(format_log(epoch, logs))
        if bar is not None:
            bar.set_postfix_str(f"loss {logs['loss']:.4f}", refresh=False)
            bar.update(1)
        last = epoch + 1 == config.epochs or state.stop
        if config.checkpoint and ((epoch + 1) % config.checkpoint_every == 0 or last):
            state.running = (0.0, 0.0)
            self._save_checkpoint(epoch + 1, 0)

    def _watch_divergence(self, epoch: int) -> None:
        """Warn once when the epoch's loss has grown far past the loss the run started from (its
        first step's, before any update; after a resume, the first epoch's): a diverging run."""
        losses = self.state.history.loss
        first = self.first_loss if self.first_loss is not None else losses[0]
        now = losses[-1]
        if now > _DIVERGENCE_FACTOR * first > 0 and not self.warned_of_divergence:
            self.warned_of_divergence = True
            warnings.warn(
                f"training is diverging: at epoch {epoch} the loss is {now:.4g}, more than "
                f"{_DIVERGENCE_FACTOR:g}× the {first:.4g} it started from (try a smaller "
                "learning rate)",
                DivergenceWarning,
                stacklevel=6,
            )

    def _watch_the_ending(self) -> None:
        """Warn when a run ends with its loss above where it started: it got worse, not better
        (a learning rate so large that saturated units stopped every gradient ends so, with a
        loss that never grew 1000×)."""
        losses = self.state.history.loss
        if self.warned_of_divergence or self.first_loss is None or not losses:
            return
        if losses[-1] > _WORSE_FACTOR * self.first_loss > 0:
            self.warned_of_divergence = True
            warnings.warn(
                f"training ended with the loss at {losses[-1]:.4g}, above the "
                f"{self.first_loss:.4g} it started from: it did not learn (try a smaller "
                "learning rate)",
                DivergenceWarning,
                stacklevel=4,
            )

    def _save_checkpoint(self, epoch: int, step: int) -> None:
        if not self.process.is_root:
            return
        state = self.state
        position = (state.epoch, state.step)
        state.epoch, state.step = epoch, step
        try:
            checkpoint.save(self.config.checkpoint, state, self.callbacks, self.config_sha256)
        finally:
            state.epoch, state.step = position

    def _say_how_it_ended(self) -> None:
        history = self.state.history
        if not (self.config.log_every and self.process.is_root):
            return
        if history.stopped_early:
            restored = next(
                (c for c in self.callbacks if getattr(c, "restore_best_weights", False)), None
            )
            note = f"; the weights of epoch {history.best_epoch} are restored" if restored else ""
            self.log(f"Stopped early after epoch {history.epochs[-1]}{note}")

    def _progress_bar(self) -> Any:
        progress = self.config.progress
        if progress is False or (progress is None and not sys.stderr.isatty()):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.config.epochs,
            unit="epoch",
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )


def fit(
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
    overwrite: bool = False,
    process: Any = None,
    compile: bool = True,
) -> History:
    """Train `model` on (X, y) by mini-batch gradient descent and return the History.

    - loss: a name from `chainrule.registry.LOSSES` (mse = mean((ŷ − y)²), half_mse = the
      tutorial's ½·mean((ŷ − y)²), bce, bce_logits, cross_entropy, huber) or a function
      `(output, target) -> Tensor`.
    - optimizer: a name from `chainrule.registry.OPTIMIZERS` (sgd, adam, adamw, rmsprop,
      adagrad), built with `lr`, `momentum` and `weight_decay`; or an Optimizer.
    - epochs; batch_size (None: the full batch, as in the founding tutorial); shuffle (each epoch,
      from `rng`, a seed or a numpy Generator).
    - validation_data=(X_val, y_val): evaluated after each epoch (val_loss, val_accuracy).
    - classification: report accuracy (None: yes for cross_entropy, bce, bce_logits).
    - callbacks (e.g. `EarlyStopping`); scheduler: a name from `chainrule.registry.SCHEDULES`
      (step, exponential, cosine, plateau) or a schedule object, stepped each epoch.
    - log_every N: print `Epoch N, Loss: x.xxxx` every N epochs with `print_fn`; progress: a tqdm
      bar (None: only when stderr is a terminal).
    - checkpoint (a directory), checkpoint_every (epochs), checkpoint_steps (optimizer steps):
      resumable checkpoints; resume=True continues from the newest one, bit-identical to a run
      never stopped; a directory holding another run's checkpoints is refused unless resume or
      overwrite is given.
    - process: a `chainrule.distributed` process group for data-parallel training.
    - compile: trace the step once and replay it (`chainrule.compile`); the numbers are the
      eager step's to rounding (float64: 1e-12 relative). Data-parallel and checkpointed runs,
      and runs with a loss function of your own, step eagerly.

    Raises NonFiniteError when a loss or weight becomes NaN/Inf (naming the epoch, step and
    parameter); warns with DivergenceWarning when the loss grows 1000× past its first epoch's.

    >>> import numpy as np, chainrule as cr
    >>> from chainrule import nn
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    >>> y = np.array([0, 1, 1, 0])
    >>> model = nn.Sequential(nn.Linear(2, 8, rng=0), nn.Tanh(), nn.Linear(8, 2, rng=1))
    >>> history = cr.fit(model, X, y, loss="cross_entropy", optimizer="adam", lr=0.05, epochs=200)
    >>> history.metrics["accuracy"][-1]
    1.0
    """
    config = FitConfig(
        loss=loss,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=shuffle,
        classification=classification,
        scheduler=scheduler,
        log_every=log_every,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_steps=checkpoint_steps,
        resume=resume,
        overwrite=overwrite,
        compile=compile,
    )
    return fit_config(model, X, y, config, validation_data, callbacks, rng, print_fn, process)


def fit_config(
    model: Module,
    X: np.ndarray,
    y: np.ndarray,
    config: FitConfig,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[Callback] = (),
    rng: Any = 0,
    print_fn: Callable[[str], None] = print,
    process: Any = None,
) -> History:
    """`fit` with its settings given as one FitConfig (e.g. `dataclasses.replace`d from
    another run's)."""
    if not isinstance(config, FitConfig):
        raise TypeError(f"fit_config needs a FitConfig, got {type(config).__name__}")
    run = _Run(model, X, y, config, validation_data, callbacks, rng, print_fn, process)
    return run.run()
