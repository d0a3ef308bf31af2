"""PNG plots of a training run: loss curves and the decision boundary of a 2-feature classifier.

matplotlib is an optional extra (`pip install 'chainrule[plot]'`), imported only when a plot is
drawn, and drawn through the Agg canvas directly, never pyplot, so nothing global changes and
plotting from a server thread is safe. `decision_grid` needs NumPy only: the playground shares it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chainrule.tensor import no_grad

# One colour per class, shared with the playground's page (static/app.js) so both read alike.
CLASS_COLORS = (
    "#e8743b",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#d62728",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_DPI = 100


def _matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or an ImportError that says how to install the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "chainrule.plots needs matplotlib; install it with: pip install 'chainrule[plot]'"
        ) from None
    return Figure, FigureCanvasAgg


def _figure(width: int, height: int) -> Any:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 50:
            raise ValueError(f"plot {name} must be a whole number of pixels >= 50, got {value!r}")
        if value > 10_000:
            raise ValueError(f"plot {name} must be at most 10000 pixels, got {value}")
    Figure, FigureCanvasAgg = _matplotlib()
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike) -> None:
    from chainrule.atomic import atomic_write

    # No bbox_inches="tight": it would change the size the caller asked for.
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=_DPI))


def plot_history(
    history: Any, path: str | os.PathLike, width: int = 800, height: int = 500, log: bool = False
) -> None:
    """Write a PNG of the training loss per epoch, and the validation loss when it was recorded.

    `history` is a `chainrule.train.History` (`.epochs`, `.loss`, `.metrics['val_loss']`).
    `log` draws the loss on a log scale. The image is `width` × `height` pixels.
    """
    if not hasattr(history, "loss") or not hasattr(history, "epochs"):
        raise TypeError(
            f"plot_history needs a chainrule.train.History, got {type(history).__name__}"
        )
    epochs, loss = list(history.epochs), list(history.loss)
    if not loss:
        raise ValueError("plot_history: the history is empty (no epoch was recorded)")
    if len(epochs) != len(loss):
        raise ValueError(f"plot_history: {len(epochs)} epochs but {len(loss)} loss values")
    val_loss = list(getattr(history, "metrics", {}).get("val_loss", []))
    figure = _figure(width, height)
    axes = figure.add_subplot()
    axes.plot(epochs, loss, color="#1f2937", linewidth=1.6, label="training loss")
    if val_loss:
        # Validation may be recorded on fewer epochs (e.g. only some); align it from the end.
        axes.plot(
            epochs[len(epochs) - len(val_loss) :],
            val_loss,
            color=CLASS_COLORS[0],
            linewidth=1.6,
            linestyle="--",
            label="validation loss",
        )
    if log and min(loss + val_loss) > 0:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(figure, path)


def decision_grid(
    model: Any,
    extent: tuple[float, float, float, float],
    size: int = 50,
    mean: Any = None,
    std: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's class and confidence on a size × size grid over extent (x0, x1, y0, y1).

    Grid points are in the data's own units; the model sees (point − mean) / std, as in training.
    Returns (labels, confidence), each (size, size) with row i at y = y0 + i·(y1 − y0)/(size − 1).
    Outputs with C > 1 columns are logits (softmax is applied) or, when every row is already a
    distribution, probabilities; one column is the probability of class 1.
    """
    x0, x1, y0, y1 = (float(v) for v in extent)
    xs, ys = np.linspace(x0, x1, size), np.linspace(y0, y1, size)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    if mean is not None:
        points = points - np.asarray(mean, dtype=np.float64)
    if std is not None:
        points = points / np.asarray(std, dtype=np.float64)
    probabilities = class_probabilities(_predict(model, points))
    labels = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    return labels.reshape(size, size), confidence.reshape(size, size)


def class_probabilities(output: np.ndarray) -> np.ndarray:
    """(n, C) class probabilities from a model's output: logits, probabilities, or P(class 1)."""
    output = np.asarray(output, dtype=np.float64)
    if output.ndim != 2:
        raise ValueError(f"expected model outputs of shape (n, classes), got {output.shape}")
    if output.shape[1] == 1:
        p = np.clip(output[:, 0], 0.0, 1.0)
        return np.stack([1 - p, p], axis=1)
    rows_are_distributions = (output >= 0).all() and np.allclose(output.sum(axis=1), 1, atol=1e-4)
    if rows_are_distributions:
        return output
    shifted = np.exp(output - output.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _predict(model: Any, points: np.ndarray) -> np.ndarray:
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            output = model(points)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return np.asarray(getattr(output, "data", output))


def data_extent(X: np.ndarray, margin: float = 0.1) -> tuple[float, float, float, float]:
    """A square (x0, x1, y0, y1) around the points with `margin` of their spread on every side."""
    low, high = X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2, 1e-3) * (1 + 2 * margin)
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def _check_points(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_boundary needs 2-feature data of shape (n, 2), got {X.shape}")
    if len(X) == 0:
        raise ValueError("plot_boundary: no data points")
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot targets
    y = y.reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"plot_boundary: {len(X)} points but {len(y)} labels")
    if not np.isfinite(X.astype(np.float64)).all():
        raise ValueError("plot_boundary: the points contain NaN or infinity")
    return X.astype(np.float64), np.rint(y.astype(np.float64)).astype(np.int64)


def plot_boundary(
    model: Any,
    X: Any,
    y: Any,
    path: str | os.PathLike,
    mean: Any = None,
    std: Any = None,
    width: int = 600,
    height: int = 600,
    resolution: int = 200,
) -> None:
    """Write a PNG of the model's decision regions over the plane, with the points (X, y) on top.

    X (n, 2) is in the data's own units; the model was trained on (X − mean) / std (leave both
    None if it saw X as is). The model outputs class logits (n, C > 1) or one probability column.
    Colour is the predicted class, paler where the model is less sure; the image is
    `width` × `height` pixels.
    """
    X, y = _check_points(X, y)
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or not 2 <= resolution <= 2000
    ):
        raise ValueError(
            f"plot_boundary: resolution must be an integer from 2 to 2000, got {resolution!r}"
        )
    extent = data_extent(X)
    labels, confidence = decision_grid(model, extent, resolution, mean, std)
    n_classes = max(int(labels.max()), int(y.max()), 1) + 1
    colors = np.array([_rgb(CLASS_COLORS[k % len(CLASS_COLORS)]) for k in range(n_classes)])
    # Confidence 1/C (a coin toss) is white, 1 is the class's full colour, scaled to stay light.
    strength = np.clip((confidence - 1 / n_classes) / (1 - 1 / n_classes), 0, 1)[..., None] * 0.6
    image = 1 - strength * (1 - colors[labels])
    figure = _figure(width, height)
    axes = figure.add_subplot()
    axes.imshow(image, origin="lower", extent=extent, interpolation="bilinear", aspect="auto")
    for k in range(n_classes):
        chosen = y == k
        if chosen.any():
            axes.scatter(
                X[chosen, 0],
                X[chosen, 1],
                s=18,
                color=CLASS_COLORS[k % len(CLASS_COLORS)],
                edgecolors="white",
                linewidths=0.6,
                label=f"class {k}",
            )
    axes.set_xlim(extent[0], extent[1])
    axes.set_ylim(extent[2], extent[3])
    axes.set_xlabel("feature 0")
    axes.set_ylabel("feature 1")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    _save(figure, path)


def _rgb(color: str) -> tuple[float, float, float]:
    return tuple(int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
