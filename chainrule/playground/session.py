"""One training session of the playground: its checked settings, the network, its training thread,
and the JSON-ready frames the page draws. Nothing about HTTP lives here (see server.py).

A server holds one Session, so every open tab watches (and steers) the same run. All state is
guarded by one lock; the training thread takes it for one epoch at a time, so a request waits at
most one epoch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainrule import datasets, nn
from chainrule import functional as F
from chainrule.compile import compile as compile_step
from chainrule.experiment import mlp
from chainrule.explain import explain
from chainrule.plots import data_extent, decision_grid
from chainrule.registry import HIDDEN_ACTIVATIONS, OPTIMIZERS, make_optimizer
from chainrule.safetensors_format import printable
from chainrule.tensor import no_grad
from chainrule.validation import check_choice, check_int, check_number

BUILT_IN = ("xor", "moons", "circles", "spirals", "blobs")
VAL_FRACTION = 0.2  # held out for the validation curve
GRID_SIZE = 50  # the decision boundary is sent as GRID_SIZE² predictions
MAX_EPOCHS = 20_000  # a run pauses itself here, so a forgotten tab does not train forever
MAX_CSV_ROWS = 5_000
# Every number the page may send, with its bounds: small enough that one epoch stays fast and the
# diagram stays readable, wide enough to show every effect (too large a learning rate diverges).
BOUNDS: dict[str, tuple[float, float]] = {
    "n_samples": (20, 1000),
    "noise": (0.0, 1.0),
    "layers": (0, 6),  # hidden layers
    "units": (1, 16),  # per hidden layer
    "lr": (1e-5, 10.0),
    "batch_size": (1, 1000),
    "seed": (0, 2**32 - 1),
    "epochs": (1, 1000),  # per "step" request
}


class ConfigError(ValueError):
    """A setting the page sent is missing a bound or has the wrong type; the message names it."""


@dataclass(frozen=True)
class Config:
    dataset: str = "moons"
    n_samples: int = 200  # built-in datasets only; a CSV keeps its own rows
    noise: float = 0.15  # blobs: cluster standard deviation = 10·noise
    hidden: tuple[int, ...] = (8, 8)
    activation: str = "tanh"
    optimizer: str = "adam"
    lr: float = 0.01  # Adam's steps are ~lr in size: moons separates in a few hundred epochs
    batch_size: int = 16  # larger than the training split means the full batch
    seed: int = 0  # data, split, initial weights and shuffling all follow from it

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}


@dataclass(frozen=True)
class CsvData:
    """A 2-feature classification CSV given with `--data`, offered as one more dataset."""

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] | None = None  # the file's own labels, by class index


def load_csv_data(path: str) -> CsvData:
    """The CSV at `path`, checked: 2 feature columns, class labels, at most MAX_CSV_ROWS rows."""
    import os

    loaded = datasets.load_csv(path)
    if loaded.n_features != 2:
        raise ValueError(
            f"{path}: the playground draws 2 features, the file has {loaded.n_features}"
        )
    if loaded.task != "classification":
        raise ValueError(f"{path}: the last column must hold class labels (integers or text)")
    if not 10 <= len(loaded.X) <= MAX_CSV_ROWS:
        raise ValueError(f"{path}: needs 10 to {MAX_CSV_ROWS} rows, has {len(loaded.X)}")
    if loaded.n_classes > 10:
        raise ValueError(f"{path}: at most 10 classes, found {loaded.n_classes}")
    name = os.path.basename(path)
    names = None if loaded.classes is None else tuple(str(label) for label in loaded.classes)
    return CsvData(name, loaded.X.astype(np.float64), loaded.y.astype(np.int64), names)


def _integer(name: str, value: Any, bounds: tuple[float, float]) -> int:
    low, high = (int(bound) for bound in bounds)
    return check_int("", name, value, low, high, error=ConfigError)


def _number(name: str, value: Any, bounds: tuple[float, float]) -> float:
    return check_number("", name, value, *bounds, error=ConfigError)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    return check_choice("", name, value, choices, error=ConfigError)


def parse_config(
    payload: dict[str, Any], current: Config, datasets_offered: tuple[str, ...]
) -> Config:
    """`current` with the fields of `payload` replaced, each checked against its bounds."""
    fields = [f.name for f in dataclasses.fields(Config)]
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; valid settings: {', '.join(fields)}")
    values = {**dataclasses.asdict(current), **payload}
    hidden, most = values["hidden"], BOUNDS["layers"][1]
    if not isinstance(hidden, (list, tuple)) or len(hidden) > most:
        raise ConfigError(f"hidden must be a list of 0 to {most:g} layer sizes, got {hidden!r}")
    return Config(
        dataset=_choice("dataset", values["dataset"], datasets_offered),
        n_samples=_integer("n_samples", values["n_samples"], BOUNDS["n_samples"]),
        noise=_number("noise", values["noise"], BOUNDS["noise"]),
        hidden=tuple(_integer("hidden layer size", size, BOUNDS["units"]) for size in hidden),
        activation=_choice("activation", values["activation"], HIDDEN_ACTIVATIONS),
        optimizer=_choice("optimizer", values["optimizer"], tuple(OPTIMIZERS)),
        lr=_number("lr", values["lr"], BOUNDS["lr"]),
        batch_size=_integer("batch_size", values["batch_size"], BOUNDS["batch_size"]),
        seed=_integer("seed", values["seed"], BOUNDS["seed"]),
    )


def make_data(config: Config, csv: CsvData | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The points (n, 2) in float64 and their classes (n,) that `config` asks for."""
    n, noise, seed = config.n_samples, config.noise, config.seed
    if csv is not None and config.dataset == csv.name:
        return csv.X, csv.y
    if config.dataset == "xor":
        # The truth table's four corners, each a cloud of n/4 points, so there is data to hold out.
        corners, labels = datasets.xor(dtype=np.float64)
        rows = np.arange(n) % 4
        X = corners[rows] + noise * np.random.default_rng(seed).standard_normal((n, 2))
        return X, labels[rows]
    if config.dataset == "blobs":
        X, y = datasets.blobs(n, centers=3, cluster_std=10 * noise, rng=seed, dtype=np.float64)
    else:
        X, y = getattr(datasets, config.dataset)(n, noise=noise, rng=seed, dtype=np.float64)
    return X, y.astype(np.int64)


def build_model(config: Config, n_classes: int) -> nn.Sequential:
    """Linear → activation for each hidden layer, then a Linear giving one logit per class."""
    return mlp(2, config.hidden, config.activation, n_classes, np.float64, config.seed)


_WEIGHT = re.compile(r"(\d+)\.(weight|bias)\[(\d+)(?:,(\d+))?\]")


def _plain(array: np.ndarray) -> Any:
    """Nested lists of floats, with None for NaN and infinity (JSON has neither)."""
    if np.isfinite(array).all():
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class Session:
    """The playground's one run: settings, data, model, optimizer, history and the latest frame.

    Frames are dicts of plain numbers: the losses, every weight and its gradient over the training
    split, the decision grid, and (`inspect`) the chain rule for the selected weight and sample,
    present only when computed for that very frame's weights.
    """

    def __init__(
        self,
        csv: CsvData | None = None,
        pace: float = 1 / 60,
        frame_interval: float = 1 / 30,
        inspect_interval: float = 0.2,
    ) -> None:
        """`pace`: least seconds per epoch while running (watchable, and spares the CPU; 0 for
        tests); `frame_interval`, `inspect_interval`: least seconds between frames and between
        chain-rule explanations while running (a paused or stepped run always sends both).
        """
        self.csv = csv
        self.datasets = BUILT_IN + ((csv.name,) if csv else ())
        self.pace = pace
        self.frame_interval, self.inspect_interval = frame_interval, inspect_interval
        self.changed = threading.Condition(threading.Lock())
        self.version = 0  # bumped by every frame
        self.run = 0  # bumped by every reset: the page then clears its curves
        self.running, self.pending, self.closed = False, 0, False
        self.selection = ("0.weight[0,0]", 0)
        self._last_frame = self._next_inspect = 0.0
        with self.changed:
            self._reset(Config(dataset=csv.name) if csv else Config())
        self._thread = threading.Thread(target=self._loop, name="playground-training", daemon=True)
        self._thread.start()

    # ---- requests (each takes the lock) ----
    def reset(self, payload: dict[str, Any]) -> Config:
        with self.changed:
            config = parse_config(payload, self.config, self.datasets)
            self.running, self.pending = False, 0
            self._reset(config)
            return config

    def start(self) -> None:
        with self.changed:
            self.running = self.epoch < MAX_EPOCHS and self.error is None
            self._publish(inspect=False)  # the page learns at once that it runs (or why not)

    def pause(self) -> None:
        with self.changed:
            self.running, self.pending = False, 0
            self._publish(inspect=True)

    def step(self, epochs: int = 1) -> None:
        """Pause, then train `epochs` more epochs, sending a frame after each."""
        with self.changed:
            epochs = _integer("epochs", epochs, BOUNDS["epochs"])
            self.running = False
            self.pending = epochs if self.error is None and self.epoch < MAX_EPOCHS else 0
            self.changed.notify_all()

    def select(self, weight: Any = None, sample: Any = None) -> None:
        """Watch another weight (e.g. '2.weight[0,1]') and/or sample (an index into the data)."""
        with self.changed:
            weight = self.selection[0] if weight is None else self._check_weight(weight)
            sample = self.selection[1] if sample is None else sample
            sample = _integer("sample", sample, (0, len(self.X) - 1))
            self.selection = (weight, sample)
            self._publish(inspect=True)

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def options(self) -> dict[str, Any]:
        """What the page needs to build its controls: choices, bounds and the current settings."""
        with self.changed:
            return {
                "datasets": list(self.datasets),
                "csv": self.csv.name if self.csv else None,
                "activations": list(HIDDEN_ACTIVATIONS),
                "optimizers": list(OPTIMIZERS),
                "bounds": BOUNDS,
                "config": self.config.to_dict(),
                "max_epochs": MAX_EPOCHS,
                "val_fraction": VAL_FRACTION,
            }

    # ---- what each watcher of the stream is sent ----
    def next_message(self, seen: dict[str, int], timeout: float) -> dict[str, Any] | None:
        """The newest frame if it is newer than `seen` (updated), else None after `timeout`.

        A watcher that missed frames loses nothing on the curves: `history` holds every epoch
        since its last message, and on a new run (or its first message) the whole history and
        the data points.
        """
        with self.changed:
            self.changed.wait_for(lambda: self.closed or self.version != seen["version"], timeout)
            if self.closed or self.version == seen["version"]:
                return None
            message = dict(self.frame)
            if seen["run"] != self.run:
                message["data"] = self.data_message
                seen["run"], seen["sent"] = self.run, 0
            start, end = seen["sent"], len(self.history["epoch"])
            message["history"] = {key: values[start:end] for key, values in self.history.items()}
            seen["version"], seen["sent"] = self.version, end
            return message

    # ---- training ----
    def _reset(self, config: Config) -> None:
        self.config = config
        X, y = make_data(config, self.csv)
        order = np.random.default_rng([config.seed, 1]).permutation(len(X))
        n_val = round(VAL_FRACTION * len(X))
        self.val_index, self.train_index = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.mean = X[self.train_index].mean(axis=0)
        self.std = X[self.train_index].std(axis=0)
        self.std[self.std == 0] = 1
        self.X, self.y, self.inputs = X, y, (X - self.mean) / self.std
        self.n_classes = max(int(y.max()) + 1, 2)
        self.model = build_model(config, self.n_classes)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr)
        model, optimizer = self.model, self.optimizer

        def train_step(xb: np.ndarray, yb: np.ndarray) -> Any:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()

        # Traced on the first batch of each size, replayed after: the page's many small steps
        # cost a few microseconds each instead of a graph's worth of Python.
        self.train_step = compile_step(train_step)
        self.shuffle = np.random.default_rng([config.seed, 2])
        self.extent = data_extent(X)
        self.epoch, self.error, self.run = 0, None, self.run + 1
        self.history: dict[str, list] = {"epoch": [], "loss": [], "val_loss": []}
        weight, sample = self.selection
        if not self._is_element(weight):
            weight = "0.weight[0,0]"
        self.selection = (weight, sample if sample < len(X) else 0)
        self.data_message = {
            "X": X.tolist(),
            "y": y.tolist(),
            "val": self.val_index.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "n_classes": self.n_classes,
            # The page names classes by these: a CSV's own labels, else "class 0", "class 1".
            "class_names": self._class_names(),
            "extent": list(self.extent),
            "layers": [2, *config.hidden, self.n_classes],
        }
        self._measure()
        self._publish(inspect=True)

    def _class_names(self) -> list[str]:
        csv = self.csv
        if csv is not None and self.config.dataset == csv.name and csv.class_names:
            return [printable(name) for name in csv.class_names]
        return [f"class {k}" for k in range(self.n_classes)]

    def _loop(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.closed or self.running or self.pending > 0)
                if self.closed:
                    return
                began = time.monotonic()
                stepping = not self.running
                try:
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        self._train_epoch()  # divergence is caught there as a non-finite loss
                except Exception as failure:  # noqa: BLE001 (keep serving; tell the page why)
                    self.error = f"training failed: {type(failure).__name__}: {failure}"
                    self.running, self.pending = False, 0
                self.pending = max(self.pending - 1, 0) if stepping else self.pending
                now = time.monotonic()
                if stepping or not self.running or now - self._last_frame >= self.frame_interval:
                    inspect = stepping or not self.running or now >= self._next_inspect
                    self._publish(inspect)
            # Sleeping outside the lock also lets waiting requests take it.
            time.sleep(max(0.0, began + self.pace - time.monotonic()) if not stepping else 0)

    def _train_epoch(self) -> None:
        X, y = self.inputs[self.train_index], self.y[self.train_index]
        order = self.shuffle.permutation(len(X))
        size = self.config.batch_size
        for start in range(0, len(X), size):
            rows = order[start : start + size]
            self.train_step(X[rows], y[rows])
        self.epoch += 1
        self._measure()
        if self.error is None and not math.isfinite(self.loss):
            self.error = "the loss is no longer finite: lower the learning rate and press reset"
        if self.error is not None or self.epoch >= MAX_EPOCHS:
            self.running, self.pending = False, 0

    def _measure(self) -> None:
        """Loss, accuracy and gradient over the training split; loss and accuracy on validation."""
        self.model.zero_grad()
        train, val = self.train_index, self.val_index
        output = self.model(self.inputs[train])
        loss = F.cross_entropy(output, self.y[train])
        loss.backward()
        self.grad = {name: p.grad.copy() for name, p in self.model.named_parameters()}
        self.model.zero_grad()
        self.loss = loss.item()
        self.accuracy = float(np.mean(output.data.argmax(axis=1) == self.y[train]))
        self.val_loss = self.val_accuracy = float("nan")
        if len(val):
            with no_grad():
                val_output = self.model(self.inputs[val])
                self.val_loss = F.cross_entropy(val_output, self.y[val]).item()
            self.val_accuracy = float(np.mean(val_output.data.argmax(axis=1) == self.y[val]))
        self.history["epoch"].append(self.epoch)
        self.history["loss"].append(_finite_or_none(self.loss))
        self.history["val_loss"].append(_finite_or_none(self.val_loss))

    def _publish(self, inspect: bool) -> None:
        """Make the frame of the current state and wake every watcher."""
        now = time.monotonic()
        with np.errstate(all="ignore"):
            labels, confidence = decision_grid(
                self.model, self.extent, GRID_SIZE, self.mean, self.std
            )
        self.frame = {
            "run": self.run,
            "version": self.version + 1,
            "epoch": self.epoch,
            "running": self.running,
            "error": self.error,
            "config": self.config.to_dict(),
            "loss": _finite_or_none(self.loss),
            "val_loss": _finite_or_none(self.val_loss),
            "accuracy": self.accuracy,
            "val_accuracy": _finite_or_none(self.val_accuracy),
            "parameters": {n: _plain(p.data) for n, p in self.model.named_parameters()},
            "grad": {name: _plain(g) for name, g in self.grad.items()},
            "grid": {
                "size": GRID_SIZE,
                "labels": labels.ravel().tolist(),
                "confidence": np.round(np.nan_to_num(confidence), 3).ravel().tolist(),
            },
        }
        if inspect and self.error is None:
            try:
                with np.errstate(all="ignore"):  # a run about to diverge is reported, not raised
                    self.frame["inspect"] = self._inspect()
            except (ValueError, ArithmeticError) as failure:
                self.frame["inspect_error"] = f"cannot explain this state: {failure}"
            # explain() differences every weight: on a large network it may take a good part of
            # a second, so while running it gets at most a quarter of the time.
            cost = time.monotonic() - now
            self._next_inspect = now + cost + max(self.inspect_interval, 3 * cost)
        self.version += 1
        self._last_frame = now
        self.changed.notify_all()

    def _inspect(self) -> dict[str, Any]:
        """The selected weight, its gradient over the training split, and its chain for one
        sample."""
        weight, sample = self.selection
        name, index = self._element(weight)
        target = self.y[sample : sample + 1]
        e = explain(
            self.model,
            self.inputs[sample],
            target,
            loss="cross_entropy",
            lr=self.config.lr,
            weight=weight,
        )
        return {
            "weight": weight,
            "parameter": name,
            "index": list(index),
            "sample": sample,
            "x": self.X[sample].tolist(),
            "input": self.inputs[sample].tolist(),
            "target": int(target[0]),
            "split": "val" if sample in self.val_index else "train",
            "value": float(dict(self.model.named_parameters())[name].data[index]),
            "grad": float(self.grad[name][index]),
            "sample_loss": e.loss,
            "chain": e.to_dict()["chains"][0],
            "text": e.format(),
        }

    # ---- naming one weight ----
    def _element(self, weight: str) -> tuple[str, tuple[int, ...]]:
        match = _WEIGHT.fullmatch(weight)
        name = f"{match.group(1)}.{match.group(2)}"
        index = tuple(int(g) for g in match.groups()[2:] if g is not None)
        return name, index

    def _is_element(self, weight: str) -> bool:
        if not _WEIGHT.fullmatch(weight):
            return False
        name, index = self._element(weight)
        shapes = {n: p.shape for n, p in self.model.named_parameters()}
        return (
            name in shapes
            and len(index) == len(shapes[name])
            and all(i < n for i, n in zip(index, shapes[name]))
        )

    def _check_weight(self, weight: Any) -> str:
        text = re.sub(r"\s+", "", weight) if isinstance(weight, str) else None
        if text is None or len(text) > 64 or not self._is_element(text):
            names = ", ".join(f"{n}{list(p.shape)}" for n, p in self.model.named_parameters())
            raise ConfigError(
                f"weight must name one element such as '0.weight[1,0]' or '0.bias[2]' of this "
                f"network ({names}), got {weight!r}"
            )
        return text
