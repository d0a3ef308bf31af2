"""chainrule.sklearn: scikit-learn's estimator contract, sklearn's training rules and loss values
(checked against sklearn's own MLPs), reproducibility, precision, and clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # an optional extra: chainrule[sklearn]

from sklearn.datasets import make_classification, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SklearnClassifier
from sklearn.neural_network import MLPRegressor as SklearnRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from chainrule.sklearn import MLPClassifier, MLPRegressor

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
SMALL = {"hidden_layer_sizes": (16,), "max_iter": 30, "random_state": 0}


def _standardized(X):
    return StandardScaler().fit_transform(X)


def multiclass():
    X, y = make_classification(
        n_samples=90, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return _standardized(X), y


def binary():
    X, y = make_classification(n_samples=80, n_features=5, random_state=1)
    return _standardized(X), y


def multilabel():
    X, Y = make_multilabel_classification(n_samples=80, n_features=6, n_classes=3, random_state=2)
    return _standardized(X), Y


def regression(n_targets=1):
    X, y = make_regression(
        n_samples=80, n_features=5, n_targets=n_targets, noise=0.1, random_state=3
    )
    return _standardized(X), _standardized(y.reshape(len(y), -1)).squeeze()


# ---- the scikit-learn contract ---------------------------------------------------------------
@parametrize_with_checks([MLPClassifier(), MLPRegressor()])  # the defaults, max_iter=200 included
def test_passes_every_scikit_learn_estimator_check(estimator, check):
    check(estimator)


@quiet
def test_works_inside_pipeline_grid_search_and_cross_validation():
    X, y = multiclass()
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(solver="lbfgs", **SMALL))
    search = GridSearchCV(pipeline, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=3).fit(X, y)
    assert search.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-1)
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6


# ---- agreement with scikit-learn's MLPs --------------------------------------------------------
PROBLEMS = {
    "multiclass": (MLPClassifier, SklearnClassifier, multiclass),
    "binary": (MLPClassifier, SklearnClassifier, binary),
    "multilabel": (MLPClassifier, SklearnClassifier, multilabel),
    "regression": (MLPRegressor, SklearnRegressor, regression),
    "multi-output regression": (MLPRegressor, SklearnRegressor, lambda: regression(n_targets=2)),
}
# A step too small to move any weight: one epoch then only evaluates the loss where it started.
FROZEN = {
    "solver": "sgd",
    "learning_rate_init": 1e-300,
    "momentum": 0.0,
    "shuffle": False,
    "max_iter": 1,
    "alpha": 0.1,
    "hidden_layer_sizes": (8, 5),
    "activation": "tanh",
}
# Comparisons with sklearn's numbers run in sklearn's precision (the default for float64 data;
# stated, so that the comparison does not rest on a default).
SKLEARN_PRECISION = {"dtype": "float64"}


def _sklearn_loss_at(weights_of, sklearn_class, X, y):
    """sklearn's own objective (loss_curve_) evaluated at the weights of a fitted chainrule MLP."""
    oracle = sklearn_class(**{**FROZEN, "warm_start": True}).fit(X, y)
    oracle.coefs_ = [c.astype(np.float64) for c in weights_of.coefs_]
    oracle.intercepts_ = [b.astype(np.float64) for b in weights_of.intercepts_]
    return oracle.fit(X, y)


@quiet
@pytest.mark.parametrize("problem", PROBLEMS)
def test_loss_curve_holds_sklearns_loss_including_the_l2_penalty(problem):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    model = ours(**FROZEN, **SKLEARN_PRECISION, random_state=0).fit(X, y)
    oracle = _sklearn_loss_at(model, theirs, X, y)
    assert model.loss_curve_[0] == pytest.approx(oracle.loss_curve_[-1], rel=1e-10)


@quiet
def test_lbfgs_loss_is_sklearns_objective_at_the_fitted_weights():
    X, y = multiclass()
    model = MLPClassifier(
        solver="lbfgs",
        max_iter=15,
        alpha=0.1,
        hidden_layer_sizes=(8, 5),
        activation="tanh",
        random_state=0,
        **SKLEARN_PRECISION,
    ).fit(X, y)
    oracle = _sklearn_loss_at(model, SklearnClassifier, X, y)
    assert model.loss_ == pytest.approx(oracle.loss_curve_[-1], rel=1e-10)


@quiet
@pytest.mark.parametrize("problem", PROBLEMS)
def test_predictions_equal_sklearns_for_the_same_weights(problem):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    model = ours(**FROZEN, **SKLEARN_PRECISION, random_state=0).fit(X, y)
    oracle = _sklearn_loss_at(model, theirs, X, y)
    np.testing.assert_allclose(model.predict(X), oracle.predict(X), rtol=1e-10, atol=1e-12)
    if ours is MLPClassifier:
        np.testing.assert_allclose(
            model.predict_proba(X), oracle.predict_proba(X), rtol=1e-10, atol=1e-12
        )


# Every problem but multi-output regression: there sklearn's gradient is k times the gradient of
# the loss it reports (k outputs); chainrule follows the loss it reports.
@quiet
@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p != "multi-output regression"])
# Adam differs in one detail: PyTorch's (and chainrule's) eps is added to the bias-corrected √v̂,
# sklearn's to the uncorrected √v, which moves weights whose gradients are tiny by ~1e-5.
@pytest.mark.parametrize("solver, tolerance", [("sgd", 1e-9), ("adam", 1e-4)])
def test_training_from_the_same_weights_follows_sklearn(problem, solver, tolerance):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    # Three epochs of batches of 30, 30 and 20 samples: sklearn's L2 term is alpha/(2·batch size).
    run = {
        "solver": solver,
        "learning_rate_init": 0.01,
        "max_iter": 3,
        "batch_size": 30,
        "momentum": 0.9,
        "warm_start": True,
    }
    model = ours(**FROZEN, **SKLEARN_PRECISION, random_state=0).fit(X, y)
    oracle = _sklearn_loss_at(model, theirs, X, y)
    model.set_params(**run).fit(X, y)
    oracle.set_params(**run).fit(X, y)
    for a, b in zip(model.coefs_ + model.intercepts_, oracle.coefs_ + oracle.intercepts_):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(model.loss_curve_[-3:], oracle.loss_curve_[-3:], rtol=tolerance)


@pytest.mark.parametrize("estimator_class", [MLPClassifier, MLPRegressor])
def test_weights_have_sklearns_shapes(estimator_class):
    X, y = multiclass()
    options = {"hidden_layer_sizes": (7, 4), "max_iter": 2, "random_state": 0}
    with pytest.warns(ConvergenceWarning):
        ours = estimator_class(**options).fit(X, y)
    reference = SklearnClassifier if estimator_class is MLPClassifier else SklearnRegressor
    with pytest.warns(ConvergenceWarning):
        theirs = reference(**options).fit(X, y)
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert [b.shape for b in ours.intercepts_] == [b.shape for b in theirs.intercepts_]
    assert (ours.n_layers_, ours.n_outputs_, ours.out_activation_) == (
        theirs.n_layers_,
        theirs.n_outputs_,
        theirs.out_activation_,
    )


# A tol no epoch can meet makes stopping a matter of counting epochs, which must match sklearn's.
STOPPING = {
    "adam": {"solver": "adam", "n_iter_no_change": 3},
    "sgd": {"solver": "sgd", "n_iter_no_change": 2},
    "sgd adaptive": {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1},
    "early stopping": {"solver": "adam", "early_stopping": True, "n_iter_no_change": 4},
}


@quiet
@pytest.mark.parametrize("config", STOPPING)
def test_stops_after_the_same_epoch_as_sklearn(config):
    X, y = multiclass()
    options = {
        **STOPPING[config],
        "tol": 1e9,
        "max_iter": 50,
        "hidden_layer_sizes": (4,),
        "random_state": 0,
    }
    ours, theirs = MLPClassifier(**options).fit(X, y), SklearnClassifier(**options).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ < 50
    assert len(ours.loss_curve_) == ours.n_iter_ and ours.t_ == theirs.t_


def test_warns_when_max_iter_ends_training_before_convergence():
    X, y = multiclass()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        model = MLPClassifier(max_iter=3, tol=0, random_state=0).fit(X, y)
    assert model.n_iter_ == 3


def test_lbfgs_warns_when_it_runs_out_of_iterations():
    X, y = multiclass()
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        model = MLPClassifier(solver="lbfgs", max_iter=2, random_state=0).fit(X, y)
    assert model.n_iter_ == 2


# ---- reproducibility and precision --------------------------------------------------------
@quiet
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_same_random_state_gives_identical_results(solver):
    X, y = multiclass()
    first = MLPClassifier(solver=solver, **SMALL).fit(X, y)
    second = MLPClassifier(solver=solver, **SMALL).fit(X, y)
    for a, b in zip(first.coefs_ + first.intercepts_, second.coefs_ + second.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert first.loss_ == second.loss_


@quiet
def test_different_random_states_give_different_weights():
    X, y = multiclass()
    first = MLPClassifier(**{**SMALL, "random_state": 0}).fit(X, y)
    second = MLPClassifier(**{**SMALL, "random_state": 1}).fit(X, y)
    assert not np.array_equal(first.coefs_[0], second.coefs_[0])


@quiet
@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "estimator_class, data", [(MLPClassifier, multiclass), (MLPRegressor, regression)]
)
def test_by_default_weights_and_predictions_take_the_inputs_precision(
    estimator_class, data, input_dtype
):
    X, y = data()
    X = X.astype(input_dtype)
    model = estimator_class(**SMALL).fit(X, y)
    assert {c.dtype for c in model.coefs_ + model.intercepts_} == {np.dtype(input_dtype)}
    outputs = model.predict_proba(X) if estimator_class is MLPClassifier else model.predict(X)
    assert outputs.dtype == input_dtype


@quiet
@pytest.mark.parametrize(
    "estimator_class, data", [(MLPClassifier, multiclass), (MLPRegressor, regression)]
)
def test_float32_is_the_explicit_speed_option_with_float64_predictions(estimator_class, data):
    X, y = data()
    model = estimator_class(**SMALL, dtype="float32").fit(X, y)
    assert {c.dtype for c in model.coefs_ + model.intercepts_} == {np.dtype(np.float32)}
    outputs = model.predict_proba(X) if estimator_class is MLPClassifier else model.predict(X)
    assert outputs.dtype == np.float64
    in_float64 = estimator_class(**SMALL).fit(X, y)
    assert model.score(X, y) == pytest.approx(in_float64.score(X, y), abs=0.05)


@quiet
@pytest.mark.parametrize(
    "dtype, input_dtype", [(None, np.float64), ("float32", np.float64), ("float64", np.float32)]
)
def test_dtype_parameter_overrides_the_input_precision(dtype, input_dtype):
    X, y = multiclass()
    model = MLPClassifier(dtype=dtype, **SMALL).fit(X.astype(input_dtype), y)
    expected = np.dtype(input_dtype if dtype is None else dtype)
    assert model.coefs_[0].dtype == expected


# ---- multi-label, multi-output, probabilities -----------------------------------------------
@quiet
def test_multilabel_targets_get_one_sigmoid_per_label():
    X, Y = multilabel()
    model = MLPClassifier(**{**SMALL, "max_iter": 200}).fit(X, Y)
    prediction, probabilities = model.predict(X), model.predict_proba(X)
    assert model.out_activation_ == "logistic" and prediction.shape == Y.shape
    assert set(np.unique(prediction)) <= {0, 1}
    assert probabilities.shape == Y.shape and ((probabilities > 0) & (probabilities < 1)).all()
    assert (prediction == Y).mean() > 0.8


@quiet
def test_multi_output_regression_predicts_every_target():
    X, y = regression(n_targets=2)
    model = MLPRegressor(**{**SMALL, "max_iter": 300}).fit(X, y)
    assert model.n_outputs_ == 2 and model.predict(X).shape == (len(X), 2)
    assert model.score(X, y) > 0.9


@quiet
@pytest.mark.parametrize("data", [multiclass, binary])
def test_predict_proba_rows_sum_to_one(data):
    X, y = data()
    probabilities = MLPClassifier(**SMALL).fit(X, y).predict_proba(X)
    assert probabilities.shape == (len(X), len(np.unique(y)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)


@quiet
@pytest.mark.parametrize("data", [multiclass, binary, multilabel])
def test_predict_log_proba_is_the_log_of_predict_proba(data):
    X, y = data()
    model = MLPClassifier(**SMALL).fit(X, y)
    np.testing.assert_allclose(
        model.predict_log_proba(X), np.log(model.predict_proba(X)), rtol=1e-9
    )


def _saturated_binary_model():
    X, y = binary()
    with pytest.warns(ConvergenceWarning):
        model = MLPClassifier(**SMALL).fit(X, y)
    model.coefs_[-1] *= 1e3  # coefs_ are views of the network's weights: logits in the hundreds
    return model, X


def test_binary_probabilities_keep_tiny_values_on_both_sides():
    model, X = _saturated_binary_model()
    probabilities = model.predict_proba(X)
    tiny = (probabilities > 0) & (probabilities < 1e-20)
    assert tiny[:, 0].any() and tiny[:, 1].any()  # neither column is computed as 1 minus the other


def test_predict_log_proba_is_minus_inf_exactly_where_the_probability_underflows():
    model, X = _saturated_binary_model()
    probabilities, log_probabilities = model.predict_proba(X), model.predict_log_proba(X)
    assert (probabilities == 0).any()
    np.testing.assert_array_equal(np.isneginf(log_probabilities), probabilities == 0)
    shown = probabilities > 0
    np.testing.assert_allclose(log_probabilities[shown], np.log(probabilities[shown]), rtol=1e-9)


# ---- partial_fit, warm_start, early stopping ---------------------------------------------------
def test_classifier_partial_fit_needs_the_classes_on_the_first_call():
    X, y = multiclass()
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**SMALL).partial_fit(X, y)


def test_partial_fit_continues_training():
    X, y = multiclass()
    model = MLPClassifier(**SMALL).partial_fit(X[:30], y[:30], classes=np.unique(y))
    first_loss = model.loss_
    for _ in range(40):
        model.partial_fit(X, y)
    assert model.loss_ < first_loss and model.t_ == 30 + 40 * len(X) and model.n_iter_ == 1


def test_partial_fit_rejects_labels_outside_the_classes():
    X, y = multiclass()
    model = MLPClassifier(**SMALL).partial_fit(X, y % 2, classes=[0, 1])
    with pytest.raises(ValueError, match="classes not in"):
        model.partial_fit(X, y)


def test_partial_fit_exists_only_for_stochastic_solvers():
    assert hasattr(MLPRegressor(solver="adam"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


@quiet
def test_warm_start_continues_from_the_fitted_weights():
    X, y = multiclass()
    model = MLPClassifier(warm_start=True, tol=0, **SMALL).fit(X, y)
    first_epochs = list(model.loss_curve_)
    model.fit(X, y)
    assert len(model.loss_curve_) == 2 * len(first_epochs) and model.n_iter_ == len(first_epochs)
    assert model.loss_curve_[len(first_epochs)] < first_epochs[0]


@quiet
def test_early_stopping_keeps_the_weights_of_the_best_validation_score():
    X, y = multiclass()
    model = MLPClassifier(
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        **{**SMALL, "max_iter": 200},
    ).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ < 200
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.best_loss_ is None


# ---- errors and reports ------------------------------------------------------------------------
def test_nan_input_is_rejected_by_name():
    X, y = multiclass()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier(**SMALL).fit(X, y)


def test_using_an_unfitted_estimator_says_so():
    X, _ = regression()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MLPRegressor().predict(X)


@quiet
def test_predicting_with_the_wrong_number_of_features_says_so():
    X, y = regression()
    model = MLPRegressor(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but MLPRegressor is expecting 5"):
        model.predict(X[:, :4])


@pytest.mark.parametrize(
    "parameter, value, message",
    [
        ("activation", "softsign", "expected one of 'identity', 'logistic', 'tanh', 'relu'"),
        ("solver", "rmsprop", "expected one of 'lbfgs', 'sgd', 'adam'"),
        ("alpha", -1.0, "alpha must be a number in \\[0, inf\\), got -1.0"),
        ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes must be an integer in \\[1, inf\\)"),
        ("batch_size", 0, "batch_size"),
        ("dtype", "int8", "dtype must be None, float32 or float64"),
    ],
)
def test_bad_hyper_parameters_are_named_at_fit(parameter, value, message):
    X, y = multiclass()
    model = MLPClassifier(**{**SMALL, parameter: value})  # accepted until fit, as in scikit-learn
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_partial_fit_refuses_early_stopping():
    X, y = regression()
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, y)


@quiet
def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = regression()
    MLPRegressor(verbose=True, **{**SMALL, "max_iter": 3}).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 2", "Iteration 3"]


def test_benchmark_smoke_run_reports_every_data_set(tmp_path):
    output = tmp_path / "sklearn.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sklearn.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(output.read_text())["summary"]
    assert [row["dataset"] for row in rows] == ["digits", "breast_cancer", "diabetes"]
    assert all(
        row[library]["median_cpu_s"] > 0 for row in rows for library in ("chainrule", "sklearn")
    )


# ---- the compiled step against the eager one ------------------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "options",
    [
        {"solver": "adam"},
        {"solver": "sgd", "learning_rate": "invscaling"},
        {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1, "tol": 1.0},
        {"solver": "adam", "early_stopping": True},
        {"solver": "adam", "dropout": 0.2},
        {"solver": "sgd", "alpha": 0.0, "batch_size": 32, "shuffle": False},
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind", ["classifier", "squared_error", "poisson"])
def test_compiled_step_trains_as_the_eager_step(monkeypatch, kind, options, weighted):
    X, y = multiclass() if kind == "classifier" else regression()
    estimator_class, extra = MLPClassifier, {}
    if kind != "classifier":
        estimator_class, extra = MLPRegressor, {"loss": kind}
        y = np.abs(y) if kind == "poisson" else y  # Poisson: counts or rates
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y)) if weighted else None
    fitted = {}
    for compiled in (True, False):
        monkeypatch.setattr(estimator_class, "_compile_steps", compiled)
        settings = {"hidden_layer_sizes": (16,), "max_iter": 8, "batch_size": 20, **options}
        model = estimator_class(random_state=0, **settings, **extra)
        fitted[compiled] = model.fit(X, y, sample_weight=weights)
    compiled, eager = fitted[True], fitted[False]
    assert compiled.n_iter_ == eager.n_iter_
    np.testing.assert_allclose(compiled.loss_curve_, eager.loss_curve_, rtol=1e-12)
    for ours, reference in zip(
        compiled.coefs_ + compiled.intercepts_, eager.coefs_ + eager.intercepts_
    ):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)


@quiet
def test_stochastic_fit_replays_a_compiled_step(monkeypatch):
    from chainrule.sklearn import _compiled

    steps, make_step = [], _compiled._step

    def recording_step(mlp):
        steps.append(make_step(mlp))
        return steps[-1]

    monkeypatch.setattr(_compiled, "_step", recording_step)
    X, y = multiclass()
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, batch_size=50, random_state=0).fit(X, y)
    assert steps and steps[0].cache_info()["replays"] > 0
