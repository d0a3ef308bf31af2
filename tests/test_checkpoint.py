"""Checkpoints: a run stopped and resumed in new processes ends bit-identical to one never stopped;
a resume that would not continue the same run is an error; NaN never reaches a checkpoint.

The interrupted runs really are separate processes: SCRIPT is written to a file and run with the
same seeds, once to train until a callback ends the process, once to resume and finish.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import chainrule
from chainrule import nn, optim
from chainrule.train import NonFiniteError, checkpoint, fit
from chainrule.train.callbacks import Callback
from chainrule.train.checkpoint import CheckpointError

REPO = Path(chainrule.__file__).resolve().parent.parent
KILLED = 3  # exit status of a process ended by StopProcess

SCRIPT = '''
import json
import sys

import numpy as np

from chainrule import nn, optim
from chainrule.train.callbacks import Callback, EarlyStopping
from chainrule.train import fit

KILLED = 3


class StopProcess(Callback):
    """Ends the process after global step `at_step`, as a kill or Ctrl-C would (None: never)."""

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, state):
        if state.global_step == self.at_step:
            raise SystemExit(KILLED)


def train(case, checkpoint=None, resume=False, stop_at=None):
    """Data, model, optimizer and schedule from fixed seeds, then fit: (model, history)."""
    dtype = np.dtype(case["dtype"])
    data = np.random.default_rng(1)
    X = data.normal(size=(56, 3)).astype(dtype)
    noise = 0.1 * data.normal(size=(56, 1))
    y = (np.sin(X @ np.array([[1.0], [-2.0], [0.5]])) + noise).astype(dtype)
    validation = (X[40:], y[40:]) if case["early_stopping"] else None
    X, y = X[:40], y[:40]
    hidden = [nn.Linear(3, 16, dtype=dtype, rng=2), nn.Tanh()]
    if case["dropout"]:
        hidden += [nn.Dropout(0.3, rng=3)]
    model = nn.Sequential(*hidden, nn.Linear(16, 1, dtype=dtype, rng=4))
    if case["optimizer"] == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=case["lr"], momentum=0.9)
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=4)
    else:
        optimizer = optim.Adam(model.parameters(), lr=case["lr"])
        scheduler = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    callbacks = [StopProcess(stop_at)]
    if case["early_stopping"]:
        callbacks.append(EarlyStopping(patience=case["patience"]))
    history = fit(
        model, X, y, loss="mse", optimizer=optimizer, scheduler=scheduler, epochs=case["epochs"],
        batch_size=8, validation_data=validation, callbacks=callbacks, rng=5,
        progress=False, checkpoint=checkpoint, checkpoint_every=case["checkpoint_every"],
        checkpoint_steps=case["checkpoint_steps"], resume=resume,
    )
    return model, history


if __name__ == "__main__":
    case, checkpoint, resume, stop_at, out = json.loads(sys.argv[1])
    model, history = train(case, checkpoint, resume, stop_at)
    np.savez(out + ".npz", **model.state_dict())
    with open(out + ".json", "w") as file:
        json.dump({"history": history.to_dict(), "stopped_early": history.stopped_early,
                   "best_epoch": history.best_epoch}, file)
'''

# 40 samples in batches of 8: 5 steps per epoch, 8 epochs. The process is ended at global step 18
# (epoch 3, its third step). With checkpoints every epoch the newest is then at the start of
# epoch 3; with one every 4 steps (and at epoch ends only every 100 epochs) it is after the first
# step of epoch 3 (global step 16), so the resumed run also redoes the lost steps 17 and 18.
STOP_AT = 18
WHERE = {
    "boundary": dict(checkpoint_every=1, checkpoint_steps=None, newest="checkpoint-000003-000000"),
    "mid_epoch": dict(checkpoint_every=100, checkpoint_steps=4, newest="checkpoint-000003-000001"),
}
BASE = dict(epochs=8, dropout=False, early_stopping=False, patience=0)
SETUPS = {
    "sgd_momentum_cosine": dict(optimizer="sgd", lr=0.05),
    "adam_steplr": dict(optimizer="adam", lr=0.01),
}

CASES = {
    f"{dtype}-{where}-{setup}": {**BASE, **SETUPS[setup], **WHERE[where], "dtype": dtype}
    for dtype in ("float32", "float64")
    for where in WHERE
    for setup in SETUPS
}
CASES["float32-mid_epoch-dropout"] = {**CASES["float32-mid_epoch-adam_steplr"], "dropout": True}
# Patience 1 at this learning rate stops the run early, in the part trained after the resume.
CASES["float64-boundary-early_stopping"] = {
    **CASES["float64-boundary-sgd_momentum_cosine"],
    "early_stopping": True,
    "patience": 1,
    "epochs": 30,
    "lr": 0.3,
}


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "train_case.py"
    path.write_text(SCRIPT)
    return path


def run_script(script: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def interrupted(script, tmp_path_factory) -> dict[str, dict]:
    """Each case trained in one process until it is ended, then resumed in another; the cases
    run side by side (each pair in order) to keep the suite fast."""

    def stop_and_resume(name: str) -> dict:
        directory = tmp_path_factory.mktemp(name)
        checkpoint, out = directory / "checkpoints", str(directory / "resumed")
        stopped = run_script(script, CASES[name], str(checkpoint), False, STOP_AT, out)
        left = names(checkpoint) if checkpoint.exists() else []
        resumed = run_script(script, CASES[name], str(checkpoint), True, None, out)
        return dict(stopped=stopped, left=left, resumed=resumed, out=out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(stop_and_resume, CASES)))


def reference(script: Path, case: dict, **options):
    """The run never stopped, trained in this process by the script's own function."""
    return runpy.run_path(str(script))["train"](case, **options)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("name", CASES)
def test_stopped_and_resumed_in_new_processes_equals_one_straight_run(
    script, interrupted, name, tmp_path
):
    case, run = CASES[name], interrupted[name]
    assert run["stopped"].returncode == KILLED, run["stopped"].stderr
    assert run["left"][-1] == case["newest"] + ".safetensors"
    assert run["resumed"].returncode == 0, run["resumed"].stderr

    model, history = reference(script, case, checkpoint=str(tmp_path / "straight"))
    with np.load(run["out"] + ".npz", allow_pickle=False) as saved:
        assert sorted(saved.files) == sorted(model.state_dict())
        for key, value in model.state_dict().items():
            assert saved[key].dtype == value.dtype
            assert np.array_equal(saved[key], value), key
    record = json.loads(Path(run["out"] + ".json").read_text())
    assert record["history"] == history.to_dict()
    assert (record["stopped_early"], record["best_epoch"]) == (
        history.stopped_early,
        history.best_epoch,
    )
    if case["early_stopping"]:  # the case is only worth having if the resumed part stops early
        assert history.stopped_early and STOP_AT // 5 < len(history.epochs) < case["epochs"]


# ---- in one process: a fresh model and optimizer stand in for the new process ----------------
def small_run(
    checkpoint=None,
    *,
    epochs=4,
    lr=0.05,
    batch_size=8,
    hidden=6,
    rows=40,
    resume=False,
    overwrite=False,
    callbacks=(),
    checkpoint_steps=None,
    dtype=np.float32,
):
    data = np.random.default_rng(1)
    X = data.normal(size=(rows, 3)).astype(dtype)
    y = (X @ np.array([[1.0], [-2.0], [0.5]])).astype(dtype)
    model = nn.Sequential(
        nn.Linear(3, hidden, dtype=dtype, rng=2),
        nn.Tanh(),
        nn.Linear(hidden, 1, dtype=dtype, rng=3),
    )
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = fit(
        model,
        X,
        y,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        rng=5,
        callbacks=callbacks,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_steps=checkpoint_steps,
        resume=resume,
        overwrite=overwrite,
        compile=False,  # compared with checkpointed runs, which step eagerly
    )
    return model, history


def assert_same_run(a, b) -> None:
    (model_a, history_a), (model_b, history_b) = a, b
    for (name, x), y in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert np.array_equal(x, y), name
    assert history_a.to_dict() == history_b.to_dict()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("steps", [None, 3], ids=["epoch_ends", "every_3_steps"])
def test_only_the_newest_two_checkpoints_are_kept(tmp_path, steps):
    small_run(tmp_path, epochs=5, checkpoint_steps=steps)
    expected = ["checkpoint-000004-000000", "checkpoint-000005-000000"]
    if steps:  # global step 24 is the fourth step of epoch 4 (5 steps an epoch)
        expected = ["checkpoint-000004-000004", "checkpoint-000005-000000"]
    assert names(tmp_path) == [name + ".safetensors" for name in expected]


def test_checkpoints_are_safetensors_holding_the_weights_and_position(tmp_path):
    model, _ = small_run(tmp_path, epochs=3)
    newest = tmp_path / names(tmp_path)[-1]
    tensors = load_file(str(newest))  # the safetensors library itself: no pickle anywhere
    for name, value in model.state_dict().items():
        assert np.array_equal(tensors[f"model/{name}"], value)
    with safe_open(str(newest), framework="numpy") as file:
        state = json.loads(file.metadata()["chainrule"])
    assert (state["epoch"], state["step"], state["global_step"]) == (3, 0, 15)


def test_a_fresh_run_in_a_used_directory_is_refused_and_changes_nothing(tmp_path):
    small_run(tmp_path, epochs=3)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="already holds checkpoints.*resume.*overwrite"):
        small_run(tmp_path, epochs=2, lr=0.01)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_checkpoints_of_an_earlier_run_in_the_same_directory(tmp_path):
    small_run(tmp_path, epochs=6)
    small_run(tmp_path, epochs=2, lr=0.01, overwrite=True)
    assert names(tmp_path) == [
        "checkpoint-000001-000000.safetensors",
        "checkpoint-000002-000000.safetensors",
    ]
    assert_same_run(
        small_run(tmp_path, epochs=4, lr=0.01, resume=True), small_run(epochs=4, lr=0.01)
    )


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_last_weight_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _garble_header(data: bytes) -> bytes:
    return data[:8] + b"#" * 32 + data[40:]


@pytest.mark.parametrize(
    "damage",
    [_truncate, _flip_last_weight_byte, _garble_header, lambda data: b""],
    ids=["truncated", "one_bit_flipped", "garbled_header", "empty"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    small_run(tmp_path, epochs=3)
    newest = tmp_path / names(tmp_path)[-1]
    newest.write_bytes(damage(newest.read_bytes()))
    assert_same_run(small_run(tmp_path, epochs=4, resume=True), small_run(epochs=4))


def test_resume_with_every_checkpoint_damaged_is_an_error(tmp_path):
    small_run(tmp_path, epochs=3)
    for path in tmp_path.iterdir():
        path.write_bytes(_truncate(path.read_bytes()))
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        small_run(tmp_path, epochs=4, resume=True)


@pytest.mark.parametrize(
    "change",
    [{"lr": 0.01}, {"batch_size": 4}, {"hidden": 7}, {"rows": 48}, {"dtype": np.float64}],
    ids=["lr", "batch_size", "architecture", "data", "dtype"],
)
def test_resume_with_a_different_configuration_is_an_error_and_changes_nothing(tmp_path, change):
    small_run(tmp_path, epochs=2)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="different configuration"):
        small_run(tmp_path, epochs=4, resume=True, **change)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "make", [lambda d: d / "missing", lambda d: d], ids=["missing_directory", "empty_directory"]
)
def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_start(tmp_path, make):
    with pytest.raises(CheckpointError, match="cannot resume"):
        small_run(make(tmp_path), resume=True)
    assert list(tmp_path.iterdir()) == []


class RecordGoodSteps(Callback):
    """Snapshots the checkpoint directory after every step that the NaN guard let through."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.last = directory, None

    def on_step_end(self, state) -> None:
        self.last = (state.epoch, state.step, snapshot(self.directory))


def test_a_huge_learning_rate_stops_at_the_step_and_never_touches_the_checkpoints(tmp_path):
    recorder = RecordGoodSteps(tmp_path)
    with pytest.raises(NonFiniteError) as error:
        small_run(tmp_path, epochs=20, lr=10.0, callbacks=[recorder])
    # SGD with momentum at lr 10 takes a few epochs to overflow float32: checkpoints come first.
    # The overflow is mid-epoch, so none is written between the last snapshot and the error.
    epoch, step, before = recorder.last
    assert len(before) == 2
    found = re.search(r"epoch (\d+), step (\d+): the loss is (inf|nan)", str(error.value))
    assert (int(found[1]), int(found[2])) == (epoch, step + 1)
    assert snapshot(tmp_path) == before
    for name in before:
        assert all(np.isfinite(array).all() for array in load_file(str(tmp_path / name)).values())


def _change_the_saved_epoch(data: bytes) -> bytes:
    """Edit the JSON position (the epoch counter), keeping the header's length: what a flipped
    bit there does."""
    return data.replace(b'\\"epoch\\": 3', b'\\"epoch\\": 7', 1)


def _change_the_shuffle_state(data: bytes) -> bytes:
    position = data.index(b'\\"state\\": {\\"state\\": ') + 24
    digit = data[position : position + 1]
    return data[:position] + (b"1" if digit != b"1" else b"2") + data[position + 1 :]


@pytest.mark.parametrize(
    "damage", [_change_the_saved_epoch, _change_the_shuffle_state], ids=["epoch", "generator"]
)
def test_a_changed_byte_in_the_saved_position_is_damage_and_falls_back(tmp_path, damage):
    small_run(tmp_path, epochs=3)
    newest = tmp_path / names(tmp_path)[-1]
    original = newest.read_bytes()
    newest.write_bytes(damage(original))
    assert newest.read_bytes() != original and len(newest.read_bytes()) == len(original)
    with pytest.raises(CheckpointError, match=f"{newest.name} is damaged"):
        checkpoint.read(str(newest))
    assert_same_run(small_run(tmp_path, epochs=4, resume=True), small_run(epochs=4))


def test_a_directory_named_like_a_checkpoint_is_not_one(tmp_path):
    small_run(tmp_path, epochs=2)
    (tmp_path / "checkpoint-000009-000000.safetensors").mkdir()
    assert_same_run(small_run(tmp_path, epochs=3, resume=True), small_run(epochs=3))


def test_a_resume_refusal_names_the_file_and_what_is_wrong(tmp_path):
    small_run(tmp_path, epochs=2)
    with pytest.raises(CheckpointError, match=r"checkpoint-000002-000000.safetensors: it was made"):
        small_run(tmp_path, epochs=3, resume=True, lr=0.5)
