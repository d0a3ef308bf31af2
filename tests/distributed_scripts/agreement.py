"""check_agreement and the collective timeout, as one rank under mpiexec.

    mpiexec -n N python -m mpi4py agreement.py OUT_DIR MODE

MODE agree: every rank passes the same settings. disagree: the last rank's batch_size differs.
stall: init(timeout=3), and the last rank stops itself with SIGSTOP (writing its pid to
OUT_DIR/stopped.pid first, so the test can end it) before the collective the others wait in.
"""

import os
import signal
import sys

from chainrule import distributed

out, mode = sys.argv[1], sys.argv[2]
process = distributed.init(timeout=3 if mode == "stall" else None)
last = process.rank == process.world_size - 1
settings = {
    "batch_size": 64 if mode == "disagree" and last else 32,
    "epochs": 10,
    "lr": 0.01,
    "data": "9f86d081884c7d65",
    "steps_per_epoch": 5,
}
if mode == "stall" and last:
    with open(os.path.join(out, "stopped.pid"), "w") as file:
        file.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGSTOP)
process.check_agreement(settings)
print(f"rank {process.rank}: agreed", flush=True)
