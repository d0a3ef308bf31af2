"""PNG plots: loss curves and decision boundaries are real images of the size asked for."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from chainrule import functional as F
from chainrule import nn, optim
from chainrule.datasets import moons
from chainrule.plots import class_probabilities, decision_grid, plot_boundary, plot_history
from chainrule.train import History

pytest.importorskip("matplotlib")


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR", "the first chunk of a PNG is IHDR"
    return struct.unpack(">II", data[16:24])


def pixels(path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def history(with_validation: bool) -> History:
    epochs = list(range(1, 31))
    metrics = {"val_loss": [1.3 / e + 0.1 for e in epochs]} if with_validation else {}
    return History(epochs=epochs, loss=[1 / e for e in epochs], metrics=metrics)


def network(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(2, 16, rng=rng), nn.Tanh(), nn.Linear(16, 2, rng=rng))


def train(model: nn.Sequential, X: np.ndarray, y: np.ndarray, steps: int = 300) -> nn.Sequential:
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("size", [(800, 500), (333, 257), (1200, 90)])
def test_plot_history_writes_a_png_of_the_size_asked_for(tmp_path, size):
    path = tmp_path / "history.png"
    plot_history(history(True), path, width=size[0], height=size[1])
    assert png_size(path) == size


def test_plot_history_draws_the_validation_curve_when_there_is_one(tmp_path):
    plot_history(history(False), tmp_path / "train.png")
    plot_history(history(True), tmp_path / "both.png")
    assert not np.array_equal(pixels(tmp_path / "train.png"), pixels(tmp_path / "both.png"))


def test_plot_history_of_an_empty_history_says_so(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_history(History(), tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


@pytest.mark.parametrize("size", [(600, 600), (640, 480)])
def test_plot_boundary_writes_a_png_of_the_size_asked_for(tmp_path, size):
    X, y = moons(100)
    path = tmp_path / "boundary.png"
    plot_boundary(network(), X, y, path, width=size[0], height=size[1], resolution=60)
    assert png_size(path) == size


def test_the_boundary_of_a_trained_model_differs_from_the_untrained_one(tmp_path):
    X, y = moons(200, noise=0.1)
    mean, std = X.mean(axis=0), X.std(axis=0)
    plot_boundary(network(), X, y, tmp_path / "before.png", mean, std, resolution=80)
    trained = train(network(), (X - mean) / std, y)
    plot_boundary(trained, X, y, tmp_path / "after.png", mean, std, resolution=80)
    before, after = pixels(tmp_path / "before.png"), pixels(tmp_path / "after.png")
    changed = np.any(np.abs(before - after) > 0.05, axis=-1).mean()
    assert changed > 0.05, f"only {changed:.1%} of the pixels changed"


def test_a_model_with_one_probability_column_is_drawn(tmp_path):
    X, y = moons(60)
    model = nn.Sequential(nn.Linear(2, 4, rng=0), nn.Tanh(), nn.Linear(4, 1, rng=1), nn.Sigmoid())
    plot_boundary(model, X, y, tmp_path / "p.png", width=300, height=300, resolution=30)
    assert png_size(tmp_path / "p.png") == (300, 300)


def test_decision_grid_puts_each_point_on_its_side_of_a_known_boundary():
    # class-1 logit minus class-0 logit = 2·x: class 1 exactly where x > 0
    model = nn.Linear(2, 2, dtype=np.float64)
    model.weight.data[...] = [[-1.0, 0.0], [1.0, 0.0]]
    model.bias.data[...] = 0.0
    labels, confidence = decision_grid(model, (-1.0, 1.0, -2.0, 2.0), size=5)
    assert labels.tolist() == [[0, 0, 0, 1, 1]] * 5
    np.testing.assert_allclose(
        confidence[0], [1 / (1 + np.exp(-2 * abs(x))) for x in (-1, -0.5, 0, 0.5, 1)]
    )


def test_decision_grid_standardises_points_as_training_did():
    model = nn.Linear(2, 2, dtype=np.float64)
    model.weight.data[...] = [[-1.0, 0.0], [1.0, 0.0]]
    model.bias.data[...] = 0.0
    labels, _ = decision_grid(
        model, (9.0, 11.0, 0.0, 1.0), size=3, mean=[10.0, 0.0], std=[2.0, 1.0]
    )
    assert labels[0].tolist() == [0, 0, 1]  # x − 10 < 0, = 0 (a tie: class 0), > 0


@pytest.mark.parametrize(
    "output, expected",
    [
        ([[0.0, np.log(3.0)]], [[0.25, 0.75]]),  # logits
        ([[0.2, 0.8]], [[0.2, 0.8]]),  # already probabilities
        ([[0.9]], [[0.1, 0.9]]),
    ],  # P(class 1)
)
def test_class_probabilities_reads_each_kind_of_output(output, expected):
    np.testing.assert_allclose(class_probabilities(np.array(output)), expected)


def test_plot_boundary_refuses_data_that_is_not_2_features(tmp_path):
    with pytest.raises(ValueError, match=r"2-feature data of shape \(n, 2\)"):
        plot_boundary(network(), np.zeros((5, 3)), np.zeros(5), tmp_path / "x.png")


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` now fails as if not installed
    with pytest.raises(ImportError, match=r"chainrule\[plot\]"):
        plot_history(history(False), tmp_path / "h.png")
