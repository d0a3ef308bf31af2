"""Data-parallel training on MPI: every rank holds a whole replica of the model, trains on its
contiguous share of each global batch, and one in-place `Allreduce` per step averages the gradients.

mpi4py is imported here, and only when `init()` is called. The loop itself is `chainrule.train`'s,
which talks to the `MPIProcess` below through the protocol of its single-process `LocalProcess`.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chainrule import tracing
from chainrule.nn.module import Module
from chainrule.tensor import Tensor
from chainrule.train.checkpoint import fingerprint  # noqa: F401 - the `data` entry of check_agreement

__all__ = ["DistributedError", "MPIProcess", "fingerprint", "init", "launched"]

INSTALL = 'pip install "chainrule[mpi]"'
LAUNCH = "mpiexec -n 2 python -m mpi4py -m chainrule train digits --distributed"
# Set by the launchers of Open MPI (and PMIx-based srun), MPICH/Intel MPI (Hydra, PMI) and MVAPICH.
_LAUNCHER_VARIABLES = (
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
)


class DistributedError(ValueError):
    """Data-parallel training cannot start as asked: MPI is missing, the process was not launched
    by mpiexec, or the ranks disagree (different models, data order or seeds)."""


def launched() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process; MPI is not touched."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


TIMEOUT_VARIABLE = "CHAINRULE_MPI_TIMEOUT"


def _timeout(timeout: float | None) -> float | None:
    """Seconds a collective may wait: `timeout`, else CHAINRULE_MPI_TIMEOUT, else None (forever)."""
    where = "timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
        if not text:
            return None
        where = TIMEOUT_VARIABLE
        try:
            timeout = float(text)
        except ValueError:
            raise DistributedError(f"{where}={text!r} is not a number of seconds") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise DistributedError(f"{where} must be a number of seconds, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise DistributedError(f"{where} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def init(comm: Any = None, timeout: float | None = None) -> MPIProcess:
    """The data-parallel process group of this rank, for `chainrule.fit(..., process=init())`.

    Launch every rank with `mpiexec -n N python -m mpi4py script.py`. `python -m mpi4py` makes an
    error on one rank abort the whole job; a plain `python script.py` would leave the other ranks
    waiting forever, so it is refused. `comm` defaults to MPI.COMM_WORLD; a communicator passed in
    is used as it is, without these checks. Raises DistributedError (one line: how to install and
    launch) when mpi4py or the MPI library is missing, or the process was not started that way.

    timeout: seconds any one collective may wait for the other ranks (default: the
    CHAINRULE_MPI_TIMEOUT environment variable, else no limit). Past it the rank prints why and
    aborts the whole job, instead of hanging forever behind a rank that stopped (SIGSTOP, a
    deadlock, a lost node). Set it well above the slowest step, e.g. 600.
    """
    seconds = _timeout(timeout)
    try:
        import mpi4py  # noqa: F401  (the package alone does not start MPI)
    except ImportError:
        raise DistributedError(
            f"data-parallel training needs mpi4py and an MPI library: {INSTALL}, then launch with "
            f"`{LAUNCH}`"
        ) from None
    if comm is None:
        if not launched():
            missing = "" if shutil.which("mpiexec") else f"; {INSTALL} provides mpiexec"
            raise DistributedError(
                f"data-parallel training must be started by an MPI launcher, e.g. `{LAUNCH}` "
                f"(or `mpiexec -n 2 python -m mpi4py your_script.py`){missing}"
            )
        if "mpi4py.run" not in sys.modules:
            raise DistributedError(
                f"launch through `python -m mpi4py` (e.g. `{LAUNCH}`), so that an error on one "
                "rank ends the job instead of hanging the others"
            )
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise DistributedError(
            f"mpi4py cannot load an MPI library ({reason}): {INSTALL} installs Open MPI with it"
        ) from None
    return MPIProcess(MPI.COMM_WORLD if comm is None else comm, timeout=seconds)


def _digest(data: bytes) -> float:
    """48 bits of a hash as a float64, which holds them exactly, for comparing across ranks."""
    return float(int.from_bytes(hashlib.blake2b(data, digest_size=6).digest(), "big"))


_MODELS_DIFFER = (
    "the ranks' models differ (parameter shapes or dtypes); build the same model on every rank"
)


def _signature(parameters: Sequence[Tensor]) -> bytes:
    return repr([(p.data.shape, p.data.dtype.str) for p in parameters]).encode()


class _FlatGradients:
    """One contiguous buffer per parameter dtype (normally just one): the gradients, scaled by the
    rank's share of the batch, then one slot per parameter counting the ranks that have a gradient.

    After the Allreduce each `.grad` becomes a view into the buffer, which saves copying 1 MB back
    per step; the next step's backward makes fresh gradient arrays, so nothing writes through it.
    """

    def __init__(self, parameters: Sequence[Tensor]) -> None:
        self.key = [(id(p), p.data.shape, p.data.dtype) for p in parameters]
        self.groups: list[tuple[np.ndarray, list[tuple[Tensor, np.ndarray, int]]]] = []
        for dtype in dict.fromkeys(p.data.dtype for p in parameters):
            members = [p for p in parameters if p.data.dtype == dtype]
            size = sum(p.data.size for p in members)
            buffer = np.empty(size + len(members), dtype=dtype)
            items, offset = [], 0
            for index, p in enumerate(members):
                view = buffer[offset : offset + p.data.size].reshape(p.data.shape)
                items.append((p, view, size + index))
                offset += p.data.size
            self.groups.append((buffer, items))

    def matches(self, parameters: Sequence[Tensor]) -> bool:
        return len(parameters) == len(self.key) and all(
            key == (id(p), p.data.shape, p.data.dtype)
            for key, p in zip(self.key, parameters, strict=True)
        )


class MPIProcess:
    """This rank's part in data-parallel training (made by `init()`; passed to `fit` as `process`).

    `rank`, `world_size`, `is_root` (rank 0: the one that logs and writes files) and `comm`, the
    mpi4py communicator. The methods are what `chainrule.fit` calls.
    """

    def __init__(self, comm: Any, timeout: float | None = None) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.world_size: int = comm.Get_size()
        self.is_root: bool = self.rank == 0
        self._flat: _FlatGradients | None = None
        self._order_checked = False
        self.timeout = _timeout(timeout) if timeout is not None else None
        self._watchdog = _Watchdog(self) if self.timeout is not None else None

    def __repr__(self) -> str:
        return f"MPIProcess(rank={self.rank}, world_size={self.world_size})"

    # ---- the protocol of chainrule.train ------------------------------------------------------
    def check_order(self, order: np.ndarray | None, n: int) -> None:
        """Stop every rank if they drew different epoch orders (a missing or per-rank seed shows
        at the start of the run, not as silently diverging replicas). Checked once per run."""
        if self._order_checked:
            return
        self._order_checked = True
        drawn = np.arange(n) if order is None else order
        if not self._same_everywhere(np.ascontiguousarray(drawn, dtype=np.int64).tobytes()):
            raise DistributedError(
                "the ranks drew different batches: give every rank the same data and the same "
                "seed (fit's rng must be an int or a Generator seeded alike, not None)"
            )

    def shard(self, selector: Any, count: int) -> Any:
        """This rank's contiguous share of a global batch (a slice or an index array of `count`).

        Shares differ by at most one sample; with fewer samples than ranks some get none.
        """
        lo, hi = self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size
        if isinstance(selector, slice):
            start = selector.start or 0
            return slice(start + lo, start + hi)
        return selector[lo:hi]

    def average_gradients(
        self, parameters: Sequence[Tensor], local_count: int, global_count: int
    ) -> None:
        """Make every rank's `.grad` the gradient of the mean loss over the whole global batch.

        Each rank's gradient is the mean over its `local_count` samples (None when it had none), so
        Σ_ranks grad·local_count/global_count is the global mean, whatever the shares' sizes. A
        parameter that no rank has a gradient for keeps `.grad = None`, as in one process. Inside a
        step traced by `chainrule.compile` the exchange is replayed at every call.
        """
        if tracing.active is not None:
            arguments = (parameters, local_count, global_count)
            tracing.active.effect(lambda: self._average_gradients(*arguments))
        self._average_gradients(parameters, local_count, global_count)

    def _average_gradients(
        self, parameters: Sequence[Tensor], local_count: int, global_count: int
    ) -> None:
        if self._flat is None or not self._flat.matches(parameters):
            if not self._same_everywhere(_signature(parameters)):
                raise DistributedError(_MODELS_DIFFER)
            self._flat = _FlatGradients(parameters)
        scale = local_count / global_count
        for buffer, items in self._flat.groups:
            for p, view, flag in items:
                if p.grad is None:
                    view.fill(0)
                    buffer[flag] = 0
                else:
                    np.multiply(p.grad, scale, out=view)
                    buffer[flag] = 1
            with self._waiting("averaging gradients"):
                self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
            for p, view, flag in items:
                p.grad = view if buffer[flag] > 0 else None

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum over ranks of a small array (loss, accuracy totals), in float64."""
        total = np.array(values, dtype=np.float64)  # a contiguous copy the reduction may overwrite
        with self._waiting("summing metrics"):
            self.comm.Allreduce(self._MPI.IN_PLACE, total, op=self._MPI.SUM)
        return total

    def broadcast_parameters(self, model: Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's model, in place."""
        if not self._same_everywhere(_signature(list(model.parameters()))):
            raise DistributedError(_MODELS_DIFFER)
        state = model.state_dict()  # contiguous copies
        with self._waiting("broadcasting parameters"):
            for array in state.values():
                self.comm.Bcast(array, root=0)
        model.load_state_dict(state)
        self._order_checked = False  # a new run: check its first batch too

    def check_agreement(self, settings: Mapping[str, Any]) -> None:
        """Raise DistributedError on every rank unless all ranks passed equal `settings`.

        `settings` maps names to plain values (numbers, strings, bools, None, and lists or tuples
        of them), e.g. {"batch_size": 32, "epochs": 10, "lr": 0.01, "data": sha256_of_the_data,
        "steps_per_epoch": n}. Costs one Allreduce of two float64 when they agree; otherwise
        the settings are gathered and the error names the first differing setting (in sorted
        order) with each rank's value, the same message on every rank.
        """
        plain = {str(key): _plain(value) for key, value in settings.items()}
        if self._same_everywhere(repr(sorted(plain.items())).encode()):
            return
        with self._waiting("comparing settings"):
            every = self.comm.allgather(plain)
        for key in sorted(set().union(*every)):
            values = [ranks.get(key, _MISSING) for ranks in every]
            if any(repr(value) != repr(values[0]) for value in values):
                shown = ", ".join(
                    f"rank {rank}: {_short(value)}" for rank, value in enumerate(values)
                )
                raise DistributedError(
                    f"the ranks disagree on {key!r} ({shown}); give every rank the same "
                    "settings and data"
                )
        raise DistributedError("the ranks' settings differ")  # equal values, unequal repr

    # ---- helpers ------------------------------------------------------------------------------
    def _same_everywhere(self, data: bytes) -> bool:
        """Whether every rank passed the same bytes: one tiny Allreduce, the same answer on all."""
        value = _digest(data)
        extremes = np.array([value, -value])
        with self._waiting("comparing ranks"):
            self.comm.Allreduce(self._MPI.IN_PLACE, extremes, op=self._MPI.MAX)
        return bool(extremes[0] == -extremes[1])

    def _waiting(self, what: str) -> Any:
        """A context in which this rank waits for the others, watched when a timeout is set."""
        return self._watchdog.waiting(what) if self._watchdog is not None else _NOT_WATCHED


class _NotWatched:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exception: Any) -> None:
        return None


_NOT_WATCHED = _NotWatched()
_MISSING = "<not given>"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _short(value: Any) -> str:
    text = value if value is _MISSING else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Watchdog:
    """A daemon thread that aborts the job when one collective waits longer than the timeout.

    The main thread marks the start and end of each wait (two attribute writes); mpi4py releases
    the GIL inside MPI calls, so this thread runs while the main one waits. Abort ends every rank,
    including a stopped one; if the MPI library cannot abort, the process exits, which mpiexec
    turns into the end of the job.
    """

    def __init__(self, process: MPIProcess) -> None:
        self.process = process
        self.what: str | None = None
        self.since = 0.0
        poll = min(1.0, process.timeout / 10)
        thread = threading.Thread(target=self._watch, args=(poll,), daemon=True)
        thread.name = f"chainrule-mpi-watchdog-{process.rank}"
        thread.start()

    def waiting(self, what: str) -> _Watchdog:
        self.what, self.since = what, time.monotonic()
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exception: Any) -> None:
        self.what = None

    def _watch(self, poll: float) -> None:
        timeout = self.process.timeout
        while True:
            time.sleep(poll)
            what, since = self.what, self.since
            if what is not None and time.monotonic() - since > timeout:
                break
        print(
            f"chainrule: rank {self.process.rank} of {self.process.world_size} waited more than "
            f"{timeout:g} s for the other ranks ({what}): one is stopped, dead or deadlocked; "
            "aborting the job",
            file=sys.stderr,
            flush=True,
        )
        threading.Timer(10.0, os._exit, (1,)).start()  # if Abort itself hangs
        self.process.comm.Abort(1)
