"""Peak memory of one peer training one workload, measured alone in this fresh interpreter.

Usage: python benchmarks/memory_probe.py WORKLOAD PEER STEPS {rss,tracemalloc}
(prints one JSON line).

rss: the peak resident set after training, minus the resident set after the imports and the data
were made: what building the model and training it added. It counts every allocator (NumPy's,
PyTorch's, BLAS buffers), so it is the figure peers are compared by. Linux details: the peak is
VmHWM, the counter getrusage's ru_maxrss reads, but taken from /proc/self/status, because
ru_maxrss of a child also holds its parent's peak (inherited across fork and exec: a probe started
by a runner that imported PyTorch would read that runner's size); freed heap is first handed back
to the OS (malloc_trim) and the peak reset to the current size (/proc/self/clear_refs), so that
memory freed by the imports is not silently reused and left uncounted. Elsewhere, ru_maxrss.
tracemalloc: the peak of the allocations Python's tracemalloc sees while the model is built and
trained: NumPy's buffers exactly, but none of PyTorch's; reported for the NumPy-based peers.
"""

from __future__ import annotations

import ctypes
import gc
import json
import resource
import sys
import tracemalloc
from pathlib import Path

from peers import FIT_PEERS, PEERS, make_torch
from workloads import BY_NAME, MNIST_SGD, make_data


def _import_peer(peer: str) -> None:
    """Import everything the peer will use, so that imports are in the baseline, not the delta."""
    if peer == "pytorch":
        import torch
        import torch.nn.functional
        import torch.optim  # noqa: F401
    elif peer == "sklearn":
        import sklearn.neural_network  # noqa: F401
    elif peer.startswith("chainrule"):
        import chainrule.functional
        import chainrule.nn
        import chainrule.ops
        import chainrule.optim
        import chainrule.train  # noqa: F401


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak() -> bool:
    """Give freed heap back to the OS, make the peak the current size; False where unsupported."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return False
    return True


def _peak_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: the getrusage peak (KiB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    return kib * 1024


def main(argv: list[str]) -> dict:
    name, peer, steps, method = argv[0], argv[1], int(argv[2]), argv[3]
    workload = BY_NAME.get(name, MNIST_SGD)
    factories = {**PEERS, **FIT_PEERS}
    if peer == "pytorch":
        from measure import blas_info

        threads = blas_info()["threads"]
        factories["pytorch"] = lambda w, b: make_torch(w, b, threads)
    _import_peer(peer)
    data = make_data(workload)
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        factories[peer](workload, data).run(steps)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"method": "tracemalloc", "bytes": peak}
    reset = _reset_peak()
    baseline = _peak_bytes()
    factories[peer](workload, data).run(steps)
    peak = _peak_bytes()
    return {"method": "rss", "bytes": peak - baseline, "baseline_bytes": baseline, "reset": reset}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
