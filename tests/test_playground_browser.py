"""The playground page in a real headless Chromium: it trains, draws, explains, and looks right.

Needs Playwright (`pip install playwright`) and a system Chromium (Debian: `apt-get install
chromium-headless-shell`); never `playwright install`, which downloads a browser. Without them the
tests skip, except in CI (`CI` set), where they fail so that a missing install is noticed.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from chainrule.explain import explain
from chainrule.playground import make_server
from tests.test_playground import Stream, _model_of, post

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "playground.png"
VIEWPORT = {"width": 1400, "height": 780}
CONFIG = {
    "dataset": "moons",
    "n_samples": 200,
    "noise": 0.15,
    "hidden": [6, 4],
    "activation": "tanh",
    "optimizer": "adam",
    "lr": 0.03,
    "batch_size": 16,
    "seed": 0,
}

# A sample of the boundary canvas: RGB of every 10th pixel in both directions.
CANVAS_PIXELS = """() => {
  const canvas = document.getElementById('boundary');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const out = [];
  for (let y = 5; y < canvas.height; y += 10)
    for (let x = 5; x < canvas.width; x += 10) {
      const i = 4 * (y * canvas.width + x);
      out.push(...data.slice(i, i + 3));
    }
  return out;
}"""
# The midpoint of a weight's line on screen, and the weight whose line is on top there.
LINE_MIDPOINT = """(weight) => {
  const box = document.querySelector(`line.hit[data-weight='${weight}']`).getBoundingClientRect();
  const x = box.x + box.width / 2, y = box.y + box.height / 2;
  return [x, y, document.elementFromPoint(x, y).dataset.weight];
}"""


def _looks_the_same(picture: bytes, path: Path) -> bool:
    """Whether the saved picture differs from `picture` only by rasterisation noise (±1/255 at
    a few anti-aliased edges), so that running the tests does not churn the committed file."""
    from matplotlib.image import imread

    if not path.exists():
        return False
    new, old = imread(io.BytesIO(picture)), imread(path)
    return new.shape == old.shape and float(np.abs(new - old).max()) <= 2 / 255


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (see this file's docstring)", pytrace=False)
    pytest.skip(f"{reason} (not in CI, so skipped)")


@pytest.fixture(scope="module")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install playwright")
    executable = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if executable is None:
        _unavailable("no system Chromium: apt-get install chromium-headless-shell")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def session(chromium):
    """One visit: load, train until the loss falls, pause, hover a weight. Records what was seen."""
    server = make_server(pace=0).start()
    context = chromium.new_context(viewport=VIEWPORT, bypass_csp=True)  # CSP bars wait_for_function
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    seen: dict = {"server": server, "page": page, "errors": errors}
    try:
        post(server, "/api/reset", CONFIG)
        page.goto(server.url)
        page.wait_for_function("() => window.playground.last && window.playground.last.epoch === 0")
        seen["loss_before"] = float(page.text_content("#stat-loss"))
        seen["pixels_before"] = page.evaluate(CANVAS_PIXELS)

        page.click("#start")
        page.wait_for_function("() => window.playground.last.epoch >= 100")
        page.click("#pause")
        page.wait_for_function("() => !window.playground.last.running")
        page.wait_for_selector("#status:has-text('paused')")
        seen["pixels_after"] = page.evaluate(CANVAS_PIXELS)
        stream = Stream(server)
        seen["stream"] = stream.next()  # paused: the stream's frame is the state the page shows
        stream.close()
        seen["shown"] = {
            key: page.text_content(f"#stat-{key}") for key in ("epoch", "loss", "val-loss")
        }
        seen["page_frame"] = page.evaluate("() => window.playground.last")

        x, y, weight = page.evaluate(LINE_MIDPOINT, "2.weight[1,3]")
        page.mouse.move(x, y)
        page.wait_for_function(
            "(weight) => window.playground.inspect && window.playground.inspect.weight === weight",
            arg=weight,
        )
        seen["hovered"] = weight
        seen["inspect"] = {
            key: page.text_content(f"#inspect-{key}")
            for key in ("title", "value", "grad", "sample-grad", "check")
        }
        yield seen
    finally:
        context.close()
        server.stop()


def test_the_loss_shown_falls_while_training(session):
    assert float(session["shown"]["loss"]) < 0.5 * session["loss_before"]


def test_the_loss_shown_equals_the_streams(session):
    frame = session["stream"]
    assert session["page_frame"]["loss"] == frame["loss"]
    assert session["shown"]["epoch"] == str(frame["epoch"])
    assert session["shown"]["loss"] == f"{frame['loss']:.4f}"
    assert session["shown"]["val-loss"] == f"{frame['val_loss']:.4f}"


def test_the_decision_boundary_changed_while_training(session):
    before = np.array(session["pixels_before"]).reshape(-1, 3)
    after = np.array(session["pixels_after"]).reshape(-1, 3)
    changed = np.any(np.abs(before - after) > 10, axis=1).mean()
    assert changed > 0.05, f"only {changed:.1%} of the sampled pixels changed"


def test_a_hovered_weights_gradient_shown_equals_explains(session):
    frame, shown, weight = session["stream"], session["inspect"], session["hovered"]
    data = frame["data"]
    model = _model_of(frame["parameters"], data["layers"])
    X, y = np.array(data["X"]), np.array(data["y"])
    inputs = (X - np.array(data["mean"])) / np.array(data["std"])
    train = np.setdiff1d(np.arange(len(X)), data["val"])
    whole = explain(model, inputs[train], y[train], loss="cross_entropy", weight=weight).chains[0]
    sample = session["page_frame"]["inspect"]["sample"]
    one = explain(
        model, inputs[sample], y[sample : sample + 1], loss="cross_entropy", weight=weight
    )
    assert shown["title"].startswith(weight)
    assert float(shown["grad"]) == pytest.approx(whole.value, rel=1e-5)
    assert float(shown["sample-grad"]) == pytest.approx(one.chains[0].value, rel=1e-5)
    assert float(shown["value"]) == pytest.approx(
        model.state_dict()[whole.parameter][whole.index], rel=1e-5
    )
    assert shown["check"].endswith("agrees ✓")


def test_the_page_reports_no_script_errors(session):
    assert session["errors"] == []


def test_a_screenshot_of_a_trained_network_is_saved_for_the_docs(session):
    # A fixed number of epochs from a fixed seed, so the picture is the same on every run.
    server, page = session["server"], session["page"]
    page.mouse.move(5, 5)  # hovering nothing, so the selection below stays
    post(server, "/api/reset", {**CONFIG, "lr": 0.005})
    post(server, "/api/select", {"weight": "2.weight[1,3]", "sample": 10})
    post(server, "/api/step", {"epochs": 150})
    page.wait_for_function(
        "() => window.playground.last.epoch === 150"
        " && window.playground.inspect.weight === '2.weight[1,3]'"
    )
    picture = page.screenshot()
    if not _looks_the_same(picture, SCREENSHOT):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(picture)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(SCREENSHOT.read_bytes()[16:20], "big") == VIEWPORT["width"]
