"""One table of names: every face — fit, the command line, explain, the playground, the
scikit-learn adapter — offers exactly the registry's names, and a name means one thing
everywhere."""

import numpy as np
import pytest

import chainrule.functional as F
from chainrule import nn, registry
from chainrule.cli import build_parser
from chainrule.explain import explain
from chainrule.playground.session import Session
from chainrule.tensor import Tensor
from chainrule.train import FitConfig, evaluate, fit


def choices_of(command: str, flag: str) -> tuple:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)


def test_the_command_line_offers_exactly_the_registry():
    assert choices_of("train", "--loss") == tuple(registry.LOSSES)
    assert choices_of("train", "--activation") == registry.HIDDEN_ACTIVATIONS
    assert choices_of("train", "--optimizer") == tuple(registry.OPTIMIZERS)
    assert choices_of("train", "--scheduler") == tuple(registry.SCHEDULES)
    assert choices_of("explain", "--loss") == tuple(registry.LOSSES)


def test_the_playground_offers_exactly_the_registry():
    session = Session(pace=0)
    frame = session.options()
    session.close()
    assert frame["activations"] == list(registry.HIDDEN_ACTIVATIONS)
    assert frame["optimizers"] == list(registry.OPTIMIZERS)


def test_mse_means_the_mean_of_squares_in_fit_explain_and_evaluate():
    """One meaning of "mse" everywhere: mean((ŷ − y)²), PyTorch's MSELoss; "half_mse" is the
    tutorial's ½·mean((ŷ − y)²)."""
    model = nn.Sequential(nn.Linear(2, 1, dtype=np.float64, rng=0))
    x, y = np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[1.0], [0.0]])
    prediction = model(x).data
    mean_of_squares = float(np.mean((prediction - y) ** 2))
    assert explain(model, x, y, loss="mse").loss == pytest.approx(mean_of_squares, rel=1e-12)
    assert evaluate(model, x, y, loss="mse")["loss"] == pytest.approx(mean_of_squares, rel=1e-12)
    assert explain(model, x, y, loss="half_mse").loss == pytest.approx(mean_of_squares / 2)
    history = fit(model, x, y, loss="mse", lr=0.0, epochs=1, compile=False)
    assert history.loss[0] == pytest.approx(mean_of_squares, rel=1e-12)


@pytest.mark.parametrize("name", list(registry.LOSSES))
def test_every_loss_name_trains_and_explains(name):
    entry = registry.LOSSES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    outputs = 3 if name == "cross_entropy" else 1
    layers = [nn.Linear(3, outputs, dtype=np.float64, rng=1)]
    if entry.output == "probabilities":
        layers.append(nn.Sigmoid())
    model = nn.Sequential(*layers)
    y = rng.integers(0, 3, 6) if name == "cross_entropy" else rng.integers(0, 2, (6, 1)) * 1.0
    history = fit(model, x, y, loss=name, lr=0.1, epochs=2)
    assert np.isfinite(history.loss).all()
    assert np.isfinite(explain(model, x, y, loss=name).loss)
    value = entry.function(Tensor(model(x).data), y).item()
    assert evaluate(model, x, y, loss=name)["loss"] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("name", list(registry.OPTIMIZERS))
def test_every_optimizer_name_builds_its_class(name):
    model = nn.Sequential(nn.Linear(2, 1, rng=0))
    optimizer = registry.make_optimizer(name, model.parameters(), lr=0.1)
    assert type(optimizer).__name__.lower() == name


@pytest.mark.parametrize("name", list(registry.SCHEDULES))
def test_every_schedule_name_steps_the_learning_rate_in_fit(name):
    x, y = np.eye(4, 2), np.arange(4.0).reshape(-1, 1)
    model = nn.Sequential(nn.Linear(2, 1, rng=0))
    history = fit(model, x, y, lr=0.1, epochs=6, scheduler=name)
    assert len(history.metrics["lr"]) == 6
    if name != "plateau":  # ReduceLROnPlateau waits 10 epochs
        assert history.metrics["lr"][-1] < 0.1


@pytest.mark.parametrize("name", registry.HIDDEN_ACTIVATIONS)
def test_every_activation_name_maps_to_its_module_and_back(name):
    module = registry.ACTIVATIONS[name].module()
    assert registry.activation_for(module)[0] == name


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'mae'; expected one of mse, half_mse"):
        FitConfig(loss="mae")
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; expected one of sgd"):
        registry.make_optimizer("lbfgs", [], 0.1)
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        FitConfig(scheduler="linear")


def test_a_custom_loss_function_passes_through():
    def l1(output, target):
        return F.abs(output - target).mean()

    assert registry.get_loss(l1) is l1
    assert FitConfig(loss=l1).loss_name == "l1"
