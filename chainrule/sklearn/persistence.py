"""Safe persistence of fitted MLPClassifier / MLPRegressor, without pickle: chainrule's model file
(safetensors; loading it runs no code) holds the network, and its JSON metadata the estimator's
class, hyper-parameters, classes and training record under the key ESTIMATOR_KEY.

Everything read back is checked before it is used: the class comes from a fixed table, the
hyper-parameters go through the estimators' own checks, labels must be plain numbers or strings,
and the network must be the one those hyper-parameters build. The optimizer's moments are not
kept: partial_fit after a load starts a fresh optimizer from the loaded weights.

    save_estimator(clf, "clf.safetensors")
    load_estimator("clf.safetensors").predict(X)  # bit for bit clf.predict(X)
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import check_is_fitted

from chainrule import io, nn
from chainrule.io import ESTIMATOR_KEY
from chainrule.safetensors_format import ModelFileError
from chainrule.sklearn._base import _BaseMLP
from chainrule.sklearn.classifier import MLPClassifier
from chainrule.sklearn.regressor import MLPRegressor

__all__ = ["ESTIMATOR_KEY", "estimator_from", "is_estimator", "load_estimator", "save_estimator"]

FORMAT = "chainrule.sklearn.estimator"
FORMAT_VERSION = 1
_CLASSES = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
# Fitted attributes beyond the network and the classes: the training record, as sklearn has it.
_RECORD = (
    "n_features_in_",
    "n_layers_",
    "n_outputs_",
    "out_activation_",
    "n_iter_",
    "t_",
    "loss_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
)
_LABEL_KINDS = "iufbUO"  # integers, floats, bools, strings (NumPy's or Python's)


# ---- plain JSON for the few Python values hyper-parameters take ----------------------------------
def _encode(value: Any) -> Any:
    """JSON for None, bools, numbers (inf and NaN too), strings, tuples, lists and dicts."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {"dict": [[_encode(key), _encode(item)] for key, item in value.items()]}
    if isinstance(value, np.ndarray):
        return [_encode(item) for item in value.tolist()]
    raise TypeError(f"cannot save a {type(value).__name__} ({value!r:.80}) in a model file")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"float"} and value["float"] in ("inf", "-inf", "nan"):
        return float(value["float"])
    if set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(_decode(item) for item in value["tuple"])
    if set(value) == {"dict"} and isinstance(value["dict"], list):
        pairs = value["dict"]
        if all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            return {_decode(key): _decode(item) for key, item in pairs}
    raise ValueError(f"unexpected value {str(value)[:80]}")


def _hyper_parameters(estimator: _BaseMLP) -> dict[str, Any]:
    params = estimator.get_params(deep=False)
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None  # a generator's state is not a hyper-parameter to share
    if params["dtype"] is not None:
        params["dtype"] = np.dtype(params["dtype"]).name
    return {name: _encode(value) for name, value in params.items()}


# ---- save ---------------------------------------------------------------------------------------
def is_estimator(value: Any) -> bool:
    """Whether `value` is an MLPClassifier or MLPRegressor (what save_estimator writes)."""
    return isinstance(value, _BaseMLP)


def save_estimator(
    estimator: _BaseMLP, path: str | os.PathLike, metadata: dict | None = None
) -> None:
    """Write a fitted estimator to a chainrule model file; `metadata` (JSON) is kept beside it."""
    if not is_estimator(estimator):
        raise TypeError(
            f"save_estimator expects a fitted MLPClassifier or MLPRegressor, got "
            f"{type(estimator).__name__}"
        )
    check_is_fitted(estimator)
    record = {name: _encode(getattr(estimator, name, None)) for name in _RECORD}
    if hasattr(estimator, "feature_names_in_"):
        record["feature_names_in_"] = _encode(estimator.feature_names_in_)
    entry = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "params": _hyper_parameters(estimator),
        "fitted": record,
    }
    if isinstance(estimator, MLPClassifier):
        classes = np.asarray(estimator.classes_)
        if classes.dtype.kind not in _LABEL_KINDS:
            raise TypeError(f"cannot save class labels of dtype {classes.dtype}")
        entry["classes"] = {"dtype": classes.dtype.str, "values": _encode(classes)}
        entry["target_type"] = estimator._label_binarizer.y_type_
    io.save(estimator._model, path, metadata={**(metadata or {}), ESTIMATOR_KEY: entry})


# ---- load ---------------------------------------------------------------------------------------
def load_estimator(path: str | os.PathLike) -> _BaseMLP:
    """The fitted estimator saved at `path`; ModelFileError for anything else or anything amiss."""
    model, metadata = io.load_with_metadata(path)
    return estimator_from(model, metadata, path)


def estimator_from(model: nn.Module, metadata: dict, path: str | os.PathLike = "") -> _BaseMLP:
    """The estimator a model file describes, from its loaded network and metadata (for
    `chainrule.load`, which reads the file once)."""
    name = str(os.fspath(path))
    try:
        return _rebuild(model, metadata)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(name, f"not a valid chainrule.sklearn estimator: {error}") from None


def _rebuild(model: nn.Module, metadata: dict) -> _BaseMLP:
    entry = metadata.get(ESTIMATOR_KEY)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError(f"the file holds no {FORMAT} (metadata key {ESTIMATOR_KEY!r})")
    version = entry.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"format_version {str(version)[:20]} is not one this chainrule reads")
    if entry.get("class") not in _CLASSES:
        raise ValueError(f"unknown class {str(entry.get('class'))[:80]!r}")
    estimator_class = _CLASSES[entry["class"]]
    params = {key: _decode(value) for key, value in dict(entry["params"]).items()}
    unknown = set(params) - set(estimator_class().get_params())
    if unknown:
        raise ValueError(f"unknown hyper-parameters {sorted(unknown)[:10]}")
    estimator = estimator_class(**params)
    hidden = estimator._check_parameters()
    record = {key: _decode(value) for key, value in dict(entry["fitted"]).items()}
    _check_network(estimator, model, [record["n_features_in_"], *hidden, record["n_outputs_"]])
    for key in _RECORD:
        setattr(estimator, key, record[key])
    if "feature_names_in_" in record:
        estimator.feature_names_in_ = np.asarray(record["feature_names_in_"], dtype=object)
    if isinstance(estimator, MLPClassifier):
        _restore_classes(estimator, entry)
        softmax = estimator._label_binarizer.y_type_ == "multiclass"
        head = "softmax" if softmax else "logistic"
    else:
        head = "exp" if estimator.loss == "poisson" else "identity"
    if (estimator.out_activation_, estimator.n_layers_) != (head, len(hidden) + 2):
        raise ValueError(
            f"out_activation_ {str(estimator.out_activation_)[:20]!r} and n_layers_ "
            f"{str(estimator.n_layers_)[:20]} do not fit the estimator: expected {head!r} and "
            f"{len(hidden) + 2}"
        )
    estimator._model = model.train()
    # Where a warm start after the load picks up sklearn's stopping rule: afresh.
    estimator._no_improvement_count = 0
    if estimator.early_stopping:
        estimator._best_state = model.state_dict()
    return estimator


def _check_network(estimator: _BaseMLP, model: nn.Module, units: list) -> None:
    """The network must be exactly the one the hyper-parameters build: same layers, same sizes."""
    if not all(isinstance(size, int) and size >= 1 for size in units):
        raise ValueError(f"layer sizes {units[:10]} are not positive integers")
    reference = type(estimator)(**estimator.get_params())
    reference._initialize(units, model.dtype, np.random.default_rng(0))
    expected = [(type(layer), _sizes(layer)) for layer in reference._model]
    found = [(type(layer), _sizes(layer)) for layer in model] if _is_sequence(model) else []
    if found != expected:
        raise ValueError(
            f"the network {[t.__name__ for t, _ in found][:20]} is not the one "
            f"{type(estimator).__name__}'s hyper-parameters build"
        )


def _is_sequence(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential)


def _sizes(layer: nn.Module) -> tuple:
    if isinstance(layer, nn.Linear):
        return (layer.in_features, layer.out_features, layer.bias is not None)
    return ()


def _restore_classes(estimator: MLPClassifier, entry: dict) -> None:
    dtype = np.dtype(entry["classes"]["dtype"])
    if dtype.kind not in _LABEL_KINDS or dtype.fields is not None:
        raise ValueError(f"class labels of dtype {dtype} are not plain numbers or strings")
    values = _decode(entry["classes"]["values"])
    if not isinstance(values, list) or not all(
        isinstance(v, (bool, int, float, str)) for v in values
    ):
        raise ValueError("class labels must be a list of numbers or strings")
    classes = np.array(values, dtype=dtype)
    target_type = entry.get("target_type")
    if target_type == "multilabel-indicator":
        binarizer = LabelBinarizer().fit(np.eye(len(classes), dtype=int))
    elif target_type in ("binary", "multiclass"):
        binarizer = LabelBinarizer().fit(classes)
    else:
        raise ValueError(f"unknown target type {str(target_type)[:40]!r}")
    if not np.array_equal(binarizer.classes_, classes) or binarizer.y_type_ != target_type:
        raise ValueError("the class labels do not match the target type")
    binarizer.classes_ = classes  # the saved dtype, exactly
    estimator._label_binarizer, estimator.classes_ = binarizer, classes
