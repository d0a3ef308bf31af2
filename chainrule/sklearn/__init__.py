"""scikit-learn estimators: MLPClassifier and MLPRegressor, drop-in replacements for sklearn's MLPs.

Same parameters, attributes and loss values as `sklearn.neural_network` (sample_weight, sparse X
and MLPRegressor's Poisson loss included); the network is a chainrule `nn.Sequential`, trained by
`chainrule.train.fit` (sgd, adam) or by scipy's L-BFGS-B over a flat parameter vector (lbfgs).
Only users of this package need scikit-learn.

Beyond sklearn's MLPs: class_weight, dropout, the registry's other hidden activations (gelu,
leaky_relu, ...), a `dtype` option (the input's precision by default, 'float32' for speed), and
safe persistence without pickle (persistence.py). Different on purpose: Adam adds eps to the
bias-corrected √v̂ (as PyTorch); SGD momentum keeps PyTorch's form, so a learning rate that changes
mid-run (invscaling, adaptive) also rescales the momentum; a multi-output regressor follows the
gradient of the loss it reports (sklearn's is k times larger for k outputs); a diverging run with
early stopping stops at the epoch that turned NaN (sklearn trains on until n_iter_no_change).

The code: classifier.py and regressor.py hold the estimators, _base.py what they share (the
network and the stochastic solver), _lbfgs.py the lbfgs solver, _sparse.py sparse input,
_convergence.py sklearn's end-of-epoch rules, _validation.py the hyper-parameter checks and
persistence.py model files. This file only re-exports.
"""

try:
    import sklearn  # noqa: F401 - only whether it is there
except ImportError:
    raise ImportError(
        'chainrule.sklearn needs scikit-learn: pip install "chainrule[sklearn]"'
    ) from None

from chainrule.sklearn._validation import InvalidParameterError
from chainrule.sklearn.classifier import MLPClassifier
from chainrule.sklearn.persistence import load_estimator, save_estimator
from chainrule.sklearn.regressor import MLPRegressor

__all__ = [
    "InvalidParameterError",
    "MLPClassifier",
    "MLPRegressor",
    "load_estimator",
    "save_estimator",
]
