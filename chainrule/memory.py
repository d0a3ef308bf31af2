"""Where the engine's arrays get their memory: around each large op and the backward pass after
one (chainrule/tensor.py decides), a NumPy memory handler that keeps large freed blocks for the
next array of the same size (`_memory.c`), else NumPy's own. A cache, not state: nothing computed
depends on it.

Why: a training step allocates the same large arrays every step, and each fresh one faulted its
pages in again (the wide network of benchmarks/bench_conv.py: 5600 page faults, 10 ms of 77).
`use_spares()` makes the handler current and returns the one it replaced, for `restore`.
`release()` frees what is kept (at most 64 MiB, in blocks of 256 KiB or more).
"""

from __future__ import annotations

import os
from typing import Any

try:
    from chainrule import _memory  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler or without NumPy's headers
    _memory = None

AVAILABLE = _memory is not None and not os.environ.get("CHAINRULE_NO_KERNELS")


def _nothing(*args: Any) -> Any:
    return None


def _no_bytes() -> int:
    return 0


use_spares = _memory.use if AVAILABLE else _nothing
restore = _memory.restore if AVAILABLE else _nothing
release = _memory.release if AVAILABLE else _no_bytes
kept_bytes = _memory.kept_bytes if AVAILABLE else _no_bytes
