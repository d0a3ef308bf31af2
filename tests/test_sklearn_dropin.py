"""chainrule.sklearn as a drop-in for scikit-learn's MLPs (sample_weight, Poisson loss, sparse X,
divergence, predict_log_proba, assignable weights, partial_fit), and what sklearn's MLPs never got
(class_weight, dropout, more activations, safe persistence). Each checked against scikit-learn's
own estimators on the same data where one exists."""

import re
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("sklearn")  # an optional extra: chainrule[sklearn]

import scipy.sparse as sp
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import PoissonRegressor
from sklearn.neural_network import MLPClassifier as SklearnClassifier
from sklearn.neural_network import MLPRegressor as SklearnRegressor
from sklearn.utils.class_weight import compute_sample_weight

from chainrule.safetensors_format import ModelFileError
from chainrule.sklearn import (
    InvalidParameterError,
    MLPClassifier,
    MLPRegressor,
    load_estimator,
    save_estimator,
)
from tests.test_sklearn import (
    FROZEN,
    PROBLEMS,
    SKLEARN_PRECISION,
    binary,
    multiclass,
    multilabel,
    regression,
)

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
SMALL = {"hidden_layer_sizes": (16,), "max_iter": 30, "random_state": 0}
LBFGS = {"solver": "lbfgs", "hidden_layer_sizes": (8,), "max_iter": 40, "random_state": 0}


def _weights(n, seed=0):
    return np.random.default_rng(seed).integers(1, 4, size=n).astype(float)


def _parameters(model):
    return model.coefs_ + model.intercepts_


# ---- sample_weight -------------------------------------------------------------------------
@quiet
@pytest.mark.parametrize("problem", PROBLEMS)
def test_weighted_loss_is_sklearns_weighted_loss(problem):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    w = _weights(len(X))
    model = ours(**FROZEN, **SKLEARN_PRECISION, random_state=0).fit(X, y, sample_weight=w)
    oracle = theirs(**{**FROZEN, "warm_start": True}).fit(X, y)
    oracle.coefs_, oracle.intercepts_ = model.coefs_, model.intercepts_
    oracle.fit(X, y, sample_weight=w)
    assert model.loss_curve_[0] == pytest.approx(oracle.loss_curve_[-1], rel=1e-10)


@quiet
@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p != "multi-output regression"])
def test_weighted_sgd_training_follows_sklearn(problem):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    w = _weights(len(X), seed=1)
    run = {"learning_rate_init": 0.01, "max_iter": 3, "batch_size": 30, "warm_start": True}
    model = ours(**FROZEN, **SKLEARN_PRECISION, random_state=0).fit(X, y)
    oracle = theirs(**{**FROZEN, "warm_start": True}).fit(X, y)
    oracle.coefs_, oracle.intercepts_ = model.coefs_, model.intercepts_
    model.set_params(**run).fit(X, y, sample_weight=w)
    oracle.set_params(**run).fit(X, y, sample_weight=w)
    for a, b in zip(_parameters(model), _parameters(oracle)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.loss_curve_[-3:], oracle.loss_curve_[-3:], rtol=1e-9)


@quiet
@pytest.mark.parametrize("problem", ["multiclass", "binary", "multilabel", "regression"])
def test_lbfgs_weight_two_is_the_row_twice(problem):
    ours, _, data = PROBLEMS[problem]
    X, y = data()
    w = _weights(len(X), seed=2).astype(int)
    weighted = ours(**LBFGS).fit(X, y, sample_weight=w)
    repeated = ours(**LBFGS).fit(X.repeat(w, axis=0), y.repeat(w, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-9)
    for a, b in zip(_parameters(weighted), _parameters(repeated)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("estimator_class", [MLPClassifier, MLPRegressor])
def test_full_batch_partial_fit_weight_two_is_the_row_twice(estimator_class):
    X, y = multiclass() if estimator_class is MLPClassifier else regression()
    w = _weights(len(X), seed=3).astype(int)
    options = {**SMALL, "batch_size": 10_000}
    extra = {"classes": np.unique(y)} if estimator_class is MLPClassifier else {}
    weighted, repeated = estimator_class(**options), estimator_class(**options)
    for _ in range(5):
        weighted.partial_fit(X, y, sample_weight=w, **extra)
        repeated.partial_fit(X.repeat(w, axis=0), y.repeat(w), **extra)
    for a, b in zip(_parameters(weighted), _parameters(repeated)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@quiet
def test_early_stopping_scores_the_held_out_rows_with_their_weights(monkeypatch):
    import chainrule.sklearn._base as base

    X, y = regression()
    w = _weights(len(X), seed=4) ** 3
    split = {}

    def recording_split(rows, **options):
        split["train"], split["held_out"] = base_split(rows, **options)
        return split["train"], split["held_out"]

    base_split = base.train_test_split
    monkeypatch.setattr(base, "train_test_split", recording_split)
    model = MLPRegressor(early_stopping=True, validation_fraction=0.3, **SMALL)
    model.fit(X, y, sample_weight=w)
    held = split["held_out"]
    weighted = model.score(X[held], y[held], sample_weight=w[held])
    assert model.best_validation_score_ == pytest.approx(weighted, rel=1e-12)
    assert model.best_validation_score_ != pytest.approx(model.score(X[held], y[held]), rel=1e-6)


def test_sample_weight_of_the_wrong_length_is_refused():
    X, y = regression()
    with pytest.raises(ValueError, match="sample_weight.shape"):
        MLPRegressor(**SMALL).fit(X, y, sample_weight=np.ones(len(X) - 1))


@quiet
# ---- class_weight --------------------------------------------------------------------------
@pytest.mark.parametrize("class_weight", ["balanced", {0: 1.0, 1: 5.0}])
@pytest.mark.parametrize("data", [multiclass, binary])
def test_class_weight_is_the_matching_sample_weight(class_weight, data):
    X, y = data()
    y = y.copy()
    y[: len(y) // 3] = 0  # unbalanced classes
    ours = MLPClassifier(class_weight=class_weight, **LBFGS).fit(X, y)
    reference = MLPClassifier(**LBFGS).fit(
        X, y, sample_weight=compute_sample_weight(class_weight, y)
    )
    for a, b in zip(_parameters(ours), _parameters(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@quiet
def test_class_weight_multiplies_sample_weight():
    X, y = binary()
    w = _weights(len(X), seed=5)
    ours = MLPClassifier(class_weight={1: 3.0}, **LBFGS).fit(X, y, sample_weight=w)
    reference = MLPClassifier(**LBFGS).fit(X, y, sample_weight=w * np.where(y == 1, 3, 1))
    for a, b in zip(_parameters(ours), _parameters(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "class_weight, data, message",
    [
        ("heavy", binary, "class_weight must be None, 'balanced' or a dict"),
        ({7: 2.0}, binary, "class_weight names classes \\[7\\]"),
        ("balanced", multilabel, "not supported for multi-label"),
    ],
)
def test_bad_class_weights_are_named(class_weight, data, message):
    X, y = data()
    with pytest.raises(ValueError, match=message):
        MLPClassifier(class_weight=class_weight, **SMALL).fit(X, y)


def test_partial_fit_refuses_balanced_class_weight():
    X, y = binary()
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])


# ---- dropout and activations ---------------------------------------------------------------
@quiet
def test_dropout_trains_differently_and_predicts_deterministically():
    X, y = multiclass()
    options = {**SMALL, "max_iter": 200, "learning_rate_init": 0.01}
    plain = MLPClassifier(**options).fit(X, y)
    dropped = MLPClassifier(dropout=0.3, **options).fit(X, y)
    again = MLPClassifier(dropout=0.3, **options).fit(X, y)
    assert not np.array_equal(plain.coefs_[0], dropped.coefs_[0])
    np.testing.assert_array_equal(dropped.coefs_[0], again.coefs_[0])  # the masks are seeded
    np.testing.assert_array_equal(dropped.predict_proba(X), dropped.predict_proba(X))
    assert dropped.score(X, y) > 0.7


@quiet
def test_dropout_is_off_at_prediction():
    X, y = regression()
    model = MLPRegressor(dropout=0.5, activation="tanh", **SMALL).fit(X, y)
    (W1, W2), (b1, b2) = model.coefs_, model.intercepts_
    np.testing.assert_allclose(model.predict(X), (np.tanh(X @ W1 + b1) @ W2 + b2).ravel())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dropout": 1.0}, "dropout must be a number in \\[0, 1\\)"),
        ({"dropout": 0.2, "solver": "lbfgs"}, "dropout needs a stochastic solver"),
        ({"activation": "softmax"}, "unknown activation 'softmax'"),
    ],
)
def test_bad_dropout_and_activations_are_named(options, message):
    X, y = regression()
    with pytest.raises(InvalidParameterError, match=message):
        MLPRegressor(**{**SMALL, **options}).fit(X, y)


def _torch_activation(name):
    torch = pytest.importorskip("torch")
    functions = {
        "gelu": torch.nn.functional.gelu,
        "leaky_relu": torch.nn.functional.leaky_relu,
        "softplus": torch.nn.functional.softplus,
        "sigmoid": torch.sigmoid,
        "logistic": torch.sigmoid,
        "identity": lambda z: z,
    }
    return lambda z: functions[name](torch.from_numpy(z)).numpy()


@quiet
@pytest.mark.parametrize(
    "activation", ["gelu", "leaky_relu", "softplus", "sigmoid", "logistic", "identity"]
)
def test_hidden_activations_compute_what_pytorch_does(activation):
    X, y = regression()
    model = MLPRegressor(activation=activation, **SMALL).fit(X, y)
    (W1, W2), (b1, b2) = model.coefs_, model.intercepts_
    expected = _torch_activation(activation)(X @ W1 + b1) @ W2 + b2
    np.testing.assert_allclose(model.predict(X), expected.ravel(), rtol=1e-10, atol=1e-12)


@quiet
def test_logistic_is_sklearns_name_for_sigmoid():
    X, y = multiclass()
    logistic = MLPClassifier(activation="logistic", **SMALL).fit(X, y)
    sigmoid = MLPClassifier(activation="sigmoid", **SMALL).fit(X, y)
    np.testing.assert_array_equal(logistic.predict_proba(X), sigmoid.predict_proba(X))


# ---- the Poisson loss ----------------------------------------------------------------------
def _counts(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = rng.poisson(np.exp(0.3 * X[:, 0] - 0.2 * X[:, 1] + 0.5)).astype(float)
    return X, y


@quiet
def test_poisson_loss_is_sklearns_half_poisson_deviance():
    X, y = _counts()
    frozen = {**FROZEN, "loss": "poisson"}
    model = MLPRegressor(**frozen, **SKLEARN_PRECISION, random_state=0).fit(X, y)
    oracle = SklearnRegressor(**{**frozen, "warm_start": True}).fit(X, y)
    oracle.coefs_, oracle.intercepts_ = model.coefs_, model.intercepts_
    oracle.fit(X, y)
    assert model.out_activation_ == oracle.out_activation_ == "exp"
    assert model.loss_curve_[0] == pytest.approx(oracle.loss_curve_[-1], rel=1e-10)
    np.testing.assert_allclose(model.predict(X), oracle.predict(X), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_poisson_without_hidden_layers_is_poisson_regression(alpha):
    X, y = _counts()
    glm = PoissonRegressor(alpha=alpha, tol=1e-10, max_iter=1000).fit(X, y)
    # The MLP's L2 term is alpha/(2·n)·‖W‖², the GLM's alpha/2·‖w‖².
    model = MLPRegressor(
        loss="poisson",
        hidden_layer_sizes=(),
        solver="lbfgs",
        alpha=alpha * len(X),
        tol=1e-12,
        max_iter=1000,
        random_state=0,
    ).fit(X, y)
    # Within the two optimisers' tolerances (L-BFGS-B stops on a relative loss change of 2e-9).
    np.testing.assert_allclose(model.coefs_[0].ravel(), glm.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.intercepts_[0], glm.intercept_, rtol=1e-4)
    np.testing.assert_allclose(model.predict(X), glm.predict(X), rtol=1e-4)


def test_poisson_refuses_negative_targets():
    X, y = _counts()
    y[0] = -1
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        MLPRegressor(loss="poisson", **SMALL).fit(X, y)


def test_unknown_regression_loss_is_named():
    X, y = regression()
    with pytest.raises(InvalidParameterError, match="expected one of 'squared_error', 'poisson'"):
        MLPRegressor(loss="huber", **SMALL).fit(X, y)


# ---- sparse X ------------------------------------------------------------------------------
SPARSE = [sp.csr_matrix, sp.csc_matrix, sp.csr_array, sp.csc_array]


def _sparse_problem(seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(120, 30, density=0.1, format="csr", random_state=seed).toarray()
    y = (X[:, :5].sum(axis=1) > np.median(X[:, :5].sum(axis=1))).astype(int)
    return X, y, rng


@quiet
@pytest.mark.parametrize("container", SPARSE)
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_x_trains_and_predicts_as_dense_x(container, solver):
    X, y, _ = _sparse_problem()
    options = {**SMALL, "solver": solver}
    dense = MLPClassifier(**options).fit(X, y)
    sparse = MLPClassifier(**options).fit(container(X), y)
    for a, b in zip(_parameters(sparse), _parameters(dense)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sparse.predict_proba(container(X)), dense.predict_proba(X))
    np.testing.assert_array_equal(sparse.predict(container(X)), dense.predict(X))


@pytest.mark.parametrize("container", SPARSE)
def test_sparse_partial_fit_and_regression(container):
    X, y, _ = _sparse_problem(seed=1)
    dense = MLPRegressor(**SMALL).partial_fit(X, y.astype(float))
    sparse = MLPRegressor(**SMALL).partial_fit(container(X), y.astype(float))
    np.testing.assert_allclose(sparse.predict(container(X)), dense.predict(X), rtol=1e-7)


def _wide_csr(n_rows, n_columns, per_row, seed=0):
    """CSR with `per_row` stored values in each row (scipy's sp.random is slow this wide)."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_columns, size=n_rows * per_row)
    indptr = np.arange(0, n_rows * per_row + 1, per_row)
    data = rng.normal(size=n_rows * per_row)
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_columns))


@quiet
def test_sparse_x_is_never_made_dense():
    # 4 000 × 20 000 at 0.1% density: 640 MB dense in float64, 1 MB as CSR.
    X = _wide_csr(4_000, 20_000, per_row=20)
    y = np.asarray(X[:, :2_000].sum(axis=1)).ravel() > 0
    tracemalloc.start()
    try:
        model = MLPClassifier(hidden_layer_sizes=(10,), max_iter=2, random_state=0).fit(X, y)
        model.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---- divergence and non-finite values, as sklearn ----------------------------------------------
NON_FINITE = re.escape(
    "Solver produced non-finite parameter weights. The input data may contain large values and "
    "need to be preprocessed."
)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
@pytest.mark.parametrize("estimator_class", [MLPRegressor, SklearnRegressor])
def test_non_finite_weights_raise_sklearns_error(estimator_class):
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    with pytest.raises(ValueError, match=NON_FINITE):
        estimator_class().fit(X, y)


@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore::sklearn.exceptions.ConvergenceWarning"
)
@pytest.mark.parametrize("estimator_class", [MLPRegressor, SklearnRegressor])
def test_diverging_loss_with_early_stopping_does_not_raise(estimator_class):
    X, y = load_iris(return_X_y=True)
    model = estimator_class(
        hidden_layer_sizes=100,
        activation="identity",
        solver="sgd",
        learning_rate_init=1,
        max_iter=20,
        early_stopping=True,
        random_state=0,
    ).fit(X, y)
    assert str(model.validation_scores_[-1]) == str(np.nan)
    assert isinstance(model.validation_scores_[-1], float)
    assert all(np.isfinite(p).all() for p in model.coefs_ + model.intercepts_)


@pytest.mark.parametrize("estimator_class", [MLPClassifier, SklearnClassifier])
def test_lbfgs_reaching_max_fun_warns(estimator_class):
    X, y = multiclass()
    model = estimator_class(solver="lbfgs", hidden_layer_sizes=50, max_iter=150, max_fun=10)
    message = r"failed to converge after \d+ iteration\(s\) \(status=1\):\nSTOP: TOTAL NO\. OF F,G"
    with pytest.warns(ConvergenceWarning, match=message):
        model.fit(X, y)
    assert model.n_iter_ <= 10


@pytest.mark.parametrize("estimator_class", [MLPClassifier, SklearnClassifier])
def test_stratified_split_with_a_one_sample_class_gives_sklearns_error(estimator_class):
    X, y = binary()
    y = np.zeros_like(y)
    y[0] = 1
    with pytest.raises(ValueError, match="The least populated classes in y have only 1 member"):
        estimator_class(early_stopping=True).fit(X, y)


# ---- predict_log_proba, assignable weights, partial_fit quality --------------------------------
@quiet
@pytest.mark.parametrize("data", [multiclass, binary, multilabel])
def test_predict_log_proba_agrees_with_predict_proba_on_the_arg_max(data):
    X, y = data()
    model = MLPClassifier(**SMALL).fit(X, y)
    log_probabilities, probabilities = model.predict_log_proba(X), model.predict_proba(X)
    np.testing.assert_allclose(log_probabilities, np.log(probabilities), rtol=1e-9)
    np.testing.assert_array_equal(log_probabilities.argmax(axis=1), probabilities.argmax(axis=1))


@quiet
@pytest.mark.parametrize("problem", PROBLEMS)
def test_assigned_sklearn_weights_give_sklearns_predictions(problem):
    ours, theirs, data = PROBLEMS[problem]
    X, y = data()
    oracle = theirs(**SMALL).fit(X, y)
    model = ours(**SMALL).fit(X, y)
    model.coefs_, model.intercepts_ = oracle.coefs_, oracle.intercepts_
    np.testing.assert_allclose(model.predict(X), oracle.predict(X), rtol=1e-12)


@quiet
def test_assigning_weights_of_the_wrong_shape_is_refused():
    X, y = regression()
    model = MLPRegressor(**SMALL).fit(X, y)
    with pytest.raises(
        ValueError, match="coefs_ must have the shapes \\[\\(5, 16\\), \\(16, 1\\)\\]"
    ):
        model.coefs_ = [np.zeros((5, 16)), np.zeros((16, 2))]


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_regression_reaches_sklearns_quality(solver):
    X, y = make_regression(n_samples=2000, n_features=10, noise=10, random_state=0)
    X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    scores = {}
    for name, estimator_class in {"ours": MLPRegressor, "sklearn": SklearnRegressor}.items():
        model = estimator_class(hidden_layer_sizes=(32,), solver=solver, random_state=0)
        for _ in range(5):
            for start in range(0, 1600, 20):
                model.partial_fit(X[start : start + 20], y[start : start + 20])
        scores[name] = model.score(X[1600:], y[1600:])
    assert scores["ours"] > scores["sklearn"] - 0.02, scores


# ---- safe persistence ----------------------------------------------------------------------
PERSISTED = {
    "multiclass": (MLPClassifier, multiclass, {}),
    "binary, balanced": (MLPClassifier, binary, {"class_weight": "balanced"}),
    "multilabel": (MLPClassifier, multilabel, {}),
    "string labels, dropout, gelu": (
        MLPClassifier,
        lambda: (multiclass()[0], np.array(["ant", "bee", "cat"])[multiclass()[1]]),
        {"dropout": 0.2, "activation": "gelu", "class_weight": {"bee": 2.0}},
    ),
    "regression, float32": (MLPRegressor, regression, {"dtype": "float32"}),
    "poisson": (MLPRegressor, _counts, {"loss": "poisson", "n_iter_no_change": np.inf}),
}


@quiet
@pytest.mark.parametrize("case", PERSISTED)
def test_a_saved_estimator_loads_and_predicts_bit_for_bit(case, tmp_path):
    estimator_class, data, options = PERSISTED[case]
    X, y = data()
    model = estimator_class(**{**SMALL, **options}).fit(X, y)
    path = tmp_path / "model.safetensors"
    save_estimator(model, path)
    loaded = load_estimator(path)
    assert type(loaded) is estimator_class and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    if estimator_class is MLPClassifier:
        np.testing.assert_array_equal(loaded.classes_, model.classes_)
        assert loaded.classes_.dtype == model.classes_.dtype
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.loss_curve_ == model.loss_curve_ and loaded.n_iter_ == model.n_iter_
    loaded.set_params(warm_start=True, max_iter=2).fit(X, y)  # trains on from the loaded weights


def test_a_plain_model_file_is_not_an_estimator(tmp_path):
    from chainrule import io, nn

    path = tmp_path / "net.safetensors"
    io.save(nn.Sequential(nn.Linear(2, 1, rng=0)), path)
    with pytest.raises(ModelFileError, match="holds no chainrule.sklearn.estimator"):
        load_estimator(path)


@quiet
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda entry: entry.update({"class": "os.system"}), "unknown class 'os.system'"),
        (lambda entry: entry["params"].update({"alpha": -1}), "alpha must be a number"),
        (lambda entry: entry["params"].update({"evil": 1}), "unknown hyper-parameters"),
        (
            lambda entry: entry["params"].update({"hidden_layer_sizes": [3]}),
            "is not the one MLPClassifier's hyper-parameters build",
        ),
        (lambda entry: entry["classes"].update({"dtype": "|V8"}), "not plain numbers or strings"),
    ],
)
def test_a_tampered_estimator_file_is_refused(change, message, tmp_path):
    from chainrule import io
    from chainrule.sklearn.persistence import ESTIMATOR_KEY

    X, y = multiclass()
    path = tmp_path / "model.safetensors"
    save_estimator(MLPClassifier(**SMALL).fit(X, y), path)
    model, metadata = io.load_with_metadata(path)
    change(metadata[ESTIMATOR_KEY])
    io.save(model, path, metadata=metadata)  # a well-formed file with a changed description
    with pytest.raises(ModelFileError, match=message):
        load_estimator(path)


def test_an_unfitted_estimator_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_estimator(MLPClassifier(), tmp_path / "model.safetensors")


def test_only_estimators_are_saved_as_estimators(tmp_path):
    with pytest.raises(TypeError, match="expects a fitted MLPClassifier or MLPRegressor"):
        save_estimator(SklearnClassifier(), tmp_path / "model.safetensors")


@quiet
def test_class_weighted_and_weighted_classifiers_handle_imbalance():
    X, y = make_classification(n_samples=300, weights=[0.9, 0.1], random_state=0)
    options = {**LBFGS, "max_iter": 200}
    plain = MLPClassifier(**options).fit(X, y)
    balanced = MLPClassifier(class_weight="balanced", **options).fit(X, y)
    minority = y == 1
    assert (balanced.predict(X)[minority] == 1).mean() >= (plain.predict(X)[minority] == 1).mean()
