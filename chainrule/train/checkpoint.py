"""Training checkpoints: everything a run needs to continue bit-identically, in a file that cannot
run code and cannot be lost in a crash.

A checkpoint is a safetensors file (`checkpoint-EEEEEE-SSSSSS.safetensors`: epoch and batch
position) holding the arrays — parameters and buffers, optimizer moments, the best weights of
early stopping — and, in its metadata, JSON with the rest: the run's position
(`TrainState.position()`: epoch and step, the shuffle generator's states, the epoch's running
sums, the History), scheduler and callback states, dropout generators, a hash of the
configuration, and one SHA-256 over all of it and the arrays (so a flipped bit anywhere is a
damaged file, not a silently different run). Files are written atomically (`chainrule.atomic`);
the newest two are kept, so the one before is still there if the newest is damaged.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from chainrule import random as chainrule_random
from chainrule import safetensors_format
from chainrule.nn.module import Module
from chainrule.safetensors_format import ModelFileError
from chainrule.train.callbacks import Callback
from chainrule.train.state import TrainState

FORMAT_NAME = "chainrule.checkpoint"
FORMAT_VERSION = 2  # 2: one SHA-256 over the JSON state and the arrays
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


def _state_hash(state: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """One SHA-256 over the JSON state (all but this hash) and the arrays."""
    body = {key: value for key, value in state.items() if key != "sha256"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode())
    digest.update(_tensors_hash(tensors).encode())
    return digest.hexdigest()


def _generators(model: Module) -> list[np.random.Generator]:
    """The generators the model's layers draw from (Dropout's masks), in module order."""
    return [
        module.rng
        for module in model.modules()
        if isinstance(getattr(module, "rng", None), np.random.Generator)
    ]


def path_for(directory: str, epoch: int, step: int) -> str:
    """The file name of the checkpoint positioned at (epoch, step)."""
    return os.path.join(directory, f"checkpoint-{epoch:06d}-{step:06d}.safetensors")


def _positions(directory: str) -> list[tuple[tuple[int, int], str]]:
    """(epoch, step) and path of each checkpoint file in `directory`, oldest first; anything
    else that happens to match the pattern (a directory, a socket) is not a checkpoint."""
    found = []
    for name in glob.glob(os.path.join(glob.escape(directory), "checkpoint-*.safetensors")):
        match = _PATTERN.search(os.path.basename(name))
        if match and os.path.isfile(name):
            found.append(((int(match[1]), int(match[2])), name))
    return sorted(found)


def checkpoints(directory: str) -> list[str]:
    """The checkpoint files in `directory`, oldest first."""
    return [name for _, name in _positions(directory)]


def save(
    directory: str, state: TrainState, callbacks: Sequence[Callback], config_sha256: str
) -> str:
    """Write a checkpoint of the run at `state`'s position; keep only the newest two."""
    tensors: dict[str, np.ndarray] = {}
    for name, array in state.model.state_dict().items():
        tensors[f"model/{name}"] = array
    position = state.position()
    saved = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config_sha256": config_sha256,
        **{key: value for key, value in position.items() if key != "history"},
        "history": _split(position["history"], "history", tensors),
        "optimizer": _split(state.optimizer.state_dict(), "optimizer", tensors),
        "callbacks": [
            _split(c.state_dict(), f"callback{i}", tensors) for i, c in enumerate(callbacks)
        ],
        "dropout_generators": [g.bit_generator.state for g in _generators(state.model)],
        "default_generator": chainrule_random.get_rng().bit_generator.state,
    }
    saved["sha256"] = _state_hash(saved, tensors)
    metadata = {"chainrule": json.dumps(saved, allow_nan=False)}
    os.makedirs(directory, exist_ok=True)
    epoch, step = state.epoch, state.step
    path = path_for(directory, epoch, step)
    safetensors_format.save_file(tensors, path, metadata)
    # Files positioned after this one belong to an earlier run (one the caller chose to
    # overwrite, or the damaged file a resume fell back from); left in place they would count as
    # the newest, so pruning would delete this run's own checkpoints and a resume would pick them.
    found = _positions(directory)
    stale = [name for position, name in found if position > (epoch, step)]
    kept = [name for position, name in found if position <= (epoch, step)]
    for old in stale + kept[:-KEEP]:
        os.remove(old)
    return path


def read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON state and the arrays of one checkpoint file, checked; CheckpointError if damaged."""
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
            f"{path}: checkpoint format version {state.get('version')!r} is not version "
            f"{FORMAT_VERSION}, the one this chainrule reads"
        )
    if state.get("sha256") != _state_hash(state, tensors):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its contents fail their checksum (a changed byte in "
            "the arrays or in the saved position)"
        )
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


def check_unused(directory: str) -> None:
    """Refuse to start a fresh run in a directory holding another run's checkpoints: they would
    be replaced as the new run saves. The caller passes resume or overwrite to choose."""
    found = checkpoints(directory) if os.path.isdir(directory) else []
    if found:
        raise CheckpointError(
            f"{directory} already holds checkpoints of a run (newest: "
            f"{os.path.basename(found[-1])}); resume it (resume=True, --resume), or start over "
            "and replace them (overwrite=True, --overwrite)"
        )


def restore(
    directory: str, state: TrainState, callbacks: Sequence[Callback], config_sha256: str
) -> str:
    """Load the newest good checkpoint in `directory` into the run; returns its path.

    Everything is read and checked before anything is changed, so a refusal leaves the model,
    the optimizer and the callbacks as they were.
    """
    path, saved, tensors = latest(directory)
    if saved.get("config_sha256") != config_sha256:
        raise CheckpointError(
            f"cannot resume from {path}: it was made by a run with a different configuration "
            "(model, loss, optimizer, batch size, shuffling, data or callbacks differ)"
        )
    try:
        if len(saved["callbacks"]) != len(callbacks):
            raise CheckpointError(
                f"cannot resume from {path}: it holds {len(saved['callbacks'])} callbacks' "
                f"states, the run has {len(callbacks)} callbacks"
            )
        model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        optimizer_state = _join(saved["optimizer"], tensors)
        callback_states = [_join(c, tensors) for c in saved["callbacks"]]
        position = {**saved, "history": _join(saved["history"], tensors)}
        generators = _generators(state.model)
        if len(saved["dropout_generators"]) != len(generators):
            raise CheckpointError(
                f"cannot resume from {path}: it holds {len(saved['dropout_generators'])} dropout "
                f"generators, the model has {len(generators)}"
            )
        state.model.load_state_dict(model_state)
        state.optimizer.load_state_dict(optimizer_state)
        for callback, callback_state in zip(callbacks, callback_states):
            callback.load_state_dict(callback_state)
        state.restore_position(position)
        for generator, generator_state in zip(generators, saved["dropout_generators"]):
            generator.bit_generator.state = generator_state
        chainrule_random.get_rng().bit_generator.state = saved["default_generator"]
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        what = f"lacks {error.args[0]!r}" if isinstance(error, KeyError) else f"is invalid: {error}"
        raise CheckpointError(f"cannot resume from {path}: its saved state {what}") from None
    return path
