"""A whole training run from a config: data, splits, standardisation, model, fit, test metrics.

`TrainConfig` holds every choice with its default; `PRESETS` adjust it per built-in dataset (so
`chainrule train xor` is the founding tutorial's setup with a hidden layer). The CLI fills a config
from its flags and calls `run`; scripts can do the same.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chainrule import nn
from chainrule.data import Standardizer, one_hot, split_indices
from chainrule.datasets import DATASETS
from chainrule.registry import ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES
from chainrule.train import EarlyStopping, History, evaluate, fit, predict
from chainrule.validation import check_choice, check_int, check_number, float_dtype

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TrainConfig:
    """A whole `chainrule train` run: the data's splits and scaling, the network, and the
    settings handed to `fit`. Fields left at None take their documented default."""

    dataset: str = "moons"
    hidden: tuple[int, ...] = (32, 32)  # hidden layer sizes; () is the tutorial's single layer
    activation: str = "relu"  # a hidden activation of chainrule.registry.ACTIVATIONS
    loss: str | None = None  # None: cross_entropy for classification, mse for regression
    optimizer: str = "adam"  # a name of chainrule.registry.OPTIMIZERS
    lr: float = 0.01
    momentum: float = 0.0  # sgd and rmsprop only
    weight_decay: float = 0.0
    scheduler: str | None = None  # a name of chainrule.registry.SCHEDULES; None: constant lr
    epochs: int = 100
    batch_size: int | None = 32  # None: the full batch, as in the tutorial
    log_every: int | None = None  # None: about ten lines per run
    seed: int = 0
    val_split: float = 0.0
    test_split: float = 0.2
    standardize: bool = True  # features to zero mean and unit variance (train split's statistics)
    dtype: str = "float32"
    label_column: Any = -1  # CSV only: index or header name of the target column
    early_stopping: int | None = None  # patience in epochs (needs val_split > 0)
    # 3×3 convolutions (padding 'same', ReLU) with these channel counts, a 2×2 max-pool after the
    # last, then Flatten and the hidden layers; () keeps the plain MLP
    conv: tuple[int, ...] = ()
    # (channels, height, width) of each row of a table of pixels; None: the data's own shape
    image_shape: tuple[int, ...] | None = None


# Per-dataset defaults, chosen so each built-in trains well in a few seconds.
# The founding tutorial's setup: sigmoid units, its ½·MSE loss, plain full-batch gradient descent,
# seed 0, the four rows of a truth table kept whole (no test split, no scaling).
_TRUTH_TABLE = dict(
    activation="sigmoid",
    loss="half_mse",
    optimizer="sgd",
    lr=1.0,
    batch_size=None,
    test_split=0.0,
    standardize=False,
)
PRESETS: dict[str, dict[str, Any]] = {
    # The tutorial's XOR plus the hidden layer it lacks, a log line every 1 000 epochs. Its
    # learning rate of 0.1 is too small for the hidden layer to separate XOR within 10 000
    # epochs; 1.0 is not.
    "xor": dict(hidden=(4,), **_TRUTH_TABLE, epochs=10_000, log_every=1_000),
    # AND and OR are linearly separable: the tutorial's single unit learns them.
    "and": dict(hidden=(), **_TRUTH_TABLE, epochs=2_000, log_every=200),
    "or": dict(hidden=(), **_TRUTH_TABLE, epochs=2_000, log_every=200),
    "digits": dict(
        hidden=(128,),
        activation="relu",
        optimizer="adam",
        lr=2e-3,
        epochs=40,
        batch_size=32,
        log_every=5,
        test_split=0.2,
    ),
    # With --conv: the reference PyTorch CNN's head and learning rate (dense 64, Adam 2e-3); ten
    # epochs reach 0.98-0.99 on the test split, thirty add little but time.
    "digits+conv": dict(hidden=(64,), lr=2e-3, epochs=10, log_every=1),
    "spirals": dict(hidden=(64, 64), activation="tanh", epochs=300, lr=0.01),
    # A table of the user's own (a CSV, NPZ or IDX file): usually small, so a validation split
    # and early stopping keep the network from learning the training rows by heart.
    "file": dict(val_split=0.2, early_stopping=30, epochs=500),
}


def preset_name(dataset: str) -> str | None:
    """Which preset a dataset takes: its own, "file" for a data file, or None."""
    if dataset in PRESETS:
        return dataset
    return None if dataset in DATASETS else "file"


def config_for(dataset: str, **overrides: Any) -> TrainConfig:
    """The dataset's preset, then `overrides` (None values mean 'not given')."""
    preset = preset_name(dataset)
    values = dict(PRESETS[preset]) if preset else {}
    if overrides.get("conv") and f"{preset}+conv" in PRESETS:
        values.update(PRESETS[f"{preset}+conv"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training options: {', '.join(unknown)}")
    return validate(TrainConfig(dataset=dataset, **values))


def validate(config: TrainConfig) -> TrainConfig:
    """`config` if every field is in range, else a ValueError naming the field and value."""
    check_choice("", "activation", config.activation, HIDDEN_ACTIVATIONS)
    check_choice("", "optimizer", config.optimizer, OPTIMIZERS)
    check_choice("", "dtype", config.dtype, DTYPES)
    if config.loss is not None:
        check_choice("", "loss", config.loss, LOSSES)
    if config.scheduler is not None:
        check_choice("", "scheduler", config.scheduler, SCHEDULES)
    for size in config.hidden:
        check_int("", "hidden layer size", size, low=1, high=100_000)
    for channels in config.conv:
        check_int("", "conv channel count", channels, low=1, high=10_000)
    if config.image_shape is not None:
        if len(config.image_shape) != 3:
            raise ValueError(f"image shape must be channels,height,width, got {config.image_shape}")
        for size in config.image_shape:
            check_int("", "image shape size", size, low=1, high=65_536)
    check_number("", "learning rate", config.lr, low=0.0, low_open=True)
    check_number("", "momentum", config.momentum)
    check_number("", "weight decay", config.weight_decay)
    if config.log_every is not None:
        check_int("", "log every", config.log_every, low=1)
    check_int("", "epochs", config.epochs, low=0)
    if config.batch_size is not None:
        check_int("", "batch size", config.batch_size, low=1)
    if config.early_stopping is not None:
        check_int("", "early stopping patience", config.early_stopping, low=0)
    for name in ("val_split", "test_split"):
        check_number("", name.replace("_", " "), getattr(config, name), 0.0, 1.0, high_open=True)
    if config.val_split + config.test_split >= 1:
        raise ValueError("val split + test split must leave some training data")
    return config


@dataclass
class Task:
    """What the data asks of the model: classification with n classes, or regression."""

    classification: bool
    n_classes: int = 0
    n_outputs: int = 1
    class_names: list[str] = field(default_factory=list)


def infer_task(y: np.ndarray) -> Task:
    if y.dtype.kind in "iub":
        classes = int(y.max()) + 1 if len(y) else 0
        return Task(classification=True, n_classes=max(classes, 2), n_outputs=max(classes, 2))
    return Task(classification=False, n_outputs=1 if y.ndim == 1 else y.shape[1])


def default_loss(task: Task) -> str:
    return "cross_entropy" if task.classification else "mse"


def mlp(
    n_features: int,
    hidden: tuple[int, ...],
    activation: str,
    n_outputs: int,
    dtype: Any = np.float32,
    rng: Any = 0,
) -> nn.Sequential:
    """Linear → activation for each hidden size, then a Linear to `n_outputs` (no head): the
    network `chainrule train` and the playground build."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    make_activation = ACTIVATIONS[check_choice("", "activation", activation, HIDDEN_ACTIVATIONS)]
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size, dtype=dtype, rng=rng), make_activation.module()]
        width = size
    layers.append(nn.Linear(width, n_outputs, dtype=dtype, rng=rng))
    return nn.Sequential(*layers)


def cnn(
    input_shape: tuple[int, int, int],
    conv: tuple[int, ...],
    hidden: tuple[int, ...],
    activation: str,
    n_outputs: int,
    dtype: Any = np.float32,
    rng: Any = 0,
) -> nn.Sequential:
    """Conv2d 3×3 (padding 'same') → ReLU for each channel count in `conv`, a 2×2 max-pool after
    the last, Flatten, then `mlp`'s hidden layers and output: the network `chainrule train
    --conv` builds. Input (batch, channels, height, width).

    >>> cnn((1, 8, 8), (4,), (), "relu", 3)[-1]
    Linear(in_features=64, out_features=3, bias=True)
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out in conv:
        layers += [nn.Conv2d(channels, out, 3, padding="same", dtype=dtype, rng=rng), nn.ReLU()]
        channels = out
    if height < 2 or width < 2:
        raise ValueError(f"--conv pools 2×2: images of {height}×{width} are too small")
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    features = channels * (height // 2) * (width // 2)
    return nn.Sequential(*layers, *mlp(features, hidden, activation, n_outputs, dtype, rng))


def build_model(
    config: TrainConfig, n_features: int | tuple[int, ...], task: Task, loss: str
) -> nn.Sequential:
    """The config's MLP (or, with `config.conv`, CNN over inputs of shape `n_features`) with the
    output the loss needs: one logit per class for cross-entropy, a probability (sigmoid or
    softmax head) for losses that take probabilities or values of a classification, and one
    value per target for regression."""
    outputs = task.n_outputs
    if task.classification and loss != "cross_entropy":
        outputs = 1 if task.n_classes == 2 else task.n_classes
    dtype = float_dtype(config.dtype)
    if config.conv:
        shape = tuple(n_features) if isinstance(n_features, tuple) else ()
        if len(shape) != 3:
            raise ValueError(
                f"--conv needs images (channels, height, width), the data has rows of shape "
                f"{shape or (n_features,)}; give --image-shape C,H,W for a table of pixels"
            )
        model = cnn(
            shape, config.conv, config.hidden, config.activation, outputs, dtype, config.seed
        )
    else:
        model = mlp(n_features, config.hidden, config.activation, outputs, dtype, config.seed)
    if task.classification and LOSSES[loss].output != "logits":
        model.append(nn.Sigmoid() if outputs == 1 else nn.Softmax())
    return model


def shape_targets(y: np.ndarray, task: Task, loss: str, dtype: Any) -> np.ndarray:
    """Targets in the form the loss takes: class indices, a probability column, one-hot, or
    values."""
    if not task.classification:
        return (y.reshape(-1, 1) if y.ndim == 1 else y).astype(dtype)
    if loss == "cross_entropy":
        return y.astype(np.int64)
    if task.n_classes == 2:
        return y.reshape(-1, 1).astype(dtype)
    return one_hot(y, task.n_classes, dtype)


def as_images(X: np.ndarray, config: TrainConfig) -> np.ndarray:
    """X as (n, channels, height, width) when the config trains a CNN: rows of a table reshaped
    to `config.image_shape`, images kept; X unchanged for an MLP."""
    if not config.conv:
        return X
    if config.image_shape is not None:
        size = int(np.prod(config.image_shape))
        if int(np.prod(X.shape[1:])) != size:
            raise ValueError(
                f"image shape {','.join(map(str, config.image_shape))} holds {size} pixels, the "
                f"data has {int(np.prod(X.shape[1:]))} per row"
            )
        return X.reshape(len(X), *config.image_shape)
    if X.ndim == 3:  # (n, height, width): one channel
        return X[:, None]
    return X


def _pixel_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over every pixel of X, each as a (1,) float64 array; std 0 is stored as 1."""
    mean = X.mean(dtype=np.float64)
    std = X.std(dtype=np.float64)
    return np.array([mean]), np.array([std if std > 1e-12 * max(1.0, abs(mean)) else 1.0])


@dataclass
class RunResult:
    model: nn.Sequential
    history: History
    config: TrainConfig
    task: Task
    loss: str
    metrics: dict[str, float]  # on the test split, or the training data when there is none
    evaluated_on: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    inputs: np.ndarray | None = None  # the evaluated rows (unstandardised), targets, predictions
    targets: np.ndarray | None = None
    predictions: np.ndarray | None = None


def run(
    config: TrainConfig,
    X: np.ndarray,
    y: np.ndarray,
    print_fn: Callable[[str], None] = print,
    progress: bool | None = None,
    **fit_options: Any,
) -> RunResult:
    """Split, standardise, build, train and evaluate, as the config says."""
    task = infer_task(y)
    loss = config.loss or default_loss(task)
    if LOSSES[loss].classification and not task.classification:
        regression = ", ".join(name for name, entry in LOSSES.items() if not entry.classification)
        raise ValueError(
            f"loss {loss} trains classes, but {config.dataset} has numeric targets; use one of "
            f"{regression}"
        )
    dtype = float_dtype(config.dtype)
    train_idx, val_idx, test_idx = split_indices(
        y,
        [config.val_split, config.test_split],
        ["val split", "test split"],
        config.seed,
        allow_empty=True,
    )
    if len(train_idx) == 0:
        raise ValueError("the splits leave no training data")
    X = as_images(X, config)
    raw = X = X.astype(dtype, copy=False)
    mean = std = None
    if X.ndim == 2:
        scaler = Standardizer().fit(X[train_idx])  # statistics of the training split only
        if len(scaler.constant_) == X.shape[1]:  # a few blank pixels (digits) are normal
            warnings.warn(
                "every feature is constant in the training data (up to rounding): the network "
                "has nothing to learn from but the targets' average",
                UserWarning,
                stacklevel=2,
            )
    if config.standardize and X.ndim > 2:
        # Images: one mean and std over all pixels (per-pixel statistics would make a pixel that
        # is always dark in training explode at test time), of the training split only.
        mean, std = _pixel_statistics(X[train_idx])
        X = (X - mean.astype(dtype)) / std.astype(dtype)
    elif config.standardize:
        mean, std = scaler.mean_, scaler.std_
        X = scaler.transform(X)
    targets = shape_targets(y, task, loss, dtype)
    model = build_model(config, X.shape[1] if X.ndim == 2 else X.shape[1:], task, loss)
    callbacks = []
    if config.early_stopping is not None:
        if len(val_idx) == 0:
            raise ValueError("early stopping needs a validation split (--val-split)")
        callbacks.append(EarlyStopping(patience=config.early_stopping))
    log_every = config.log_every or max(1, config.epochs // 10)
    history = fit(
        model,
        X[train_idx],
        targets[train_idx],
        loss=loss,
        optimizer=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        scheduler=config.scheduler,
        epochs=config.epochs,
        batch_size=config.batch_size,
        classification=task.classification,
        validation_data=(X[val_idx], targets[val_idx]) if len(val_idx) else None,
        callbacks=callbacks,
        log_every=log_every,
        rng=config.seed,
        print_fn=print_fn,
        progress=progress,
        **fit_options,
    )
    evaluated_on, rows = ("test", test_idx) if len(test_idx) else ("train", train_idx)
    outputs = predict(model, X[rows])
    metrics = evaluate(model, X[rows], targets[rows], loss, task.classification)
    if not task.classification:
        from chainrule.metrics import mean_squared_error, r2_score

        metrics = {
            "mse": mean_squared_error(outputs, targets[rows]),
            "r2": r2_score(outputs, targets[rows]),
        }
    return RunResult(
        model,
        history,
        config,
        task,
        loss,
        metrics,
        evaluated_on,
        mean,
        std,
        raw[rows],
        y[rows],
        outputs,
    )
