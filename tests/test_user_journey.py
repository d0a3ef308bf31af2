"""What a new user does after the README, written as their commands and code: a model file is the
whole predictor, checks come before work, nothing is lost, defaults are visible, endings are
said out loud."""

import json
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.datasets import moons


def cli(*args, cwd=None, env_code=None):
    """`python -m chainrule ARGS` (or, with env_code, that code run first in the process)."""
    if env_code is None:
        command = [sys.executable, "-m", "chainrule", *map(str, args)]
    else:
        arguments = list(map(str, args))
        program = (
            f"{env_code}\nimport sys\nfrom chainrule.cli import main\nsys.exit(main({arguments!r}))"
        )
        command = [sys.executable, "-c", program]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def probabilities_from_explain(text: str) -> np.ndarray:
    """ŷ of the explain text's forward pass, as softmax probabilities."""
    line = next(line for line in text.splitlines() if "= ŷ" in line)
    logits = np.array(json.loads(line.split("= ŷ =")[1].strip()))
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


@pytest.fixture(scope="module")
def moons_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("moons") / "moons.safetensors"
    result = cli("train", "moons", "--epochs", "30", "--save", path, "--quiet")
    assert result.returncode == 0, result.stderr
    return path


def test_predict_and_explain_agree_on_a_model_saved_by_the_command_line(moons_model, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("0.5,0.2\n")
    predicted = cli("predict", moons_model, rows, "--proba")
    assert predicted.returncode == 0, predicted.stderr
    label, *p = predicted.stdout.split()
    explained = cli("explain", moons_model, "--input", "0.5,0.2", "--target", label)
    assert explained.returncode == 0, explained.stderr
    assert "Input standardised as the model was trained" in explained.stdout
    assert "loss cross_entropy" in explained.stdout  # the file's own loss, without --loss
    np.testing.assert_allclose(
        probabilities_from_explain(explained.stdout), np.float64(p), atol=2e-4
    )


def test_a_model_saved_from_python_predicts_like_one_saved_by_the_command_line(tmp_path):
    X, y = moons(200, rng=0)
    predictor = cr.Predictor(
        nn.Sequential(nn.Linear(2, 16, rng=0), nn.Tanh(), nn.Linear(16, 2, rng=1)),
        mean=X.mean(axis=0), std=X.std(axis=0), classes=["left", "right"], loss="cross_entropy",
    )  # fmt: skip
    cr.fit(predictor.model, predictor.transform(X), y, loss="cross_entropy", optimizer="adam",
           lr=0.05, epochs=30, batch_size=32)  # fmt: skip
    path = tmp_path / "model.safetensors"
    cr.save(predictor, path)
    rows = tmp_path / "rows.csv"
    rows.write_text("0.5,0.2\n-1,0.5\n")
    predicted = cli("predict", path, rows, "--proba")
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    expected = predictor.predict_proba(np.array([[0.5, 0.2], [-1, 0.5]]))
    for line, p, name in zip(lines, expected, predictor.predict(np.array([[0.5, 0.2], [-1, 0.5]]))):
        assert line.split()[0] == name
        np.testing.assert_allclose(np.float64(line.split()[1:]), p, atol=1e-4)
    loaded = cr.Predictor.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), predictor.predict_proba(X))
    explained = cli("explain", path, "--input", "0.5,0.2", "--target", "right")
    assert explained.returncode == 0, explained.stderr
    np.testing.assert_allclose(probabilities_from_explain(explained.stdout), expected[0], atol=2e-4)


def test_classes_given_as_plain_metadata_make_predict_a_classifier(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3, rng=0))
    path = tmp_path / "plain.safetensors"
    cr.save(model, path, metadata={"classes": ["a", "b", "c"]})
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2\n")
    result = cli("predict", path, rows, "--proba")
    assert result.returncode == 0, result.stderr
    name, *p = result.stdout.split()
    assert name in "abc" and abs(sum(map(float, p)) - 1) < 1e-3


def test_proba_of_a_regressor_is_a_clear_error(tmp_path):
    path = tmp_path / "regressor.safetensors"
    cr.save(nn.Sequential(nn.Linear(2, 1, rng=0)), path)
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2\n")
    result = cli("predict", path, rows, "--proba")
    assert result.returncode == 2 and "regressor" in result.stderr and result.stdout == ""


def test_a_missing_plotting_extra_is_refused_before_training():
    block = "import sys; sys.modules['matplotlib'] = None"
    result = cli("train", "digits", "--plot", "loss.png", env_code=block)
    assert result.returncode == 2
    assert 'pip install "chainrule[plot]"' in result.stderr
    assert "Epoch" not in result.stdout  # refused before the first epoch


def test_a_save_into_a_missing_directory_is_refused_before_training(tmp_path):
    result = cli("train", "digits", "--save", tmp_path / "no" / "such" / "m.safetensors")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Epoch" not in result.stdout


def test_an_existing_checkpoint_directory_needs_resume_or_overwrite(tmp_path):
    run = ("train", "xor", "--epochs", "20", "--checkpoint", tmp_path, "--quiet")
    assert cli(*run).returncode == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    again = cli(*run)
    assert again.returncode == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cli(*run, "--overwrite").returncode == 0


def test_without_scikit_learn_the_adapter_names_the_install_command():
    code = "import sys; sys.modules['sklearn'] = None\nimport chainrule.sklearn"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert 'pip install "chainrule[sklearn]"' in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ImportError")


def test_bare_chainrule_lists_the_commands_and_version_answers():
    bare = cli()
    assert bare.returncode == 2 and "train" in bare.stdout and "explain" in bare.stdout
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"chainrule {cr.__version__}"


def test_train_help_shows_the_defaults():
    text = cli("train", "--help").stdout
    assert "default: 32,32" in text and "default: adam" in text and "default: float32" in text


def test_a_csv_table_gets_a_validation_split_and_early_stopping(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=150) > 0).astype(int)
    table = tmp_path / "table.csv"
    table.write_text(
        "a,b,c,d,label\n" + "".join(f"{','.join(map(str, x))},{t}\n" for x, t in zip(X, y))
    )
    result = cli("train", table)
    assert result.returncode == 0, result.stderr
    assert "Val loss" in result.stdout and "Stopped early after epoch" in result.stdout


def test_written_files_are_named(tmp_path):
    path = tmp_path / "xor.safetensors"
    result = cli("train", "xor", "--epochs", "10", "--save", path)
    assert f"wrote model: {path}" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("train loss")  # the result line stays last


def test_a_diverging_run_stops_with_an_error_unless_asked_to_keep_going():
    stopped = cli("train", "digits", "--optimizer", "adam", "--lr", "1e6", "--epochs", "5")
    assert stopped.returncode == 2
    assert (
        "training is diverging: at epoch 0" in stopped.stderr and "--keep-going" in stopped.stderr
    )
    kept = cli(
        "train", "digits", "--optimizer", "adam", "--lr", "1e6", "--epochs", "2", "--keep-going"
    )
    assert kept.returncode == 0 and "warning: training is diverging" in kept.stderr


def test_features_that_are_all_constant_are_named(tmp_path):
    table = tmp_path / "flat.csv"
    table.write_text("a,b,label\n" + "".join(f"1e-40,2e-40,{i % 2}\n" for i in range(40)))
    result = cli("train", table, "--epochs", "2", "--quiet")
    assert "warning: every feature is constant in the training data" in result.stderr
