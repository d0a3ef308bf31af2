"""Train a small seeded classifier, alone or as one rank under mpiexec; save what the tests compare.

    [mpiexec -n N python -m mpi4py] train.py OUT_DIR [--runs float64,float32,unused] [--epochs 4]
        [--checkpoint DIR [--resume]] [--checkpoint-steps S] [--fail-at-step K]
        [--seed-per-rank | --width-per-rank | --lr-per-rank | --rows-per-rank]

Each run is a Linear-Tanh-Linear network trained with Adam on 62 samples in batches of 20 (so the
last batch holds 2 samples: with 3 ranks, rank 0 gets none) and validated on 11. Runs `float64` and
`float32` differ in dtype; `unused` (float64, no checkpoints) adds a parameter the loss never uses,
with weight decay, which one process leaves untouched. Rank 0 writes OUT_DIR/<run>.npz: the final
parameters, the loss and validation histories, and, for each epoch, the SHA-1 of every rank's
parameters (gathered by a callback). With --fail-at-step K the last rank raises after global step K;
--seed-per-rank and --width-per-rank make the mistakes of seeding the shuffle, or sizing the hidden
layer, by rank.
"""

import argparse
import hashlib
import os

import numpy as np

import chainrule
from chainrule import distributed, nn
from chainrule.train import Callback

SAMPLES, VALIDATION, FEATURES, CLASSES = 62, 11, 8, 3


class ReplicaHashes(Callback):
    """After every epoch, the hash of each rank's parameters, gathered on every rank."""

    def __init__(self, process):
        self.process, self.hashes = process, []

    def on_epoch_end(self, state):
        parameters = b"".join(p.data.tobytes() for p in state.model.parameters())
        digest = hashlib.sha1(parameters).hexdigest()
        self.hashes.append(self.process.comm.allgather(digest) if self.process else [digest])


class FailAt(Callback):
    """The last rank raises after global step `step` (None: never)."""

    def __init__(self, process, step):
        self.process, self.step = process, step

    def on_step_end(self, state):
        last = self.process is None or self.process.rank == self.process.world_size - 1
        if last and state.global_step == self.step:
            raise RuntimeError(f"injected failure after step {self.step}")


class WithUnusedParameter(nn.Module):
    def __init__(self, body):
        self.body = body
        self.unused = nn.Parameter(np.ones(3))

    def forward(self, x):
        return self.body(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--runs", default="float64")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--checkpoint")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoint-steps", type=int)
    parser.add_argument("--fail-at-step", type=int)
    parser.add_argument("--seed-per-rank", action="store_true")
    parser.add_argument("--width-per-rank", action="store_true")
    parser.add_argument("--lr-per-rank", action="store_true")
    parser.add_argument("--rows-per-rank", action="store_true")
    args = parser.parse_args()
    process = distributed.init() if distributed.launched() else None
    data = np.random.default_rng(0)
    X = data.standard_normal((SAMPLES + VALIDATION, FEATURES))
    y = data.integers(0, CLASSES, SAMPLES + VALIDATION)
    for run in args.runs.split(","):
        dtype = "float64" if run == "unused" else run
        rng = np.random.default_rng(1)
        width = 16 + (process.rank if args.width_per_rank else 0)
        model = nn.Sequential(
            nn.Linear(FEATURES, width, dtype=dtype, rng=rng),
            nn.Tanh(),
            nn.Linear(width, CLASSES, dtype=dtype, rng=rng),
        )
        if run == "unused":
            model = WithUnusedParameter(model)
        hashes = ReplicaHashes(process)
        history = chainrule.fit(
            model,
            X[: SAMPLES - (process.rank if args.rows_per_rank else 0)],
            y[: SAMPLES - (process.rank if args.rows_per_rank else 0)],
            loss="cross_entropy",
            optimizer="adam",
            lr=0.02 * (1 + process.rank if args.lr_per_rank else 1),
            weight_decay=0.1 if run == "unused" else 0.0,
            epochs=args.epochs,
            batch_size=20,
            rng=process.rank if args.seed_per_rank else 2,
            validation_data=(X[SAMPLES:], y[SAMPLES:]),
            callbacks=[hashes, FailAt(process, args.fail_at_step)],
            checkpoint=args.checkpoint,
            checkpoint_steps=args.checkpoint_steps,
            resume=args.resume,
            process=process,
        )
        if process is None or process.is_root:
            os.makedirs(args.out, exist_ok=True)
            np.savez(
                os.path.join(args.out, f"{run}.npz"),
                **{f"param/{name}": p.data for name, p in model.named_parameters()},
                loss=np.array(history.loss),
                val_loss=np.array(history.val_loss),
                hashes=np.array(hashes.hashes, dtype=str),
            )


if __name__ == "__main__":
    main()
