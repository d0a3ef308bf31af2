"""`chainrule.save` and `chainrule.load`: one pair of calls for everything chainrule writes as a
model file — a network, a Predictor (a network with its scaling, task and classes), or a fitted
`chainrule.sklearn` estimator. The format itself is `chainrule.io`'s; this only dispatches.

It sits above the scikit-learn adapter, so it imports that adapter (and scikit-learn) only when an
estimator is saved or a file says it holds one.
"""

from __future__ import annotations

import os
from typing import Any

from chainrule import io, nn
from chainrule.io import ESTIMATOR_KEY
from chainrule.predictor import Predictor

__all__ = ["load", "save"]


def save(obj: Any, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write a network (`nn.Module`), a `Predictor`, or a fitted `chainrule.sklearn` estimator to
    a model file at `path`. Atomic: on any failure the previous file there is untouched; nothing
    in the file can run code when it is read.

    `metadata`: JSON-like data kept with it (a Predictor's scaling and classes are added).
    """
    if isinstance(obj, Predictor):
        io.save(obj.model, path, metadata={**obj.metadata, **(metadata or {})})
    elif isinstance(obj, nn.Module):
        io.save(obj, path, metadata=metadata)
    elif type(obj).__module__.startswith("chainrule.sklearn."):
        from chainrule.sklearn.persistence import save_estimator

        save_estimator(obj, path, metadata)
    else:
        raise TypeError(
            f"save takes a chainrule.nn.Module, a Predictor or a fitted chainrule.sklearn "
            f"estimator, got {type(obj).__name__}"
        )


def load(path: str | os.PathLike) -> Any:
    """What `save` wrote: the network (an `nn.Module`), or the fitted estimator for a file saved
    from one. Never runs code from the file; `chainrule.ModelFileError` names any defect.

    For the network with its scaling and classes, use `chainrule.Predictor.load(path)`.
    """
    model, metadata = io.load_with_metadata(path)
    if ESTIMATOR_KEY in metadata:
        from chainrule.sklearn.persistence import estimator_from

        return estimator_from(model, metadata, path)
    return model
