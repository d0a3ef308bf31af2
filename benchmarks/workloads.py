"""The networks every peer trains, and the seeded synthetic data they train on.

A workload fixes everything that decides the work per step (layer sizes, activation, loss,
optimizer, batch, dtype), so that the peers differ only in how they do that work. Timing lives in
measure.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    """One network trained for some steps; a step is zero_grad, forward, loss, backward, step."""

    name: str
    sizes: tuple[int, ...]  # layer widths, input first: (2, 4, 1) is 2 inputs, 4 hidden, 1 output
    activation: (
        str  # "sigmoid" (also on the output, as in the XOR tutorial) or "relu" (hidden only)
    )
    loss: str  # "mse" (on the sigmoid output) or "cross_entropy" (on the logits)
    optimizer: str  # "sgd" or "adam"
    lr: float
    batch: int
    dtype: str  # "float32" or "float64"
    # How many distinct batches the steps cycle through: the data changes from step to step, as it
    # does in training, while staying small enough that making it costs nothing.
    batches: int = 8
    in_smoke: bool = True  # False: too slow for `--smoke`, which CI runs
    # The largest network takes ~0.1 s a step; a few steps a repeat already dwarf the timer's noise.
    min_steps: int = 20

    @property
    def parameters(self) -> int:
        """Weights and biases: Σ (in + 1) · out over the layers."""
        return sum((n_in + 1) * n_out for n_in, n_out in zip(self.sizes, self.sizes[1:]))

    @property
    def flops_per_step(self) -> float:
        """6 · parameters · batch: the forward GEMM (2·in·out per row) and two backward GEMMs."""
        return 6.0 * self.parameters * self.batch

    @property
    def layers(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes, self.sizes[1:]))

    @property
    def description(self) -> str:
        shape = "-".join(str(size) for size in self.sizes)
        batch = "full batch" if self.name.startswith("xor") else f"batch {self.batch}"
        return f"{shape} {self.activation} {batch} {self.dtype} {self.loss} {self.optimizer}"


XOR = Workload(
    "xor-2-4-1", (2, 4, 1), "sigmoid", "mse", "sgd", lr=0.5, batch=4, dtype="float64", batches=1
)
SMALL = Workload(
    "mlp-2-16-16-2",
    (2, 16, 16, 2),
    "relu",
    "cross_entropy",
    "sgd",
    lr=0.05,
    batch=32,
    dtype="float32",
    batches=16,
)
MNIST_SGD = Workload(
    "mlp-784-256-256-10-sgd",
    (784, 256, 256, 10),
    "relu",
    "cross_entropy",
    "sgd",
    lr=0.01,
    batch=128,
    dtype="float32",
    batches=32,
)
MNIST_ADAM = Workload(
    "mlp-784-256-256-10-adam",
    (784, 256, 256, 10),
    "relu",
    "cross_entropy",
    "adam",
    lr=1e-3,
    batch=128,
    dtype="float32",
    batches=32,
)
LARGE = Workload(
    "mlp-1024-2048-2048-10",
    (1024, 2048, 2048, 10),
    "relu",
    "cross_entropy",
    "sgd",
    lr=0.01,
    batch=256,
    dtype="float32",
    batches=8,
    in_smoke=False,
    min_steps=3,
)

# Throughput workloads, in the order of the report.
TRAINING = [XOR, SMALL, MNIST_SGD, MNIST_ADAM, LARGE]

# `chainrule.fit` against the hand-written eager loop, on the MNIST-sized SGD workload.
FIT = "fit-vs-eager-784-256-256-10"
IMPORT = "import-time"
CLI = "cli-train-xor"
ALL_NAMES = [w.name for w in TRAINING] + [FIT, IMPORT, CLI]

BY_NAME = {w.name: w for w in TRAINING}


@dataclass(frozen=True)
class Data:
    """A workload's whole synthetic set and its batches, which are views of it: the peers that
    take a dataset (fit, scikit-learn) and those that take batches share one copy of the data."""

    x: np.ndarray  # (batches · batch, inputs)
    y: np.ndarray  # (batches · batch, 1) float targets, or (batches · batch,) int64 classes
    batches: list[tuple[np.ndarray, np.ndarray]]


def make_data(workload: Workload, seed: int = 0) -> Data:
    """`workload.batches` batches of seeded data in the workload's dtype.

    XOR is the four truth-table rows with float targets of shape (4, 1); the classification
    workloads get Gaussian inputs and int64 class indices (a learnable rule for the 2-D one, random
    labels for the wide ones: the speed of a step does not depend on what the labels mean).
    """
    dtype = np.dtype(workload.dtype)
    if workload.loss == "mse":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
        y = np.array([[0], [1], [1], [0]], dtype=dtype)
        return Data(x, y, [(x, y)])
    rng = np.random.default_rng(seed)
    n_in, n_classes = workload.sizes[0], workload.sizes[-1]
    rows = workload.batch * workload.batches
    x = rng.standard_normal((rows, n_in), dtype=dtype)
    if n_in == 2:
        y = (x[:, 0] * x[:, 1] > 0).astype(np.int64) % n_classes
    else:
        y = rng.integers(0, n_classes, rows, dtype=np.int64)
    size = workload.batch
    batches = [(x[i : i + size], y[i : i + size]) for i in range(0, rows, size)]
    return Data(x, y, batches)
