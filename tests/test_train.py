"""fit(): it trains, logs in the tutorial's format, stops early, restores the best weights,
guards NaN."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.datasets import moons
from chainrule.train import (
    DivergenceWarning,
    EarlyStopping,
    FitConfig,
    History,
    NonFiniteError,
    TrainState,
    evaluate,
    fit,
    fit_config,
    predict,
)
from chainrule.train import loop as fit_loop

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def xor_network(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Linear(2, 4, dtype=dtype, rng=rng),
        nn.Sigmoid(),
        nn.Linear(4, 1, dtype=dtype, rng=rng),
        nn.Sigmoid(),
    )


def test_fit_learns_xor_with_a_hidden_layer():
    model = xor_network()
    history = fit(model, XOR_X, XOR_Y, loss="half_mse", optimizer="sgd", lr=1.0, epochs=10_000)
    assert history.loss[-1] < 0.01
    assert np.array_equal(predict(model, XOR_X) >= 0.5, XOR_Y == 1)


def test_fit_logs_the_tutorials_line_every_n_epochs():
    lines = []
    fit(
        xor_network(),
        XOR_X,
        XOR_Y,
        loss="half_mse",
        lr=0.1,
        epochs=30,
        log_every=10,
        print_fn=lines.append,
    )
    assert [line.split(",")[0] for line in lines] == ["Epoch 0", "Epoch 10", "Epoch 20"]
    assert all(line.startswith("Epoch ") and ", Loss: " in line for line in lines)


def test_full_batch_loss_is_the_loss_before_each_update():
    model = xor_network()
    expected = 0.5 * np.mean((predict(model, XOR_X) - XOR_Y) ** 2)
    history = fit(model, XOR_X, XOR_Y, loss="half_mse", lr=0.1, epochs=1)
    assert history.loss[0] == pytest.approx(expected, rel=1e-12)


def hand_written_sgd(model, steps=25, lr=0.5):
    sgd = optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        sgd.zero_grad()
        cr.functional.mse_loss(model(XOR_X), XOR_Y).backward()
        sgd.step()
    return model


def test_eager_fit_equals_the_hand_written_loop_bit_for_bit():
    model_a, model_b = xor_network(), hand_written_sgd(xor_network())
    fit(model_a, XOR_X, XOR_Y, loss="mse", optimizer="sgd", lr=0.5, epochs=25, compile=False)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_compiled_fit_equals_the_hand_written_loop_to_rounding():
    """The compiled step may order a sum differently (the C replay): float64 within 1e-12."""
    model_a, model_b = xor_network(), hand_written_sgd(xor_network(), steps=500)
    fit(model_a, XOR_X, XOR_Y, loss="mse", optimizer="sgd", lr=0.5, epochs=500, compile=True)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14, err_msg=name)


def classifier(dtype=np.float64):
    return nn.Sequential(
        nn.Linear(2, 16, dtype=dtype, rng=0),
        nn.ReLU(),
        nn.Linear(16, 16, dtype=dtype, rng=1),
        nn.ReLU(),
        nn.Linear(16, 2, dtype=dtype, rng=2),
    )


@pytest.mark.parametrize("batch_size", [16, 20])  # 20: a smaller last batch each epoch
def test_compiled_fit_records_the_eager_runs_losses_and_accuracy(batch_size):
    """A compiled epoch runs its full batches as one scan (one call into C), keeps each step's
    output and counts the epoch's accuracy at its end: the same History as stepping eagerly."""
    X, y = moons(n_samples=200, noise=0.2, rng=0)
    options = dict(loss="cross_entropy", optimizer="adam", lr=0.01, epochs=8)
    histories = {}
    for compiled in (True, False):
        model = classifier()
        histories[compiled] = fit(model, X, y, batch_size=batch_size, compile=compiled, **options)
        histories[compiled].weights = [p.data.copy() for p in model.parameters()]
    compiled, eager = histories[True], histories[False]
    np.testing.assert_allclose(compiled.loss, eager.loss, rtol=1e-12)
    assert compiled.metrics["accuracy"] == eager.metrics["accuracy"]
    assert 0.5 < compiled.metrics["accuracy"][-1] <= 1.0
    for a, b in zip(compiled.weights, eager.weights):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_one_batch_epochs_run_together_and_still_log_and_record_each():
    lines = {True: [], False: []}
    histories = {}
    for compiled in (True, False):
        histories[compiled] = fit(
            xor_network(),
            XOR_X,
            XOR_Y,
            loss="half_mse",
            lr=1.0,
            epochs=1000,
            log_every=300,
            print_fn=lines[compiled].append,
            compile=compiled,
        )
    assert histories[True].epochs == list(range(1000))
    np.testing.assert_allclose(histories[True].loss, histories[False].loss, rtol=1e-12)
    assert [line.split(",")[0] for line in lines[True]] == [
        "Epoch 0",
        "Epoch 300",
        "Epoch 600",
        "Epoch 900",
    ]
    assert lines[True] == lines[False]


def test_with_a_progress_bar_one_batch_epochs_run_in_scans_short_enough_to_move_it(monkeypatch):
    spans = []
    original = fit_loop._Run._train_epochs_in_one_go

    def recorded(self, epoch, span, bar):
        spans.append(span)
        return original(self, epoch, span, bar)

    monkeypatch.setattr(fit_loop._Run, "_train_epochs_in_one_go", recorded)
    history = fit(xor_network(), XOR_X, XOR_Y, epochs=450, progress=True)
    assert len(history.loss) == 450
    assert spans and max(spans) <= 100 and sum(spans) >= 400


def test_a_loss_that_turns_nan_inside_a_compiled_epoch_names_its_step():
    X, y = moons(n_samples=64, rng=0)
    with pytest.raises(NonFiniteError, match=r"epoch 0, step [1-7]: the loss is (nan|inf)"):
        fit(classifier(), X * 1e30, y, loss="cross_entropy", lr=1e30, epochs=3, batch_size=8)


def test_same_seed_gives_bit_identical_training():
    X, y = moons(n_samples=64, rng=1)
    results = []
    for _ in range(2):
        model = nn.Sequential(nn.Linear(2, 8, rng=3), nn.ReLU(), nn.Linear(8, 2, rng=4))
        history = fit(
            model,
            X,
            y,
            loss="cross_entropy",
            optimizer="adam",
            lr=0.01,
            epochs=5,
            batch_size=8,
            rng=7,
        )
        results.append((history.loss, model.state_dict()))
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(results[0][1][k], results[1][1][k]) for k in results[0][1])


def test_classification_records_accuracy_and_validation_metrics():
    X, y = moons(n_samples=200, noise=0.1, rng=0)
    model = nn.Sequential(nn.Linear(2, 16, rng=0), nn.Tanh(), nn.Linear(16, 2, rng=1))
    history = fit(
        model,
        X[:150],
        y[:150],
        loss="cross_entropy",
        optimizer="adam",
        lr=0.05,
        epochs=60,
        batch_size=16,
        validation_data=(X[150:], y[150:]),
    )
    assert set(history.metrics) >= {"accuracy", "val_loss", "val_accuracy"}
    assert len(history.val_loss) == 60
    assert history.metrics["val_accuracy"][-1] > 0.9
    assert evaluate(model, X[150:], y[150:], "cross_entropy", classification=True)["accuracy"] > 0.9


def test_float32_model_trains_in_float32():
    model = xor_network(np.float32)
    fit(model, XOR_X, XOR_Y, loss="mse", lr=0.5, epochs=3)
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_early_stopping_stops_and_restores_the_best_weights():
    X, y = moons(n_samples=100, noise=0.3, rng=0)
    model = nn.Sequential(nn.Linear(2, 64, rng=0), nn.ReLU(), nn.Linear(64, 2, rng=1))
    stopper = EarlyStopping(monitor="val_loss", patience=3)
    # A large learning rate makes validation loss bounce, so training stops well before 500 epochs.
    history = fit(
        model,
        X[:20],
        y[:20],
        loss="cross_entropy",
        optimizer="adam",
        lr=0.2,
        epochs=500,
        validation_data=(X[20:], y[20:]),
        callbacks=[stopper],
    )
    assert history.stopped_early and len(history.epochs) < 500
    best = min(history.val_loss)
    assert history.val_loss[history.best_epoch] == best
    assert evaluate(model, X[20:], y[20:], "cross_entropy")["loss"] == pytest.approx(best, rel=1e-5)


def test_early_stopping_on_a_metric_the_run_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match="monitors 'val_loss'.*available: loss"):
        fit(xor_network(), XOR_X, XOR_Y, epochs=2, callbacks=[EarlyStopping()])


def test_nan_guard_names_epoch_step_and_parameter():
    X, y = moons(n_samples=64, rng=0)
    model = nn.Sequential(nn.Linear(2, 32, rng=0), nn.ReLU(), nn.Linear(32, 1, rng=1))
    where = (
        r"(weight \d\.(weight|bias)|gradient of \d\.(weight|bias)"
        r"|output of layer \d \(\w+\)|the loss)"
    )
    with pytest.raises(NonFiniteError, match=rf"epoch \d+, step \d+: .*{where}"):
        fit(model, X * 1e3, y.reshape(-1, 1) * 1e3, loss="mse", lr=1e6, epochs=50, batch_size=8)


def test_nan_guard_names_the_parameter_that_holds_nan():
    model = xor_network()
    model[2].weight.data[0, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"epoch 0, step 0: .*weight 2\.weight"):
        fit(model, XOR_X, XOR_Y, epochs=3)


def test_nan_guard_catches_weights_an_epochs_last_update_made_infinite():
    """Weights are checked at the end of each epoch (the next step's loss catches the rest): a
    learning rate beyond float32's range turns every weight infinite in the only step."""
    model = xor_network(np.float32)
    sgd = optim.SGD(model.parameters(), lr=1e39)
    with pytest.raises(NonFiniteError, match=r"epoch 0, step 0: weight \d\.\w+ became NaN or Inf"):
        fit(model, XOR_X, XOR_Y, optimizer=sgd, epochs=1)


def test_scheduler_changes_the_learning_rate_each_epoch():
    model = xor_network()
    sgd = optim.SGD(model.parameters(), lr=1.0)
    history = fit(
        model,
        XOR_X,
        XOR_Y,
        optimizer=sgd,
        epochs=3,
        scheduler=optim.StepLR(sgd, step_size=1, gamma=0.5),
    )
    assert history.metrics["lr"] == [0.5, 0.25, 0.125]


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.zeros((4, 2)), np.zeros(3), "4 input rows but 3 targets"),
        (np.zeros(4), np.zeros(4), "at least a 2-D array"),
        (np.array([[0.0, np.nan]]), np.zeros(1), "NaN or Inf"),
        (np.zeros((0, 2)), np.zeros(0), "no training samples"),
    ],
)
def test_bad_training_data_is_a_clear_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        fit(xor_network(), X, y)


def test_history_to_dict_has_every_series():
    history = History()
    history.record(0, {"loss": 1.0, "val_loss": 2.0})
    assert history.to_dict() == {"epochs": [0], "loss": [1.0], "val_loss": [2.0]}


def test_progress_bar_is_drawn_on_request_and_not_by_default_off_a_terminal(capsys):
    fit(xor_network(), XOR_X, XOR_Y, epochs=5, progress=True)
    drawn = capsys.readouterr().err  # tqdm: "  0%|...| 0/5 [..., ?epoch/s]", cleared at the end
    assert "/5 [" in drawn and "epoch/s" in drawn
    fit(xor_network(), XOR_X, XOR_Y, epochs=5)  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


# ---- the run as values: FitConfig, TrainState -------------------------------------------------
def test_fit_names_every_option_in_its_signature():
    import inspect

    parameters = inspect.signature(fit).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    config_fields = {f.name for f in __import__("dataclasses").fields(FitConfig)}
    assert config_fields <= set(parameters)


def test_fit_and_fit_config_have_the_same_defaults():
    import dataclasses
    import inspect

    parameters = inspect.signature(fit).parameters
    for field in dataclasses.fields(FitConfig):
        assert parameters[field.name].default == field.default, field.name


def test_fit_config_is_a_frozen_checked_value():
    config = FitConfig(loss="cross_entropy", optimizer="adam", epochs=3)
    with pytest.raises(__import__("dataclasses").FrozenInstanceError):
        config.epochs = 4
    assert config.is_classification and not FitConfig(loss="mse").is_classification
    with pytest.raises(TypeError, match="fit: epochs must be an integer >= 0, got 2.5"):
        FitConfig(epochs=2.5)
    with pytest.raises(ValueError, match="fit: batch_size must be an integer >= 1, got 0"):
        FitConfig(batch_size=0)
    with pytest.raises(ValueError, match="resume needs a checkpoint directory"):
        FitConfig(resume=True)


def test_fit_config_runs_the_same_as_named_options():
    config = FitConfig(loss="half_mse", lr=1.0, epochs=50)
    a, b = xor_network(), xor_network()
    fit_config(a, XOR_X, XOR_Y, config)
    fit(b, XOR_X, XOR_Y, loss="half_mse", lr=1.0, epochs=50)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)


def test_train_state_position_round_trips_through_json():
    import json

    model = xor_network()
    state = TrainState(model, None, History(), np.random.default_rng(3))
    state.epoch, state.step, state.global_step, state.running = 2, 1, 9, (0.5, 3.0)
    state.history.record(0, {"loss": 0.25})
    state.generator.random(5)
    saved = json.loads(json.dumps(state.position()))
    again = TrainState(model, None, History(), np.random.default_rng(99))
    again.restore_position(saved)
    assert again.position() == state.position()
    assert again.generator.random() == state.generator.random()


def test_early_stopping_says_when_it_stopped_and_which_weights_it_kept():
    X, y = moons(n_samples=64, rng=0)
    lines = []
    model = nn.Sequential(nn.Linear(2, 16, rng=0), nn.ReLU(), nn.Linear(16, 2, rng=1))
    history = fit(
        model, X, y, loss="cross_entropy", optimizer="adam", lr=0.3, epochs=200, batch_size=8,
        validation_data=moons(n_samples=32, rng=1), callbacks=[EarlyStopping(patience=2)],
        log_every=1000, print_fn=lines.append,
    )  # fmt: skip
    assert history.stopped_early
    assert lines[-1] == (
        f"Stopped early after epoch {history.epochs[-1]}; the weights of epoch "
        f"{history.best_epoch} are restored"
    )


def test_a_diverging_run_warns_with_the_epoch():
    """Gradient descent on (w·1 − 0)² with lr 1.5 multiplies w by 1 − 2·1.5 = −2 each step: the
    loss grows 4× an epoch, past 1000× its first value at epoch 5, and stays finite."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False, dtype=np.float64, rng=0))
    x, y = np.ones((4, 1)), np.zeros((4, 1))
    with pytest.warns(DivergenceWarning, match=r"at epoch 5 the loss is .* more than 1000×"):
        history = fit(model, x, y, loss="mse", optimizer="sgd", lr=1.5, epochs=12)
    assert np.isfinite(history.loss).all()


def test_a_converging_run_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        fit(xor_network(), XOR_X, XOR_Y, loss="half_mse", lr=1.0, epochs=500)
