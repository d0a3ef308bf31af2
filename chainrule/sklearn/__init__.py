"""scikit-learn estimators: MLPClassifier and MLPRegressor, drop-in replacements for sklearn's MLPs.

Same parameters, attributes and loss values as `sklearn.neural_network`; the network is a chainrule
`nn.Sequential`, trained by `chainrule.train.fit` (sgd, adam) or by scipy's L-BFGS-B over a flat
parameter vector (lbfgs). Only users of this package need scikit-learn.

Not supported (yet): sparse input, sample_weight, MLPRegressor's Poisson loss. Different on
purpose: Adam adds eps to the bias-corrected √v̂ (as PyTorch); SGD momentum keeps PyTorch's form,
so a learning rate that changes mid-run (invscaling, adaptive) also rescales the momentum; a
multi-output regressor follows the gradient of the loss it reports (sklearn's is k times larger
for k outputs); training that turns NaN stops at once with `NonFiniteError`.

The code: classifier.py and regressor.py hold the estimators, _base.py what they share (the
network and both solvers), _convergence.py sklearn's end-of-epoch rules and _validation.py the
hyper-parameter checks. This file only re-exports.
"""

from chainrule.sklearn._validation import InvalidParameterError
from chainrule.sklearn.classifier import MLPClassifier
from chainrule.sklearn.regressor import MLPRegressor

__all__ = ["InvalidParameterError", "MLPClassifier", "MLPRegressor"]
