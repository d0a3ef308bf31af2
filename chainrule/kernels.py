"""The fused C kernels (`_kernels.c`) when they were built, else stand-ins that decline.

`adam(...)` and `sgd(...)` update in place, `relu(z, out)` and `relu_backward(g, z, out)` fill
`out`; each returns True, or returns False having touched nothing (kernels not built, or arrays
that are not all C-contiguous float32 or all float64 of one size), and the caller then runs its
NumPy code, which is the reference: the kernels match it bit for bit (cross-entropy's to
rounding, see below). Set CHAINRULE_NO_KERNELS=1 to run the NumPy code always (to compare, or to
debug).
"""

from __future__ import annotations

import os
from typing import Any


def _decline(*args: Any) -> bool:
    return False


try:
    from chainrule import _kernels  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler
    _kernels = None

AVAILABLE = _kernels is not None and not os.environ.get("CHAINRULE_NO_KERNELS")
adam = _kernels.adam if AVAILABLE else _decline
sgd = _kernels.sgd if AVAILABLE else _decline
relu = _kernels.relu if AVAILABLE else _decline
relu_backward = _kernels.relu_backward if AVAILABLE else _decline
# Softmax cross-entropy over int64 class targets: `cross_entropy(z, target, e, sums, batch,
# classes)` returns the loss summed over rows (a float) or False; `cross_entropy_backward(gz,
# target, e, sums, batch, classes, upstream)` fills gz. The one exception to "bit for bit": exp and
# log are the C library's, so these agree with the NumPy code to rounding.
cross_entropy = getattr(_kernels, "cross_entropy", _decline) if AVAILABLE else _decline
cross_entropy_backward = (
    getattr(_kernels, "cross_entropy_backward", _decline) if AVAILABLE else _decline
)
# The replay interpreter of chainrule.compile (a whole recorded step in one call); None when absent,
# so a compiled step replays in NumPy instead.
replay = getattr(_kernels, "replay", None) if AVAILABLE else None
# The same, taking the program and scalars by address and the arguments one by one (the compiled
# step's fast path); None in a module built before it existed.
replay_at = getattr(_kernels, "replay_at", None) if replay is not None else None
# The same over consecutive batches in one call (`CompiledFunction.scan`); None where absent.
replay_scan = getattr(_kernels, "replay_scan", None) if replay is not None else None

# Convolution and pooling (chainrule/ops/conv.py): `im2col(x, cols, ...)` fills cols,
# `col2im(cols, gx, ...)` and `max_pool2d_backward(g, index, gx, ...)` fill gx, `max_pool2d(x, out,
# index, ...)` fills out and index; the shape arguments are listed in _conv_kernels.c and
# _kernels.c. A module built before these kernels existed lacks them: decline then too (and a
# module without im2col has a col2im of other arguments).
im2col = getattr(_kernels, "im2col", _decline) if AVAILABLE else _decline
col2im = getattr(_kernels, "col2im", _decline) if im2col is not _decline else _decline
max_pool2d = getattr(_kernels, "max_pool2d", _decline) if AVAILABLE else _decline
max_pool2d_backward = getattr(_kernels, "max_pool2d_backward", _decline) if AVAILABLE else _decline
# 2×2 stride-2 unpadded pooling: `max_pool2x2(x, out, taps, planes, H, W, Ho, Wo)` fills out and
# the uint8 window tap of each maximum, `max_pool2x2_backward(g, taps, gx, ...)` fills all of gx.
max_pool2x2 = getattr(_kernels, "max_pool2x2", _decline) if AVAILABLE else _decline
max_pool2x2_backward = (
    getattr(_kernels, "max_pool2x2_backward", _decline) if AVAILABLE else _decline
)
