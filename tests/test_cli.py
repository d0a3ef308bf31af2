"""The `chainrule` command end to end, each call a new process as a user would run it: the founding
XOR setup, digits to 97 %, save / predict / info, checkpoint and resume, and a table of bad input
that must each get one line on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import chainrule
from chainrule.datasets import DATASETS, digits
from chainrule.registry import HIDDEN_ACTIVATIONS as ACTIVATIONS
from chainrule.registry import LOSSES, OPTIMIZERS

REPO = Path(chainrule.__file__).resolve().parent.parent
SUMMARY = re.compile(
    r"^(test|train) loss: [\d.]+, accuracy: ([\d.]+) \((\d+) epochs, ([\d.]+) s\)$"
)


def cli(*args: str, cwd: Path | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "chainrule", *map(str, args)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=preexec_fn,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one line on stderr, which is returned."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule"), result.stderr
    return lines[0]


def temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`chainrule train digits` with its defaults, saved: the model file the other tests share."""
    model = tmp_path_factory.mktemp("model") / "digits.safetensors"
    result = cli("train", "digits", "--save", model)
    assert result.returncode == 0, result.stderr
    return model, result


# ---- what a user sees when things go right ----------------------------------------------------
def test_train_xor_is_the_founding_setup():
    result = cli("train", "xor")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    logged = [
        int(m[1]) for m in map(re.compile(r"^Epoch (\d+), Loss: \d+\.\d{4}$").match, lines) if m
    ]
    assert logged == list(range(0, 10_000, 1000))
    rows = [re.fullmatch(r"\((\d), (\d)\) -> (\d) : (\d\.\d{4})", line) for line in lines]
    table = [(int(a), int(b), int(t), float(p)) for a, b, t, p in (m.groups() for m in rows if m)]
    assert [(a, b, t) for a, b, t, _ in table] == [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert all(round(p) == t for *_, t, p in table)
    assert "accuracy: 1.0000" in lines[-1]


def test_train_digits_with_its_defaults_reaches_97_percent_on_the_test_split(digits_run):
    _, result = digits_run
    summary = SUMMARY.match(result.stdout.splitlines()[-1])
    assert summary[1] == "test" and float(summary[2]) >= 0.97
    assert int(summary[3]) == 40  # the preset's epochs; the time is summary[4] seconds


def test_predict_prints_one_prediction_per_row(digits_run, tmp_path):
    model, _ = digits_run
    X, y = digits()
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, X[:30], delimiter=",", fmt="%g")  # raw pixels: the model file standardises
    result = cli("predict", model, rows)
    assert result.returncode == 0, result.stderr
    predictions = [int(line) for line in result.stdout.splitlines()]
    assert len(predictions) == 30
    assert np.mean(np.array(predictions) == y[:30]) >= 0.9


def test_info_prints_the_architecture_and_parameter_count(digits_run):
    model, _ = digits_run
    result = cli("info", model)
    assert result.returncode == 0, result.stderr
    assert "Linear(in_features=64, out_features=128" in result.stdout
    assert "Linear(in_features=128, out_features=10" in result.stdout
    count = sum(p.data.size for p in chainrule.load(model).parameters())
    assert f"{count:,} parameters in all" in result.stdout


def test_datasets_lists_every_builtin_and_each_preset():
    from chainrule.experiment import PRESETS

    result = cli("datasets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    named = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert named[: len(DATASETS)] == list(DATASETS)
    presets = [line for line in lines if line.strip().startswith("preset:")]
    assert len(presets) == len([name for name in DATASETS if name in PRESETS])
    assert "--hidden 4 --activation sigmoid --loss half_mse" in presets[0]  # xor's
    assert any("--val-split 0.2 --early-stopping" in line for line in lines)  # a data file's


def _epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Epoch ")]


def _without_time(line: str) -> str:
    return re.sub(r", [\d.]+ s\)$", ")", line)


def test_checkpoint_then_resume_continues_the_same_run(tmp_path):
    common = ["train", "moons", "--log-every", "1", "--checkpoint-every", "2"]
    straight = cli(
        *common, "--epochs", "6", "--checkpoint", tmp_path / "a", "--save", tmp_path / "a.m"
    )
    first = cli(*common, "--epochs", "3", "--checkpoint", tmp_path / "b")
    resumed = cli(
        *common,
        "--epochs",
        "6",
        "--checkpoint",
        tmp_path / "b",
        "--resume",
        "--save",
        tmp_path / "b.m",
    )
    for result in (straight, first, resumed):
        assert result.returncode == 0, result.stderr
    assert _epoch_lines(first.stdout) + _epoch_lines(resumed.stdout) == _epoch_lines(
        straight.stdout
    )
    last = [_without_time(r.stdout.splitlines()[-1]) for r in (straight, resumed)]
    assert last[0] == last[1] and "(6 epochs)" in last[1]
    a, b = chainrule.load(tmp_path / "a.m"), chainrule.load(tmp_path / "b.m")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(x, y), name


def test_resume_with_other_options_is_refused(tmp_path):
    assert cli("train", "moons", "--epochs", "1", "--checkpoint", tmp_path).returncode == 0
    message = assert_one_line_error(
        cli("train", "moons", "--epochs", "2", "--lr", "0.5", "--checkpoint", tmp_path, "--resume")
    )
    assert "different configuration" in message


# ---- a failed save leaves what was there --------------------------------------------------------
def test_save_onto_a_directory_fails_and_leaves_it_alone(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    (target / "keep.txt").write_text("kept")
    message = assert_one_line_error(cli("train", "xor", "--epochs", "1", "--save", target))
    assert str(target) in message  # the path the user gave, not a hidden temporary file
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert temporaries(tmp_path) == []


def _limit_file_size() -> None:  # runs in the child: writes past 4 KiB fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_save_that_fails_midway_leaves_the_previous_model_file_intact(digits_run, tmp_path):
    target = tmp_path / "digits.safetensors"
    shutil.copy(digits_run[0], target)
    before = target.read_bytes()
    result = cli("train", "digits", "--epochs", "1", "--save", target, preexec_fn=_limit_file_size)
    assert_one_line_error(result)
    assert target.read_bytes() == before
    assert temporaries(tmp_path) == []


# ---- bad input: one line on stderr, status 2 ---------------------------------------------------
def _write_inputs(directory: Path, model: Path) -> dict[str, Path]:
    paths = {"model": model, "dir": directory}
    texts = {
        "cell.csv": "a,b,label\n1,2,0\n3,4,1\n5,oops,0\n",
        "nan.csv": "a,b,label\n1,2,0\nnan,4,1\n",
        "two.csv": "1,2\n3,4\n",
    }
    for name, text in texts.items():
        paths[name] = directory / name
        paths[name].write_text(text)
    data = model.read_bytes()
    damaged = {
        "truncated.safetensors": data[: len(data) // 2],
        "flipped.safetensors": data[:-1] + bytes([data[-1] ^ 0x01]),
        "garbled.safetensors": data[:8] + b"#" * 32 + data[40:],
        "empty.safetensors": b"",
    }
    for name, content in damaged.items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    return paths


# id: (arguments, fragments the message must contain); {name} is a path from _write_inputs.
BAD_INPUTS = {
    "unknown_dataset": (["train", "nosuch"], ["unknown dataset 'nosuch'", *DATASETS]),
    "unknown_command": (["fly"], ["'fly'", "train", "predict"]),
    "unknown_option": (["train", "xor", "--bogus"], ["--bogus"]),
    "unknown_activation": (
        ["train", "xor", "--activation", "swish"],
        ["'swish'", *ACTIVATIONS],
    ),
    "unknown_optimizer": (
        ["train", "xor", "--optimizer", "lbfgs"],
        ["'lbfgs'", *OPTIMIZERS],
    ),
    "unknown_loss": (["train", "xor", "--loss", "hinge"], ["'hinge'", *LOSSES]),
    "csv_cell_not_a_number": (["train", "{cell.csv}"], ["cell.csv", "line 4, column 2", "'oops'"]),
    "csv_nan": (["train", "{nan.csv}"], ["nan.csv", "line 3, column 1", "nan"]),
    "predict_wrong_feature_count": (["predict", "{model}", "{two.csv}"], ["64 features"]),
    "model_missing": (
        ["predict", "{dir}/missing.safetensors", "{two.csv}"],
        ["missing.safetensors", "No such file"],
    ),
    "model_truncated": (
        ["predict", "{truncated.safetensors}", "{two.csv}"],
        ["truncated.safetensors"],
    ),
    "model_corrupt": (["info", "{flipped.safetensors}"], ["flipped.safetensors", "checksum"]),
    "model_garbled": (["info", "{garbled.safetensors}"], ["garbled.safetensors", "JSON"]),
    "model_empty": (["info", "{empty.safetensors}"], ["empty.safetensors", "0 bytes"]),
    "resume_without_checkpoint": (["train", "xor", "--resume"], ["--resume", "--checkpoint"]),
    "resume_from_missing_directory": (
        ["train", "xor", "--checkpoint", "{dir}/none", "--resume"],
        ["none", "does not exist"],
    ),
    "negative_batch_size": (["train", "xor", "--batch-size", "-1"], ["batch", "-1"]),
    "negative_lr": (["train", "xor", "--lr", "-1"], ["learning rate", "-1"]),
    "hidden_not_sizes": (["train", "xor", "--hidden", "a,b"], ["--hidden", "'a,b'"]),
    "epochs_not_a_number": (["train", "xor", "--epochs", "abc"], ["--epochs", "'abc'"]),
}


@pytest.fixture(scope="module")
def bad_input_results(digits_run, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every row of BAD_INPUTS run once, a few processes side by side to keep the suite fast."""
    paths = _write_inputs(tmp_path_factory.mktemp("inputs"), digits_run[0])

    def run(row: str) -> subprocess.CompletedProcess:
        arguments = BAD_INPUTS[row][0]
        return cli(*(re.sub(r"\{([^}]+)\}", lambda m: str(paths[m[1]]), a) for a in arguments))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(BAD_INPUTS, pool.map(run, BAD_INPUTS)))


@pytest.mark.parametrize("row", BAD_INPUTS)
def test_bad_input_is_one_line_on_stderr_with_status_2(bad_input_results, row):
    result = bad_input_results[row]
    message = assert_one_line_error(result)
    for fragment in BAD_INPUTS[row][1]:
        assert fragment in message
    assert result.stdout == ""  # refused before any training
