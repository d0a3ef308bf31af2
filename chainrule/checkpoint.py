"""Training checkpoints: everything a run needs to continue bit-identically, in a file that cannot
run code and cannot be lost in a crash.

A checkpoint is a safetensors file (`checkpoint-EEEEEE-SSSSSS.safetensors`: epoch and batch position)
holding the arrays — parameters and buffers, optimizer moments, the best weights of early stopping —
and, in its metadata, JSON with the rest: epoch and batch position, the shuffle generator's state
(now and at the start of the epoch), the epoch's running sums, the History, scheduler and callback
states, dropout generators, a hash of the configuration and one of the arrays (so a flipped bit
is a damaged file, not a silently different run). Files are written atomically
(`chainrule.atomic`); the newest two are kept, so the one before is still there if the newest is
damaged.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from chainrule import safetensors_format
from chainrule.safetensors_format import ModelFileError

if TYPE_CHECKING:
    from chainrule.train import Trainer

FORMAT_NAME = "chainrule.checkpoint"
FORMAT_VERSION = 1
KEEP = 2
_PATTERN = re.compile(r"checkpoint-(\d{6,})-(\d{6,})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or belongs to a different run."""


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes: the same data gives the same string."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _split(value: Any, path: str, tensors: dict[str, np.ndarray]) -> Any:
    """A copy of `value` with each NumPy array moved into `tensors` and replaced by its key."""
    if isinstance(value, np.ndarray):
        tensors[path] = np.ascontiguousarray(value)
        return {"__tensor__": path}
    if isinstance(value, dict):
        return {
            "__dict__": [
                [_split(k, f"{path}/k{i}", tensors), _split(v, f"{path}/{i}", tensors)]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}  # JSON has no inf/nan; ReduceLROnPlateau starts at inf
    return value


def _join(value: Any, tensors: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__float__" in value:
            return float(value["__float__"])
        return {_join(k, tensors): _join(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def _tensors_hash(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(f"{name}\0".encode())
        digest.update(fingerprint(tensors[name]).encode())
    return digest.hexdigest()


def config_hash(configuration: dict[str, Any]) -> str:
    text = json.dumps(configuration, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _dropout_generators(trainer: Trainer) -> list[Any]:
    return [
        m.rng
        for m in trainer.model.modules()
        if hasattr(m, "rng") and isinstance(m.rng, np.random.Generator)
    ]


def path_for(directory: str, epoch: int, step: int) -> str:
    return os.path.join(directory, f"checkpoint-{epoch:06d}-{step:06d}.safetensors")


def _positions(directory: str) -> list[tuple[tuple[int, int], str]]:
    """(epoch, step) and path of each checkpoint file in `directory`, oldest first."""
    found = []
    for name in glob.glob(os.path.join(glob.escape(directory), "checkpoint-*.safetensors")):
        match = _PATTERN.search(os.path.basename(name))
        if match:
            found.append(((int(match[1]), int(match[2])), name))
    return sorted(found)


def checkpoints(directory: str) -> list[str]:
    """The checkpoint files in `directory`, oldest first."""
    return [name for _, name in _positions(directory)]


def save(trainer: Trainer, epoch: int, step: int) -> str:
    """Write a checkpoint of `trainer` positioned at (epoch, step); keep only the newest two."""
    from chainrule import random as chainrule_random

    tensors: dict[str, np.ndarray] = {}
    for name, array in trainer.model.state_dict().items():
        tensors[f"model/{name}"] = array
    state = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "epoch": epoch,
        "step": step,
        "global_step": trainer.state.global_step,
        "config_sha256": trainer.config_sha256,
        "optimizer": _split(trainer.optimizer.state_dict(), "optimizer", tensors),
        "callbacks": [
            _split(c.state_dict(), f"callback{i}", tensors) for i, c in enumerate(trainer.callbacks)
        ],
        "generator": trainer.generator.bit_generator.state,
        "epoch_start_generator": trainer.epoch_start_rng,
        "partial": [float(v) for v in getattr(trainer, "partial_total", np.zeros(2))],
        "history": _split(trainer.state.history.state_dict(), "history", tensors),
        "dropout_generators": [g.bit_generator.state for g in _dropout_generators(trainer)],
        "default_generator": chainrule_random.get_rng().bit_generator.state,
        "tensors_sha256": _tensors_hash(tensors),
    }
    metadata = {"chainrule": json.dumps(state, allow_nan=False)}
    os.makedirs(trainer.checkpoint_dir, exist_ok=True)
    path = path_for(trainer.checkpoint_dir, epoch, step)
    safetensors_format.save_file(tensors, path, metadata)
    # Files positioned after this one belong to an earlier run (a fresh start in a used
    # directory, or the damaged file a resume fell back from); left in place they would count as
    # the newest, so pruning would delete this run's own checkpoints and a resume would pick them.
    found = _positions(trainer.checkpoint_dir)
    stale = [name for position, name in found if position > (epoch, step)]
    kept = [name for position, name in found if position <= (epoch, step)]
    for old in stale + kept[:-KEEP]:
        os.remove(old)
    return path


def read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON state and the arrays of one checkpoint file, validated; CheckpointError if damaged."""
    try:
        tensors, metadata = safetensors_format.load_file(path)
        state = safetensors_format.parse_json(
            metadata.get("chainrule", ""), path, "checkpoint state"
        )
    except (ModelFileError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a chainrule checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state.get('version')} is not version {FORMAT_VERSION}, "
            "the one this chainrule reads"
        )
    if state.get("tensors_sha256") != _tensors_hash(tensors):
        raise CheckpointError(f"checkpoint {path} is damaged: its arrays fail their checksum")
    return state, tensors


def latest(directory: str) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """The newest checkpoint in `directory` that reads cleanly (a damaged newest one falls back)."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot resume: checkpoint directory {directory} does not exist")
    problems = []
    for path in reversed(checkpoints(directory)):
        try:
            state, tensors = read(path)
            return path, state, tensors
        except CheckpointError as error:
            problems.append(str(error))
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CheckpointError(f"cannot resume: no usable checkpoint in {directory}{detail}")


def restore(trainer: Trainer) -> tuple[int, int]:
    """Load the newest checkpoint into `trainer`; return the (epoch, step) to continue from."""
    from chainrule import random as chainrule_random
    from chainrule.train import History

    path, state, tensors = latest(trainer.checkpoint_dir)
    if state["config_sha256"] != trainer.config_sha256:
        raise CheckpointError(
            f"cannot resume from {path}: it was made by a run with a different configuration "
            "(model, loss, optimizer, batch size, shuffling, data or callbacks differ)"
        )
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    trainer.model.load_state_dict(model_state)
    trainer.optimizer.load_state_dict(_join(state["optimizer"], tensors))
    if len(state["callbacks"]) != len(trainer.callbacks):
        raise CheckpointError(
            f"cannot resume from {path}: the run has a different set of callbacks"
        )
    for callback, saved in zip(trainer.callbacks, state["callbacks"]):
        callback.load_state_dict(_join(saved, tensors))
    trainer.generator.bit_generator.state = state["generator"]
    trainer.epoch_start_rng = state["epoch_start_generator"]
    trainer.partial = np.array(state["partial"])  # sums over all ranks, so the same on every rank
    trainer.state.history = History.from_state_dict(_join(state["history"], tensors))
    trainer.state.global_step = int(state["global_step"])
    for generator, saved in zip(_dropout_generators(trainer), state["dropout_generators"]):
        generator.bit_generator.state = saved
    chainrule_random.get_rng().bit_generator.state = state["default_generator"]
    return int(state["epoch"]), int(state["step"])
